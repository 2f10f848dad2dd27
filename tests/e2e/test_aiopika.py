"""aio-pika end to end: robust connections, routing, acks, QoS, confirms, returns, tx and RPC."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import aio_pika
import aio_pika.abc
import aio_pika.exceptions
import aiormq.exceptions
import pytest
from pamqp.commands import Basic

TIMEOUT = 15.0


@pytest.fixture
def uid(uid: str) -> str:
    """The shared unique name, made safe for exchange names (no brackets from parametrize)."""
    return re.sub(r"[^A-Za-z0-9_.:-]", "-", uid)


def run(main: Callable[[], Awaitable[None]]) -> None:
    """Run one async test body with a bound on its total runtime."""

    async def bounded() -> None:
        await asyncio.wait_for(main(), TIMEOUT)

    asyncio.run(bounded())


@asynccontextmanager
async def connect(
    url: str, *, robust: bool = True
) -> AsyncIterator[aio_pika.abc.AbstractConnection]:
    """A (by default robust) connection that is closed on the way out."""
    connection = await (aio_pika.connect_robust(url) if robust else aio_pika.connect(url))
    try:
        yield connection
    finally:
        await connection.close()


@asynccontextmanager
async def exclusive_queue(
    url: str, name: str
) -> AsyncIterator[
    tuple[aio_pika.abc.AbstractConnection, aio_pika.abc.AbstractChannel, aio_pika.abc.AbstractQueue]
]:
    """A robust connection, a channel on it and an exclusive queue `name` declared there."""
    async with connect(url) as connection:
        channel = await connection.channel()
        yield connection, channel, await channel.declare_queue(name, exclusive=True)


async def get_within(
    queue: aio_pika.abc.AbstractQueue, *, no_ack: bool = False, within: float = 3.0
) -> aio_pika.abc.AbstractIncomingMessage:
    """Poll basic.get until a message arrives or `within` seconds pass."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        message = await queue.get(no_ack=no_ack, fail=False)
        if message is not None:
            return message
        if loop.time() > deadline:
            raise AssertionError(f"no message on {queue.name} within {within}s")
        await asyncio.sleep(0.02)


async def start_consumer(
    queue: aio_pika.abc.AbstractQueue, *, no_ack: bool = False
) -> asyncio.Queue[aio_pika.abc.AbstractIncomingMessage]:
    """Consume from queue into an asyncio.Queue the test can await."""
    inbox: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage] = asyncio.Queue()

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        await inbox.put(message)

    await queue.consume(on_message, no_ack=no_ack)
    return inbox


async def next_message(
    inbox: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage], within: float = 3.0
) -> aio_pika.abc.AbstractIncomingMessage:
    """The next delivered message, or fail after `within` seconds."""
    return await asyncio.wait_for(inbox.get(), within)


async def ready_count(channel: aio_pika.abc.AbstractChannel, name: str) -> int:
    """Ready-message count of a queue, from a passive declare on the wire."""
    # The robust channel answers passive declares of known queues from its cache.
    underlay = await channel.get_underlay_channel()
    declare_ok = await underlay.queue_declare(name, passive=True)
    assert declare_ok.message_count is not None
    return int(declare_ok.message_count)


def test_connect_robust_opens_a_usable_channel(broker, uid):
    async def main() -> None:
        async with connect(broker.url) as connection:
            assert not connection.is_closed
            channel = await connection.channel()
            queue = await channel.declare_queue(uid, exclusive=True)
            assert queue.name == uid
            assert queue.declaration_result.message_count == 0
            assert queue.declaration_result.consumer_count == 0
        assert connection.is_closed

    run(main)


EXCHANGE_ROUTES = {
    # type: (bind routing key, bind arguments, publish routing key, publish headers)
    aio_pika.ExchangeType.DIRECT: ("key.a", None, "key.a", None),
    aio_pika.ExchangeType.FANOUT: ("ignored", None, "anything", None),
    aio_pika.ExchangeType.TOPIC: ("stock.*.nyse", None, "stock.ibm.nyse", None),
    aio_pika.ExchangeType.HEADERS: (
        "",
        {"x-match": "all", "format": "pdf", "type": "report"},
        "",
        {"format": "pdf", "type": "report", "extra": 1},
    ),
}


