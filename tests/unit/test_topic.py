"""The topic trie against RabbitMQ's observed behaviour and an independent regex matcher."""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amqplite.broker.plugin_api import Destination
from amqplite.broker.topic import TopicExchangeType, TopicRouter, TopicTrie, split_topic_key

Q1, Q2, Q3 = Destination.queue("q1"), Destination.queue("q2"), Destination.queue("q3")
X1 = Destination.exchange("x1")


def reference_matches(binding_key: str, routing_key: str) -> bool:
    """Match by translating the binding key into a regex over "\\0word" per word."""
    words = split_topic_key(routing_key)
    subject = "".join("\0" + word for word in words)
    parts = []
    for word in split_topic_key(binding_key):
        if word == "#":
            parts.append("(?:\0[^\0]*)*")
        elif word == "*":
            parts.append("\0[^\0]*")
        else:
            parts.append("\0" + re.escape(word))
    return re.fullmatch("".join(parts), subject) is not None


def matched(trie: TopicTrie, routing_key: str) -> set[Destination]:
    """Return the deduplicated destinations the trie routes `routing_key` to."""
    return set(trie.match(routing_key))


# What RabbitMQ 3.10.8 delivered, binding key -> routing keys it matched, out of ROUTING_KEYS.
ROUTING_KEYS = ["", ".", "a", "a.", ".a", "a.b", "a..b", "a.x.b", "..", "a.b.c", "*", "#"]
RABBITMQ_OBSERVED = {
    "": [""],
    "#": ROUTING_KEYS,
    "*": ["a", "*", "#"],
    "#.#": ROUTING_KEYS,
    "#.#.#": ROUTING_KEYS,
    "*.#": [k for k in ROUTING_KEYS if k != ""],
    ".": ["."],
    "*.*": [".", "a.", ".a", "a.b"],
    "a.#": ["a", "a.", "a.b", "a..b", "a.x.b", "a.b.c"],
    "#.a": ["a", ".a"],
    "a.#.b": ["a.b", "a..b", "a.x.b"],
    "a..b": ["a..b"],
    "a.*.b": ["a..b", "a.x.b"],
    "*.": [".", "a."],
    ".*": [".", ".a"],
}


@pytest.mark.parametrize(("binding_key", "expected"), sorted(RABBITMQ_OBSERVED.items()))
def test_binding_key_matches_the_routing_keys_rabbitmq_matches(
    binding_key: str, expected: list[str]
) -> None:
    trie = TopicTrie()
    trie.add(binding_key, Q1)
    assert [rk for rk in ROUTING_KEYS if trie.match(rk)] == expected


@pytest.mark.parametrize(("binding_key", "expected"), sorted(RABBITMQ_OBSERVED.items()))
def test_reference_matcher_agrees_with_rabbitmq(binding_key: str, expected: list[str]) -> None:
    assert [rk for rk in ROUTING_KEYS if reference_matches(binding_key, rk)] == expected


def test_split_topic_key_gives_no_words_for_the_empty_key_and_keeps_empty_words() -> None:
    assert split_topic_key("") == []
    assert split_topic_key(".") == ["", ""]
    assert split_topic_key("a..b") == ["a", "", "b"]
    assert split_topic_key("a.") == ["a", ""]


def test_tutorial_bindings_route_like_the_rabbitmq_tutorial() -> None:
    trie = TopicTrie()
    trie.add("*.orange.*", Q1)
    trie.add("*.*.rabbit", Q2)
    trie.add("lazy.#", Q2)
    assert matched(trie, "quick.orange.rabbit") == {Q1, Q2}
    assert matched(trie, "lazy.orange.elephant") == {Q1, Q2}
    assert matched(trie, "quick.orange.fox") == {Q1}
    assert matched(trie, "lazy.brown.fox") == {Q2}
    assert matched(trie, "lazy.pink.rabbit") == {Q2}
    assert matched(trie, "quick.brown.fox") == set()
    assert matched(trie, "orange") == set()
    assert matched(trie, "quick.orange.new.rabbit") == set()
    assert matched(trie, "lazy.orange.new.rabbit") == {Q2}
    assert matched(trie, "lazy") == {Q2}


def test_destination_bound_under_two_matching_keys_appears_at_most_once_per_key() -> None:
    trie = TopicTrie()
    trie.add("#", Q1)
    trie.add("a.*", Q1)
    trie.add("a.b", Q2)
    result = trie.match("a.b")
    assert sorted(result) == [Q1, Q1, Q2]


def test_exchange_destinations_route_like_queues() -> None:
    trie = TopicTrie()
    trie.add("a.*", X1)
    assert trie.match("a.b") == [X1]


def test_unbinding_one_key_of_a_destination_keeps_its_other_keys() -> None:
    trie = TopicTrie()
    trie.add("a.*", Q1)
    trie.add("b.#", Q1)
    assert trie.remove("a.*", Q1)
    trie._check()
    assert matched(trie, "a.x") == set()
    assert matched(trie, "b.x.y") == {Q1}


def test_a_key_bound_twice_for_one_destination_needs_two_unbinds() -> None:
    router = TopicRouter()
    router.bind(Q1, "a.b", {"x-any": 1})
    router.bind(Q1, "a.b", {"x-any": 2})
    router.unbind(Q1, "a.b", {"x-any": 1})
    assert router.route("a.b", None) == [Q1]
    router.unbind(Q1, "a.b", {"x-any": 2})
    assert router.route("a.b", None) == []
    assert router.trie.node_count() == 1


