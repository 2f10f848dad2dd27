"""The topic exchange type: a trie with one edge per word, matched with `*` and `#`."""

from __future__ import annotations

from typing import ClassVar, Final

import attrs

from amqplite.broker.plugin_api import Arguments, Destination, assert_args_equivalence

__all__ = ["TopicExchangeType", "TopicRouter", "TopicTrie", "split_topic_key"]

STAR: Final = "*"
HASH: Final = "#"


def split_topic_key(key: str) -> list[str]:
    """Split a routing or binding key into words as RabbitMQ does: "" has no words at all.

    Any other key has one word more than it has dots, and words may be empty: "a..b" is
    ["a", "", "b"], "." is ["", ""].
    """
    return key.split(".") if key else []


class _Node:
    """A trie node: children by word, and the destinations of the binding keys ending here."""

    __slots__ = ("bindings", "children", "is_hash")

    def __init__(self, is_hash: bool) -> None:
        self.children: dict[str, _Node] = {}
        self.bindings: dict[Destination, int] = {}  # destination -> number of bindings
        self.is_hash = is_hash  # reached by a "#" edge, so it may absorb further words

    def is_empty(self) -> bool:
        """Return whether the node holds nothing and can be pruned."""
        return not self.children and not self.bindings


class TopicTrie:
    """Binding keys in a word trie (RabbitMQ's rabbit_db_topic_exchange idea).

    Matching walks states (node, word index); each state is visited at most once, so a pattern
    such as "#.#.#.#" costs O(nodes x words), never an exponential number of paths. Unbinding
    prunes the nodes left empty, so memory follows the live bindings.
    """

    __slots__ = ("_binding_count", "_root")

    def __init__(self) -> None:
        self._root = _Node(is_hash=False)
        self._binding_count = 0

    def add(self, binding_key: str, destination: Destination) -> None:
        """Add one binding of `destination` with `binding_key` (repeats are counted)."""
        node = self._root
        for word in split_topic_key(binding_key):
            child = node.children.get(word)
            if child is None:
                child = node.children[word] = _Node(is_hash=word == HASH)
            node = child
        node.bindings[destination] = node.bindings.get(destination, 0) + 1
        self._binding_count += 1

    def remove(self, binding_key: str, destination: Destination) -> bool:
        """Remove one binding added by add(), pruning emptied nodes; False if there was none."""
        path: list[tuple[_Node, str]] = []
        node = self._root
        for word in split_topic_key(binding_key):
            child = node.children.get(word)
            if child is None:
                return False
            path.append((node, word))
            node = child
        count = node.bindings.get(destination, 0)
        if count == 0:
            return False
        if count > 1:
            node.bindings[destination] = count - 1
        else:
            del node.bindings[destination]
        self._binding_count -= 1
        while path and node.is_empty():
            parent, word = path.pop()
            del parent.children[word]
            node = parent
        return True

    def match(self, routing_key: str) -> list[Destination]:
        """Return the destinations whose binding keys match `routing_key`.

        A destination bound under several matching keys may appear more than once.
        """
        words = split_topic_key(routing_key)
        end = len(words)
        found: list[Destination] = []
        seen: set[tuple[int, int]] = set()
        stack: list[tuple[_Node, int]] = [(self._root, 0)]
        while stack:
            node, i = stack.pop()
            state = (id(node), i)
            if state in seen:
                continue
            seen.add(state)
            children = node.children
            if i == end:
                found.extend(node.bindings)
            else:
                word = words[i]
                child = children.get(word)
                if child is not None:
                    stack.append((child, i + 1))
                if word != STAR:
                    child = children.get(STAR)
                    if child is not None:
                        stack.append((child, i + 1))
                if node.is_hash:  # this "#" swallows one more word
                    stack.append((node, i + 1))
            child = children.get(HASH)
            if child is not None:  # a "#" that has swallowed no word yet
                stack.append((child, i))
        return found

    def __len__(self) -> int:
        return self._binding_count

    def node_count(self) -> int:
        """Return the number of nodes, the root included."""
        count = 0
        stack = [self._root]
        while stack:
            node = stack.pop()
            count += 1
            stack.extend(node.children.values())
        return count

    def _check(self) -> None:
        """Assert the invariants: no empty node but the root, flags and counts consistent."""
        total = 0
        stack: list[tuple[_Node, bool]] = [(self._root, True)]
        while stack:
            node, is_root = stack.pop()
            assert is_root or not node.is_empty(), "an empty node was not pruned"
            assert all(n > 0 for n in node.bindings.values())
            total += sum(node.bindings.values())
            for word, child in node.children.items():
                assert child.is_hash == (word == HASH)
                stack.append((child, False))
        assert total == self._binding_count, (total, self._binding_count)


MATCH_CACHE_SIZE: Final = 4096
"""Routing keys whose matches a topic router remembers (the cache is emptied when full)."""


class TopicRouter:
    """The router of one topic exchange: binding arguments are ignored, as RabbitMQ does.

    Matches are cached per routing key until the next bind or unbind, so a publisher cycling
    through a few thousand keys walks the trie once per key.
    """

    __slots__ = ("_cache", "trie")

    def __init__(self) -> None:
        self.trie = TopicTrie()
        self._cache: dict[str, list[Destination]] = {}

    def bind(self, destination: Destination, routing_key: str, arguments: Arguments) -> None:
        """Add a binding of `destination` for the pattern `routing_key`."""
        self.trie.add(routing_key, destination)
        self._cache.clear()

    def unbind(self, destination: Destination, routing_key: str, arguments: Arguments) -> None:
        """Remove one binding of `destination` for the pattern `routing_key`."""
        self.trie.remove(routing_key, destination)
        self._cache.clear()

    def route(self, routing_key: str, headers: Arguments | None) -> list[Destination]:
        """Return the destinations whose patterns match `routing_key` (shared: do not modify)."""
        cache = self._cache
        found = cache.get(routing_key)
        if found is None:
            if len(cache) >= MATCH_CACHE_SIZE:
                cache.clear()
            found = cache[routing_key] = self.trie.match(routing_key)
        return found

    def binding_count(self) -> int:
        """Return how many bindings the router holds."""
        return len(self.trie)

    def _check(self) -> None:
        """Assert the trie's invariants."""
        self.trie._check()


@attrs.frozen(slots=True)
class TopicExchangeType:
    """AMQP topic exchange: dot-separated words, `*` for one word, `#` for zero or more."""

    name: ClassVar[str] = "topic"

    def validate(self, arguments: Arguments) -> None:
        """Accept any declare arguments, as RabbitMQ does."""

    def validate_binding(self, routing_key: str, arguments: Arguments) -> None:
        """Accept any binding key, as RabbitMQ does."""

    def create_router(self) -> TopicRouter:
        """Return an empty topic router."""
        return TopicRouter()

    def assert_args_equivalence(
        self, resource: str, current: Arguments, received: Arguments
    ) -> None:
        """On redeclare only alternate-exchange must match, as in RabbitMQ."""
        assert_args_equivalence(resource, current, received)