@pytest.mark.parametrize("exchange_type", list(EXCHANGE_ROUTES), ids=lambda t: t.value)
def test_declared_exchange_of_each_type_routes_matching_message_to_bound_queue(
    broker, uid, exchange_type
):
    bind_key, bind_args, publish_key, headers = EXCHANGE_ROUTES[exchange_type]

    async def main() -> None:
        async with connect(broker.url) as connection:
            channel = await connection.channel()
            exchange = await channel.declare_exchange(uid, exchange_type, auto_delete=True)
            queue = await channel.declare_queue(uid, exclusive=True)
            await queue.bind(exchange, bind_key, arguments=bind_args)
            await exchange.publish(aio_pika.Message(b"routed", headers=headers), publish_key)
            message = await get_within(queue, no_ack=True)
            assert message.body == b"routed"
            assert message.exchange == uid
            assert message.routing_key == publish_key

    run(main)


@pytest.mark.parametrize(
    ("exchange_type", "publish_key", "headers"),
    [
        (aio_pika.ExchangeType.DIRECT, "key.b", None),
        (aio_pika.ExchangeType.TOPIC, "stock.ibm.lse", None),
        (aio_pika.ExchangeType.HEADERS, "", {"format": "pdf", "type": "invoice"}),
    ],
    ids=["direct", "topic", "headers"],
)
def test_declared_exchange_does_not_route_non_matching_message(
    broker, uid, exchange_type, publish_key, headers
):
    bind_key, bind_args, _, _ = EXCHANGE_ROUTES[exchange_type]

    async def main() -> None:
        async with connect(broker.url) as connection:
            channel = await connection.channel()
            exchange = await channel.declare_exchange(uid, exchange_type, auto_delete=True)
            queue = await channel.declare_queue(uid, exclusive=True)
            await queue.bind(exchange, bind_key, arguments=bind_args)
            message = aio_pika.Message(b"stray", headers=headers)
            await exchange.publish(message, publish_key, mandatory=False)
            # A confirmed publish has been routed (or dropped) before the ack arrives.
            assert await ready_count(channel, uid) == 0

    run(main)


def test_consumer_manual_ack_removes_message_from_queue(broker, uid):
    async def main() -> None:
        async with exclusive_queue(broker.url, uid) as (connection, channel, queue):
            inbox = await start_consumer(queue)
            await channel.default_exchange.publish(aio_pika.Message(b"job"), uid)
            message = await next_message(inbox)
            assert message.body == b"job"
            assert message.redelivered is False
            await message.ack()
            await channel.close()

            channel = await connection.channel()
            queue = await channel.declare_queue(uid, passive=True)
            assert await queue.get(fail=False) is None

    run(main)


def test_unacked_message_returns_redelivered_when_consumer_channel_closes(broker, uid):
    async def main() -> None:
        async with connect(broker.url) as connection:
            consumer_channel = await connection.channel()
            queue = await consumer_channel.declare_queue(uid, exclusive=True)
            inbox = await start_consumer(queue)
            await consumer_channel.default_exchange.publish(aio_pika.Message(b"job"), uid)
            first = await next_message(inbox)
            assert first.redelivered is False
            await consumer_channel.close()

            channel = await connection.channel()
            queue = await channel.declare_queue(uid, passive=True)
            again = await get_within(queue, no_ack=True)
            assert again.body == b"job"
            assert again.redelivered is True

    run(main)


def test_message_process_context_acks_on_success(broker, uid):
    async def main() -> None:
        async with exclusive_queue(broker.url, uid) as (connection, channel, queue):
            await channel.default_exchange.publish(aio_pika.Message(b"work"), uid)
            message = await get_within(queue)
            async with message.process():
                assert message.body == b"work"
            assert message.processed
            await channel.close()

            channel = await connection.channel()
            assert await ready_count(channel, uid) == 0

    run(main)


def test_message_process_context_with_requeue_redelivers_on_exception(broker, uid):
    async def main() -> None:
        async with exclusive_queue(broker.url, uid) as (_connection, channel, queue):
            await channel.default_exchange.publish(aio_pika.Message(b"flaky"), uid)
            message = await get_within(queue)
            with pytest.raises(RuntimeError):
                async with message.process(requeue=True):
                    raise RuntimeError("handler failed")
            again = await get_within(queue, no_ack=True)
            assert again.body == b"flaky"
            assert again.redelivered is True

    run(main)


