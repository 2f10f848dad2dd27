"""Topic permissions and user/vhost limits in the store's metadata log: kept, restored, compacted."""

from __future__ import annotations

from pathlib import Path

from store_helpers import recovered

from amqplite.broker.auth import TopicPermission
from amqplite.broker.broker import Broker
from amqplite.config.definitions import PUBLISH_RATE
from amqplite.store.metadata import MetadataLog
from amqplite.store.records import RecordType
from amqplite.store.store import Store

TOPIC = TopicPermission("amq.topic", "^carol\\.", ".*")


def boot(directory: Path) -> tuple[Broker, Store]:
    """A broker over the store in `directory`, with the users and vhosts the store recorded."""
    return recovered(directory, fsync=False)


def restart(broker: Broker, store: Store, directory: Path) -> tuple[Broker, Store]:
    store.commit()
    store.close()
    return boot(directory)


def test_topic_permissions_and_limits_survive_a_restart(tmp_path: Path) -> None:
    broker, store = boot(tmp_path)
    broker.add_user("carol", "pw")
    broker.set_topic_permission("carol", "/", TOPIC)
    broker.set_limit("user", "carol", "max-connections", 3)
    broker.set_limit("user", "carol", PUBLISH_RATE, 1000)
    broker.set_limit("vhost", "/", "max-queues", 10)
    broker, store = restart(broker, store, tmp_path)
    assert broker.topic_permission_of("carol", "/", "amq.topic") == TOPIC
    assert broker.user_limits == {"carol": {"max-connections": 3, PUBLISH_RATE: 1000}}
    assert broker.vhost_limits == {"/": {"max-queues": 10}}
    broker.clear_topic_permission("carol", "/", "amq.topic")
    broker.clear_limit("user", "carol", "max-connections")
    broker.clear_limit("vhost", "/", "max-queues")
    broker, store = restart(broker, store, tmp_path)
    assert broker.topic_permissions == {}
    assert broker.user_limits == {"carol": {PUBLISH_RATE: 1000}}
    assert broker.vhost_limits == {}
    store.close()


def test_deleting_the_user_forgets_its_topic_permissions_and_limits(tmp_path: Path) -> None:
    broker, store = boot(tmp_path)
    broker.add_user("carol", "pw")
    broker.set_topic_permission("carol", "/", TOPIC)
    broker.set_limit("user", "carol", "max-channels", 2)
    broker.delete_user("carol")
    broker.add_user("carol", "pw")  # a new user of the same name starts without them
    broker, store = restart(broker, store, tmp_path)
    assert "carol" in broker.users
    assert broker.topic_permissions == {}
    assert broker.user_limits == {}
    store.close()


def test_compaction_keeps_the_last_state_only(tmp_path: Path) -> None:
    path = tmp_path / "metadata.log"
    log = MetadataLog.open(path)
    rule = {"amq.topic": {"write": "^a", "read": ".*"}}
    log.append(RecordType.TOPIC_PERMISSIONS, "carol", "/", rule)
    log.append(RecordType.TOPIC_PERMISSIONS, "dave", "/", rule)
    log.append(RecordType.TOPIC_PERMISSIONS, "dave", "/", {})  # cleared
    log.append(RecordType.LIMITS, "user", "carol", {"max-channels": 1})
    log.append(RecordType.LIMITS, "user", "carol", {"max-channels": 2})
    log.compact()
    log.close()
    again = MetadataLog.open(path)
    assert again.topic_permissions == {("carol", "/"): rule}
    assert again.limits == {("user", "carol"): {"max-channels": 2}}
    assert again.record_count == 2
    again.close()