def test_removing_an_absent_binding_changes_nothing() -> None:
    trie = TopicTrie()
    trie.add("a.b", Q1)
    assert not trie.remove("a.c", Q1)
    assert not trie.remove("a", Q1)
    assert not trie.remove("a.b", Q2)
    trie._check()
    assert trie.match("a.b") == [Q1]
    assert len(trie) == 1


def test_unbinding_everything_prunes_the_trie_back_to_its_root() -> None:
    trie = TopicTrie()
    keys = ["a.b.c", "a.#", "a.#.c", "*.b", "#", "#.#", "", ".", "a..b"]
    for key in keys:
        trie.add(key, Q1)
    assert trie.node_count() > 1
    for key in keys:
        assert trie.remove(key, Q1)
        trie._check()
    assert trie.node_count() == 1
    assert len(trie) == 0


def test_unbinding_a_leaf_keeps_the_shared_prefix_of_other_keys() -> None:
    trie = TopicTrie()
    trie.add("a.b.c", Q1)
    trie.add("a.b", Q2)
    nodes = trie.node_count()
    trie.remove("a.b.c", Q1)
    trie._check()
    assert trie.node_count() == nodes - 1
    assert trie.match("a.b") == [Q2]


def test_many_hashes_against_a_long_key_are_matched_without_blowup() -> None:
    trie = TopicTrie()
    trie.add(".".join(["#"] * 12), Q1)
    trie.add(".".join(["#"] * 12) + ".z", Q2)
    routing_key = ".".join(["w"] * 300)
    assert matched(trie, routing_key) == {Q1}
    assert matched(trie, routing_key + ".z") == {Q1, Q2}


def test_topic_exchange_type_accepts_any_arguments_and_binding_keys() -> None:
    exchange_type = TopicExchangeType()
    assert exchange_type.name == "topic"
    exchange_type.validate({"anything": 1})
    exchange_type.validate_binding("#.*..", {"x-match": "nonsense"})
    router = exchange_type.create_router()
    router.bind(Q1, "a.*", {})
    assert list(router.route("a.b", {"h": 1})) == [Q1]


# --- property and model tests against the regex reference ----------------------------------

WORDS = ["a", "b", "", "*", "#"]
keys = st.lists(st.sampled_from(WORDS), max_size=5).map(".".join)
routing_keys = st.lists(st.sampled_from(["a", "b", "", "c", "*", "#"]), max_size=6).map(".".join)
destinations = st.sampled_from([Q1, Q2, Q3, X1])


@settings(max_examples=300, deadline=None)
@given(
    bindings=st.lists(st.tuples(keys, destinations), max_size=12),
    probes=st.lists(routing_keys, min_size=1, max_size=12),
)
def test_trie_matches_like_the_reference_matcher(
    bindings: list[tuple[str, Destination]], probes: list[str]
) -> None:
    trie = TopicTrie()
    for key, destination in bindings:
        trie.add(key, destination)
    trie._check()
    for routing_key in probes:
        expected = {d for key, d in bindings if reference_matches(key, routing_key)}
        assert matched(trie, routing_key) == expected, routing_key


def random_key(rng: random.Random, words: list[str]) -> str:
    """Return a random key of zero to five words from `words`."""
    return ".".join(rng.choice(words) for _ in range(rng.randint(0, 5)))


@pytest.mark.parametrize("seed", range(20))
def test_random_bind_unbind_sequences_keep_the_trie_equal_to_a_model(seed: int) -> None:
    rng = random.Random(seed)
    trie = TopicTrie()
    model: list[tuple[str, Destination]] = []  # a multiset of live bindings
    for _ in range(300):
        if model and rng.random() < 0.45:
            key, destination = model.pop(rng.randrange(len(model)))
            assert trie.remove(key, destination)
        else:
            key, destination = random_key(rng, WORDS), rng.choice([Q1, Q2, Q3, X1])
            trie.add(key, destination)
            model.append((key, destination))
        trie._check()
        assert len(trie) == len(model)
        routing_key = random_key(rng, ["a", "b", "", "c"])
        expected = {d for k, d in model if reference_matches(k, routing_key)}
        assert matched(trie, routing_key) == expected
    while model:
        key, destination = model.pop()
        assert trie.remove(key, destination)
        trie._check()
    assert trie.node_count() == 1


def test_cached_matches_follow_binds_and_unbinds() -> None:
    router = TopicRouter()
    router.bind(Q1, "a.*", {})
    assert router.route("a.b", None) == [Q1]
    router.bind(Q2, "#.b", {})
    assert sorted(router.route("a.b", None)) == [Q1, Q2]
    router.unbind(Q1, "a.*", {})
    assert router.route("a.b", None) == [Q2]
    assert router.route("a.c", None) == []


def test_match_cache_stays_bounded_and_correct() -> None:
    from amqplite.broker.topic import MATCH_CACHE_SIZE

    router = TopicRouter()
    router.bind(Q1, "k.*", {})
    for i in range(MATCH_CACHE_SIZE + 10):
        assert router.route(f"k.{i}", None) == [Q1]
    assert len(router._cache) <= MATCH_CACHE_SIZE
    assert router.route("other", None) == []