def test_message_process_context_without_requeue_drops_on_exception(broker, uid):
    async def main() -> None:
        async with exclusive_queue(broker.url, uid) as (_connection, channel, queue):
            await channel.default_exchange.publish(aio_pika.Message(b"poison"), uid)
            message = await get_within(queue)
            with pytest.raises(RuntimeError):
                async with message.process():
                    raise RuntimeError("handler failed")
            assert await ready_count(channel, uid) == 0
            assert await queue.get(fail=False) is None

    run(main)


def test_nack_with_requeue_redelivers_with_redelivered_true(broker, uid):
    async def main() -> None:
        async with exclusive_queue(broker.url, uid) as (_connection, channel, queue):
            inbox = await start_consumer(queue)
            await channel.default_exchange.publish(aio_pika.Message(b"retry me"), uid)
            first = await next_message(inbox)
            assert first.redelivered is False
            await first.nack(requeue=True)
            second = await next_message(inbox)
            assert second.body == b"retry me"
            assert second.redelivered is True
            assert second.delivery_tag != first.delivery_tag
            await second.ack()

    run(main)


def test_reject_without_requeue_drops_message(broker, uid):
    async def main() -> None:
        async with exclusive_queue(broker.url, uid) as (connection, channel, queue):
            await channel.default_exchange.publish(aio_pika.Message(b"bad"), uid)
            message = await get_within(queue)
            await message.reject(requeue=False)
            await channel.close()

            channel = await connection.channel()
            assert await ready_count(channel, uid) == 0

    run(main)


def test_qos_prefetch_limits_unacked_messages_in_flight(broker, uid):
    async def main() -> None:
        async with connect(broker.url) as connection:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=2)
            queue = await channel.declare_queue(uid, exclusive=True)
            for i in range(5):
                await channel.default_exchange.publish(aio_pika.Message(b"%d" % i), uid)
            inbox = await start_consumer(queue)
            first = await next_message(inbox)
            second = await next_message(inbox)
            assert [first.body, second.body] == [b"0", b"1"]
            # Three stay ready in the queue while two are unacked.
            assert await ready_count(channel, uid) == 3
            assert inbox.empty()

            await first.ack()
            third = await next_message(inbox)
            assert third.body == b"2"
            assert await ready_count(channel, uid) == 2
            assert inbox.empty()

    run(main)


def test_publisher_confirm_publish_returns_basic_ack(broker, uid):
    async def main() -> None:
        async with exclusive_queue(broker.url, uid) as (_connection, channel, queue):
            results = [
                await channel.default_exchange.publish(aio_pika.Message(b"%d" % i), queue.name)
                for i in range(3)
            ]
            assert all(isinstance(result, Basic.Ack) for result in results)
            tags = [result.delivery_tag for result in results]
            assert tags == [1, 2, 3]
            assert await ready_count(channel, uid) == 3

    run(main)


def test_mandatory_unroutable_publish_raises_publish_error_when_on_return_raises(broker, uid):
    async def main() -> None:
        async with connect(broker.url) as connection:
            channel = await connection.channel(on_return_raises=True)
            with pytest.raises(aio_pika.exceptions.DeliveryError) as info:
                await channel.default_exchange.publish(
                    aio_pika.Message(b"lost"), f"{uid}-nobody", mandatory=True
                )
            assert isinstance(info.value, aio_pika.exceptions.PublishError)
            frame = info.value.frame
            assert isinstance(frame, Basic.Return)
            assert frame.reply_code == 312
            assert "NO_ROUTE" in frame.reply_text
            assert frame.routing_key == f"{uid}-nobody"
            assert info.value.message.body == b"lost"
            # The channel stays open after a return.
            queue = await channel.declare_queue(uid, exclusive=True)
            assert queue.name == uid

    run(main)


def test_mandatory_unroutable_publish_calls_return_callback(broker, uid):
    async def main() -> None:
        async with connect(broker.url) as connection:
            channel = await connection.channel()
            returned: list[aio_pika.abc.AbstractIncomingMessage] = []
            channel.return_callbacks.add(lambda _ch, message: returned.append(message))
            await channel.default_exchange.publish(
                aio_pika.Message(b"bounced", correlation_id="c-1"), f"{uid}-nobody", mandatory=True
            )
            assert len(returned) == 1
            assert returned[0].body == b"bounced"
            assert returned[0].correlation_id == "c-1"
            assert returned[0].routing_key == f"{uid}-nobody"

    run(main)


