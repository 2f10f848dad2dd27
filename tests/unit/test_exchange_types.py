"""Direct, fanout and headers routing, the registry, and the example consistent-hash plugin."""

from __future__ import annotations

import ast
import datetime
import decimal
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from amqplite.broker.exchange_types import (
    DirectExchangeType,
    DirectRouter,
    FanoutExchangeType,
    FanoutRouter,
    HeadersExchangeType,
    HeadersRouter,
    builtin_registry,
    header_values_equal,
)
from amqplite.broker.plugin_api import (
    COMMON_EQUIVALENT_ARGUMENTS,
    Arguments,
    ChannelException,
    Destination,
    assert_args_equivalence,
)
from amqplite.broker.vhost import VHost
from amqplite.protocol.constants import ReplyCode

Q1, Q2, Q3 = Destination.queue("q1"), Destination.queue("q2"), Destination.queue("q3")
X1 = Destination.exchange("x1")
PLUGIN_PATH = Path(__file__).resolve().parents[2] / "amqplite_plugins" / "consistent_hash.py"


def routed(router: Any, routing_key: str = "", headers: dict[str, Any] | None = None) -> set[Any]:
    """Return the deduplicated destinations a router sends a message to."""
    return set(router.route(routing_key, headers))


def load_plugin() -> ModuleType:
    """Import amqplite_plugins/consistent_hash.py by path, as a plugin loader would."""
    spec = importlib.util.spec_from_file_location("consistent_hash_under_test", PLUGIN_PATH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- direct ---------------------------------------------------------------------------------


def test_direct_routes_only_on_the_exact_routing_key() -> None:
    router = DirectRouter()
    router.bind(Q1, "a", {})
    router.bind(Q2, "a.b", {})
    router.bind(X1, "a", {})
    assert routed(router, "a") == {Q1, X1}
    assert routed(router, "a.b") == {Q2}
    assert routed(router, "A") == set()
    assert routed(router, "a.*") == set()
    assert routed(router, "") == set()


def test_direct_empty_routing_key_matches_only_the_empty_binding_key() -> None:
    router = DirectRouter()
    router.bind(Q1, "", {})
    assert routed(router, "") == {Q1}
    assert routed(router, "x") == set()


def test_direct_unbinding_one_key_of_a_destination_keeps_its_other_keys() -> None:
    router = DirectRouter()
    router.bind(Q1, "a", {})
    router.bind(Q1, "b", {})
    router.unbind(Q1, "a", {})
    router._check()
    assert routed(router, "a") == set()
    assert routed(router, "b") == {Q1}


def test_direct_same_key_bound_with_two_argument_sets_needs_two_unbinds() -> None:
    router = DirectRouter()
    router.bind(Q1, "a", {"v": 1})
    router.bind(Q1, "a", {"v": 2})
    assert list(router.route("a", None)) == [Q1]
    router.unbind(Q1, "a", {"v": 1})
    assert routed(router, "a") == {Q1}
    router.unbind(Q1, "a", {"v": 2})
    router._check()
    assert routed(router, "a") == set()
    assert router.binding_count() == 0


def test_direct_unbinding_an_absent_binding_changes_nothing() -> None:
    router = DirectRouter()
    router.bind(Q1, "a", {})
    router.unbind(Q2, "a", {})
    router.unbind(Q1, "zzz", {})
    router._check()
    assert routed(router, "a") == {Q1}


# --- fanout ---------------------------------------------------------------------------------


def test_fanout_routes_to_every_destination_whatever_the_key() -> None:
    router = FanoutRouter()
    router.bind(Q1, "", {})
    router.bind(Q2, "ignored", {})
    router.bind(X1, "#", {})
    assert routed(router, "anything") == {Q1, Q2, X1}
    assert routed(router, "", {"h": 1}) == {Q1, Q2, X1}


def test_fanout_destination_bound_with_two_keys_stays_until_both_are_unbound() -> None:
    router = FanoutRouter()
    router.bind(Q1, "a", {})
    router.bind(Q1, "b", {})
    router.bind(Q2, "", {})
    assert sorted(router.route("x", None)) == [Q1, Q2]
    router.unbind(Q1, "a", {})
    assert routed(router, "x") == {Q1, Q2}
    router.unbind(Q1, "b", {})
    router._check()
    assert routed(router, "x") == {Q2}


def test_fanout_with_no_bindings_routes_nowhere() -> None:
    assert routed(FanoutRouter(), "x") == set()


# --- headers matching -----------------------------------------------------------------------


def headers_router(*bindings: tuple[Destination, dict[str, Any]]) -> HeadersRouter:
    """Return a headers router with the given (destination, arguments) bindings."""
    router = HeadersRouter()
    for destination, arguments in bindings:
        HeadersExchangeType().validate_binding("", arguments)
        router.bind(destination, "", arguments)
    return router


def test_headers_all_needs_every_binding_header_with_its_value() -> None:
    router = headers_router((Q1, {"x-match": "all", "a": "1", "b": "2"}))
    assert routed(router, headers={"a": "1", "b": "2"}) == {Q1}
    assert routed(router, headers={"a": "1", "b": "2", "c": "3"}) == {Q1}
    assert routed(router, headers={"a": "1", "b": "3"}) == set()
    assert routed(router, headers={"a": "1"}) == set()


def test_headers_x_match_defaults_to_all() -> None:
    router = headers_router((Q1, {"a": "1", "b": "2"}))
    assert routed(router, headers={"a": "1", "b": "2"}) == {Q1}
    assert routed(router, headers={"a": "1"}) == set()


def test_headers_any_needs_one_binding_header_with_its_value() -> None:
    router = headers_router((Q1, {"x-match": "any", "a": "1", "b": "2"}))
    assert routed(router, headers={"a": "1"}) == {Q1}
    assert routed(router, headers={"a": "1", "b": "3"}) == {Q1}
    assert routed(router, headers={"a": "2", "b": "3"}) == set()
    assert routed(router, headers={"c": "1"}) == set()


def test_headers_all_without_arguments_matches_every_message_even_without_headers() -> None:
    router = headers_router((Q1, {}), (Q2, {"x-match": "all"}))
    assert routed(router, headers=None) == {Q1, Q2}
    assert routed(router, headers={}) == {Q1, Q2}
    assert routed(router, headers={"k": 1}) == {Q1, Q2}


def test_headers_any_without_arguments_matches_nothing() -> None:
    router = headers_router((Q1, {"x-match": "any"}))
    assert routed(router, headers={"k": 1}) == set()
    assert routed(router, headers=None) == set()


def test_headers_message_without_headers_fails_all_and_any_with_arguments() -> None:
    router = headers_router((Q1, {"a": "1"}), (Q2, {"x-match": "any", "a": "1"}))
    assert routed(router, headers=None) == set()
    assert routed(router, headers={}) == set()


def test_headers_x_keys_in_binding_are_ignored_by_all_and_any() -> None:
    router = headers_router(
        (Q1, {"x-foo": "bar"}),
        (Q2, {"x-match": "any", "x-foo": "bar"}),
        (Q3, {"x-match": "any", "x-foo": "bar", "k": "v"}),
    )
    assert routed(router, headers={}) == {Q1}
    assert routed(router, headers={"x-foo": "bar"}) == {Q1}
    assert routed(router, headers={"k": "v"}) == {Q1, Q3}


def test_headers_with_x_variants_compare_x_keys_too() -> None:
    router = headers_router(
        (Q1, {"x-match": "all-with-x", "x-foo": "bar", "k": "v"}),
        (Q2, {"x-match": "any-with-x", "x-foo": "bar", "k": "v"}),
    )
    assert routed(router, headers={"x-foo": "bar", "k": "v"}) == {Q1, Q2}
    assert routed(router, headers={"x-foo": "bar"}) == {Q2}
    assert routed(router, headers={"k": "v"}) == {Q2}
    assert routed(router, headers={"x-foo": "baz", "k": "w"}) == set()


def test_headers_x_match_itself_is_never_compared() -> None:
    router = headers_router((Q1, {"x-match": "all-with-x"}))
    assert routed(router, headers={}) == {Q1}
    assert routed(router, headers={"x-match": "any"}) == {Q1}


def test_headers_void_binding_value_matches_any_value_of_a_present_header() -> None:
    router = headers_router((Q1, {"k": None}), (Q2, {"x-match": "any", "k": None, "z": "zz"}))
    for value in (1, "1", True, 1.5, None, {"a": 1}, [1, "a"]):
        assert routed(router, headers={"k": value}) == {Q1, Q2}, value
    assert routed(router, headers={"other": 1}) == set()


# Observed on RabbitMQ 3.10.8 (binding value, header value, matched?).
VALUE_CASES = [
    (1, 1, True),
    (1, 1.0, True),
    (1.0, 1, True),
    (1, 1 << 40, False),
    (1, 2, False),
    (1, "1", False),
    ("1", 1, False),
    (1, True, False),
    (True, 1, False),
    (True, True, True),
    (1, decimal.Decimal(1), False),
    ("1", b"1", True),
    (b"1", "1", True),
    ({"a": 1}, {"a": 1}, True),
    ({"a": 1}, {"a": "1"}, False),
    ([1, "a"], [1, "a"], True),
    ([1, "a"], ["a", 1], False),
]


@pytest.mark.parametrize(("binding_value", "header_value", "expected"), VALUE_CASES)
def test_headers_values_compare_like_rabbitmq(
    binding_value: Any, header_value: Any, expected: bool
) -> None:
    assert header_values_equal(binding_value, header_value) is expected
    router = headers_router((Q1, {"k": binding_value}))
    assert (routed(router, headers={"k": header_value}) == {Q1}) is expected


def test_headers_decimal_and_timestamp_values_compare_by_value() -> None:
    assert header_values_equal(decimal.Decimal("1.5"), decimal.Decimal("1.5"))
    assert not header_values_equal(decimal.Decimal("1.5"), decimal.Decimal("2.5"))
    moment = datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    assert header_values_equal(moment, moment)
    assert not header_values_equal(moment, moment + datetime.timedelta(seconds=1))


def test_headers_routing_key_is_ignored() -> None:
    router = headers_router((Q1, {"a": "1"}))
    assert routed(router, "whatever", {"a": "1"}) == {Q1}


def test_headers_unbinding_one_argument_set_keeps_the_destinations_other_bindings() -> None:
    router = headers_router((Q1, {"a": "1"}), (Q1, {"b": "2"}))
    router.unbind(Q1, "", {"a": "1"})
    router._check()
    assert routed(router, headers={"a": "1"}) == set()
    assert routed(router, headers={"b": "2"}) == {Q1}


def test_headers_same_arguments_under_two_routing_keys_need_two_unbinds() -> None:
    router = HeadersRouter()
    router.bind(Q1, "k1", {"a": "1"})
    router.bind(Q1, "k2", {"a": "1"})
    router.unbind(Q1, "k1", {"a": "1"})
    assert routed(router, headers={"a": "1"}) == {Q1}
    router.unbind(Q1, "k2", {"a": "1"})
    router._check()
    assert routed(router, headers={"a": "1"}) == set()
    assert router.binding_count() == 0


def test_headers_unbind_finds_the_binding_whatever_the_argument_order() -> None:
    router = HeadersRouter()
    router.bind(Q1, "", {"x-match": "any", "a": "1", "b": "2"})
    router.unbind(Q1, "", {"b": "2", "a": "1", "x-match": "any"})
    assert router.binding_count() == 0


# --- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize("x_match", ["all", "any", "all-with-x", "any-with-x"])
def test_headers_binding_accepts_the_four_x_match_modes(x_match: str) -> None:
    HeadersExchangeType().validate_binding("", {"x-match": x_match, "a": 1})


def test_headers_binding_without_x_match_is_valid() -> None:
    HeadersExchangeType().validate_binding("", {"a": 1})


@pytest.mark.parametrize("x_match", ["foo", "ALL", "", "all "])
def test_headers_binding_with_an_unknown_x_match_is_precondition_failed(x_match: str) -> None:
    with pytest.raises(ChannelException) as info:
        HeadersExchangeType().validate_binding("", {"x-match": x_match})
    assert info.value.reply_code == ReplyCode.PRECONDITION_FAILED
    assert info.value.reply_text.startswith("PRECONDITION_FAILED - Invalid x-match field value")
    assert "expected all, any, all-with-x, or any-with-x" in info.value.reply_text


@pytest.mark.parametrize("x_match", [1, None, b"all", True, ["all"]])
def test_headers_binding_with_a_non_string_x_match_is_precondition_failed(x_match: Any) -> None:
    with pytest.raises(ChannelException) as info:
        HeadersExchangeType().validate_binding("", {"x-match": x_match})
    assert info.value.reply_code == ReplyCode.PRECONDITION_FAILED
    assert "Invalid x-match field type" in info.value.reply_text
    assert info.value.reply_text.endswith("expected longstr")


@pytest.mark.parametrize(
    "exchange_type", [DirectExchangeType(), FanoutExchangeType(), HeadersExchangeType()]
)
def test_builtin_types_accept_any_declare_arguments_and_plain_bindings(exchange_type: Any) -> None:
    exchange_type.validate({"foo": "bar", "x-match": "zzz", "alternate-exchange": "ae"})
    exchange_type.validate_binding("any.key", {"anything": 1})


# --- registry -------------------------------------------------------------------------------


def test_registry_with_builtins_has_the_four_amqp_types() -> None:
    registry = builtin_registry()
    assert registry.names() == ["direct", "fanout", "headers", "topic"]
    for name in registry.names():
        exchange_type = registry.get(name)
        assert exchange_type is not None
        assert exchange_type.name == name
    assert registry.get("x-unknown") is None
    assert "topic" in registry
    assert "x-unknown" not in registry


def test_registries_are_independent() -> None:
    first = builtin_registry()
    load_plugin().register(first)
    assert "x-consistent-hash" in first
    assert "x-consistent-hash" not in builtin_registry()


def test_registering_a_taken_name_is_a_value_error() -> None:
    registry = builtin_registry()
    with pytest.raises(ValueError, match="direct"):
        registry.register(DirectExchangeType())


def test_each_router_of_a_type_holds_its_own_bindings() -> None:
    exchange_type = builtin_registry().get("direct")
    assert exchange_type is not None
    first, second = exchange_type.create_router(), exchange_type.create_router()
    first.bind(Q1, "a", {})
    assert set(second.route("a", None)) == set()


def test_destination_values_compare_by_kind_and_name() -> None:
    assert Destination.queue("q") == Destination("queue", "q")
    assert Destination.queue("q") != Destination.exchange("q")
    assert str(Destination.exchange("e")) == "exchange 'e'"


# --- the example plugin ---------------------------------------------------------------------


def test_plugin_imports_nothing_of_amqplite_but_the_plugin_api() -> None:
    tree = ast.parse(PLUGIN_PATH.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    assert {name for name in imported if name.startswith("amqplite")} == {
        "amqplite.broker.plugin_api"
    }


def consistent_hash_router(*bindings: tuple[Destination, str]) -> Any:
    """Return an x-consistent-hash router with (destination, weight) bindings."""
    registry = builtin_registry()
    load_plugin().register(registry)
    exchange_type = registry.get("x-consistent-hash")
    assert exchange_type is not None
    router = exchange_type.create_router()
    for destination, weight in bindings:
        exchange_type.validate_binding(weight, {})
        router.bind(destination, weight, {})
    return router


def test_consistent_hash_sends_each_message_to_exactly_one_destination_stably() -> None:
    router = consistent_hash_router((Q1, "1"), (Q2, "1"), (Q3, "1"))
    first = {key: list(router.route(key, None)) for key in map(str, range(300))}
    assert all(len(destinations) == 1 for destinations in first.values())
    assert {d for destinations in first.values() for d in destinations} == {Q1, Q2, Q3}
    again = consistent_hash_router((Q3, "1"), (Q1, "1"), (Q2, "1"))
    assert {key: list(again.route(key, None)) for key in first} == first


def test_consistent_hash_adding_a_destination_only_moves_keys_to_it() -> None:
    router = consistent_hash_router((Q1, "10"), (Q2, "10"))
    before = {key: list(router.route(key, None)) for key in map(str, range(500))}
    router.bind(Q3, "10", {})
    after = {key: list(router.route(key, None)) for key in before}
    moved = [key for key in before if before[key] != after[key]]
    assert moved
    assert all(after[key] == [Q3] for key in moved)


def test_consistent_hash_unbinding_keeps_the_destinations_other_weight() -> None:
    router = consistent_hash_router((Q1, "3"), (Q1, "5"))
    router.unbind(Q1, "3", {})
    assert list(router.route("k", None)) == [Q1]
    router.unbind(Q1, "5", {})
    assert list(router.route("k", None)) == []


def test_consistent_hash_heavier_binding_gets_more_keys() -> None:
    router = consistent_hash_router((Q1, "1"), (Q2, "20"))
    counts = {Q1: 0, Q2: 0}
    for key in map(str, range(1000)):
        (destination,) = router.route(key, None)
        counts[destination] += 1
    assert counts[Q2] > counts[Q1]


@pytest.mark.parametrize("weight", ["", "0", "-1", "abc", "1.5", "1001", "99999999999", "٣"])
def test_consistent_hash_binding_key_must_be_a_weight(weight: str) -> None:
    exchange_type = load_plugin().ConsistentHashExchangeType()
    with pytest.raises(ChannelException) as info:
        exchange_type.validate_binding(weight, {})
    assert info.value.reply_code == ReplyCode.PRECONDITION_FAILED


# --- argument equivalence on redeclare ------------------------------------------------------


class DelayedLikeExchangeType:
    """A plugin type with one argument of its own that must match on redeclare (as RabbitMQ's
    x-delayed-message compares x-delayed-type); written against the plugin API only."""

    name = "x-delayed-like"

    def validate(self, arguments: Arguments) -> None:
        if "x-delayed-type" not in arguments:
            raise ChannelException(ReplyCode.PRECONDITION_FAILED, "x-delayed-type is required")

    def validate_binding(self, routing_key: str, arguments: Arguments) -> None:
        pass

    def create_router(self) -> DirectRouter:
        return DirectRouter()

    def assert_args_equivalence(
        self, resource: str, current: Arguments, received: Arguments
    ) -> None:
        assert_args_equivalence(
            resource, current, received, (*COMMON_EQUIVALENT_ARGUMENTS, "x-delayed-type")
        )


def vhost_with(*extra: Any) -> VHost:
    registry = builtin_registry()
    for exchange_type in extra:
        registry.register(exchange_type)
    return VHost("/", registry)


def test_redeclare_with_other_type_specific_argument_is_precondition_failed() -> None:
    vhost = vhost_with(DelayedLikeExchangeType())
    vhost.declare_exchange("d", "x-delayed-like", arguments={"x-delayed-type": "direct"})
    vhost.declare_exchange("d", "x-delayed-like", arguments={"x-delayed-type": "direct"})
    with pytest.raises(ChannelException) as info:
        vhost.declare_exchange("d", "x-delayed-like", arguments={"x-delayed-type": "topic"})
    assert info.value.reply_code == ReplyCode.PRECONDITION_FAILED
    assert (info.value.class_id, info.value.method_id) == (40, 10)
    assert info.value.reply_text == (
        "PRECONDITION_FAILED - inequivalent arg 'x-delayed-type' for exchange 'd' in vhost '/': "
        "received 'topic' but current is 'direct'"
    )


@pytest.mark.parametrize("type_name", ["direct", "fanout", "topic", "headers", "x-consistent-hash"])
def test_redeclare_with_other_alternate_exchange_is_precondition_failed(type_name: str) -> None:
    plugin = load_plugin()
    vhost = vhost_with(plugin.ConsistentHashExchangeType())
    vhost.declare_exchange("x", type_name, arguments={"alternate-exchange": "ae1"})
    for other in ({"alternate-exchange": "ae2"}, {}):
        with pytest.raises(ChannelException) as info:
            vhost.declare_exchange("x", type_name, arguments=other)
        assert "inequivalent arg 'alternate-exchange'" in info.value.reply_text


@pytest.mark.parametrize("type_name", ["direct", "fanout", "topic", "headers"])
def test_redeclare_with_other_arguments_no_type_compares_is_accepted(type_name: str) -> None:
    vhost = vhost_with()
    first = vhost.declare_exchange("x", type_name, arguments={"note": "a"})
    again = vhost.declare_exchange("x", type_name, arguments={"note": "b", "other": 1})
    assert again is first
    assert first.arguments == {"note": "a"}  # the original arguments stay, as in RabbitMQ


def test_plugin_api_imports_no_exchange_type_nor_other_broker_module() -> None:
    path = Path(__file__).resolve().parents[2] / "amqplite" / "broker" / "plugin_api.py"
    imported: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    ours = {name for name in imported if name.startswith("amqplite")}
    assert all(name.startswith("amqplite.protocol") for name in ours), ours