def test_queue_get_returns_message_then_none_with_fail_false_when_empty(broker, uid):
    async def main() -> None:
        async with exclusive_queue(broker.url, uid) as (_connection, channel, queue):
            await channel.default_exchange.publish(
                aio_pika.Message(b"once", content_type="text/plain", priority=3), uid
            )
            message = await get_within(queue)
            assert message.body == b"once"
            assert message.content_type == "text/plain"
            assert message.priority == 3
            assert message.message_count == 0
            await message.ack()
            assert await queue.get(fail=False) is None

    run(main)


def test_queue_get_on_empty_queue_raises_queue_empty(broker, uid):
    async def main() -> None:
        async with exclusive_queue(broker.url, uid) as (_connection, _channel, queue):
            with pytest.raises(aio_pika.exceptions.QueueEmpty):
                await queue.get()

    run(main)


def test_queue_purge_returns_number_of_messages_removed(broker, uid):
    async def main() -> None:
        async with exclusive_queue(broker.url, uid) as (_connection, channel, queue):
            for _ in range(4):
                await channel.default_exchange.publish(aio_pika.Message(b"x"), uid)
            result = await queue.purge()
            assert result.message_count == 4
            assert await ready_count(channel, uid) == 0

    run(main)


def test_queue_delete_returns_message_count_and_removes_queue(broker, uid):
    async def main() -> None:
        async with connect(broker.url) as connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(uid, auto_delete=False)
            for _ in range(3):
                await channel.default_exchange.publish(aio_pika.Message(b"x"), uid)
            result = await queue.delete(if_unused=False, if_empty=False)
            assert result.message_count == 3
            with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
                await channel.declare_queue(uid, passive=True)

    run(main)


def test_exchange_to_exchange_binding_routes_through_both_exchanges(broker, uid):
    async def main() -> None:
        async with connect(broker.url) as connection:
            channel = await connection.channel()
            source = await channel.declare_exchange(f"{uid}-src", aio_pika.ExchangeType.TOPIC)
            destination = await channel.declare_exchange(
                f"{uid}-dst", aio_pika.ExchangeType.DIRECT, auto_delete=True
            )
            await destination.bind(source, "orders.#")
            queue = await channel.declare_queue(uid, exclusive=True)
            await queue.bind(destination, "orders.eu.new")

            await source.publish(aio_pika.Message(b"via e2e"), "orders.eu.new")
            await source.publish(aio_pika.Message(b"stopped"), "billing.eu.new", mandatory=False)
            message = await get_within(queue, no_ack=True)
            assert message.body == b"via e2e"
            assert message.exchange == f"{uid}-src"
            assert await ready_count(channel, uid) == 0

            await destination.unbind(source, "orders.#")
            await source.publish(aio_pika.Message(b"after"), "orders.eu.new", mandatory=False)
            assert await ready_count(channel, uid) == 0
            await source.delete()

    run(main)


def test_missing_queue_gives_404_channel_error_and_connection_survives(broker, uid):
    async def main() -> None:
        async with connect(broker.url) as connection:
            channel = await connection.channel()
            with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity) as info:
                await channel.declare_queue(f"{uid}-missing", passive=True)
            assert isinstance(info.value, aio_pika.exceptions.ChannelClosed)
            text = str(info.value.args[0])
            assert "NOT_FOUND" in text
            assert "no queue" in text
            assert f"{uid}-missing" in text

            assert not connection.is_closed
            other = await connection.channel()
            queue = await other.declare_queue(uid, exclusive=True)
            await other.default_exchange.publish(aio_pika.Message(b"alive"), uid)
            message = await get_within(queue, no_ack=True)
            assert message.body == b"alive"

    run(main)


def test_transaction_commit_delivers_published_messages(broker, uid):
    async def main() -> None:
        async with connect(broker.url) as connection:
            channel = await connection.channel(publisher_confirms=False)
            queue = await channel.declare_queue(uid, exclusive=True)
            async with channel.transaction():
                await channel.default_exchange.publish(aio_pika.Message(b"a"), uid)
                await channel.default_exchange.publish(aio_pika.Message(b"b"), uid)
            first = await get_within(queue, no_ack=True)
            second = await get_within(queue, no_ack=True)
            assert [first.body, second.body] == [b"a", b"b"]

    run(main)


def test_transaction_rollback_discards_published_messages(broker, uid):
    async def main() -> None:
        async with connect(broker.url) as connection:
            channel = await connection.channel(publisher_confirms=False)
            queue = await channel.declare_queue(uid, exclusive=True)
            tx = channel.transaction()
            await tx.select()
            await channel.default_exchange.publish(aio_pika.Message(b"never"), uid)
            assert await ready_count(channel, uid) == 0
            await tx.rollback()
            assert await ready_count(channel, uid) == 0
            await channel.default_exchange.publish(aio_pika.Message(b"kept"), uid)
            await tx.commit()
            message = await get_within(queue, no_ack=True)
            assert message.body == b"kept"
            assert await queue.get(fail=False) is None

    run(main)


def test_transaction_ack_is_applied_only_on_commit(broker, uid):
    async def main() -> None:
        async with connect(broker.url) as connection:
            channel = await connection.channel(publisher_confirms=False)
            queue = await channel.declare_queue(uid, exclusive=True)
            await channel.default_exchange.publish(aio_pika.Message(b"held"), uid)
            tx = channel.transaction()
            await tx.select()
            message = await get_within(queue)
            await message.ack()
            await tx.rollback()
            # A rolled-back ack leaves the message unacked; closing the channel requeues it.
            await channel.close()
            channel = await connection.channel()
            queue = await channel.declare_queue(uid, passive=True)
            again = await get_within(queue, no_ack=True)
            assert again.body == b"held"
            assert again.redelivered is True

    run(main)


async def rpc_server(channel: aio_pika.abc.AbstractChannel, queue_name: str) -> None:
    """Answer each request (an integer) with its square on the request's reply_to queue."""
    queue = await channel.declare_queue(queue_name, exclusive=True)

    async def on_request(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with message.process():
            assert message.reply_to is not None
            answer = str(int(message.body) ** 2).encode()
            await channel.default_exchange.publish(
                aio_pika.Message(answer, correlation_id=message.correlation_id),
                routing_key=message.reply_to,
            )

    await queue.consume(on_request)


def test_rpc_round_trip_with_reply_to_and_correlation_id(broker, uid):
    async def main() -> None:
        # Not robust: a robust channel names "" queues itself; here the server must name it.
        async with connect(broker.url, robust=False) as connection:
            server_channel = await connection.channel()
            await rpc_server(server_channel, uid)

            channel = await connection.channel()
            callback_queue = await channel.declare_queue("", exclusive=True)
            assert callback_queue.name.startswith("amq.gen-")
            pending: dict[str, asyncio.Future[bytes]] = {}

            async def on_response(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                assert message.correlation_id is not None
                pending.pop(message.correlation_id).set_result(message.body)

            await callback_queue.consume(on_response, no_ack=True)
            loop = asyncio.get_running_loop()
            requests = {}
            for n in range(1, 6):
                correlation_id = str(uuid.uuid4())
                pending[correlation_id] = requests[n] = loop.create_future()
                await channel.default_exchange.publish(
                    aio_pika.Message(
                        str(n).encode(),
                        correlation_id=correlation_id,
                        reply_to=callback_queue.name,
                    ),
                    routing_key=uid,
                )
            answers = {n: int(await asyncio.wait_for(fut, 5)) for n, fut in requests.items()}
            assert answers == {n: n * n for n in range(1, 6)}
            assert pending == {}

    run(main)


def test_server_named_exclusive_queue_is_refused_to_another_connection(broker):
    async def main() -> None:
        async with (
            connect(broker.url, robust=False) as owner,
            connect(broker.url, robust=False) as other,
        ):
            channel = await owner.channel()
            queue = await channel.declare_queue("", exclusive=True)
            assert queue.name.startswith("amq.gen-")
            other_channel = await other.channel()
            with pytest.raises(aiormq.exceptions.ChannelLockedResource) as info:
                await other_channel.declare_queue(queue.name, passive=True)
            assert "RESOURCE_LOCKED" in str(info.value.args[0])
            assert queue.name in str(info.value.args[0])

    run(main)
