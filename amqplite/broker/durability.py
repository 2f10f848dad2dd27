"""The seams between the pure core and the store: what the core reports, the store persists."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from amqplite.broker.auth import Permission, TopicPermission
    from amqplite.broker.binding import Binding
    from amqplite.broker.exchange import Exchange
    from amqplite.broker.policy import Policy
    from amqplite.broker.queue import Queue


class MetadataListener(Protocol):
    """Told about durable entities so they come back at boot; transient ones are not reported."""

    def queue_declared(self, queue: Queue) -> None:
        """A durable queue was created (the listener may attach queue.journal)."""

    def queue_deleted(self, queue: Queue) -> None:
        """A durable queue was deleted."""

    def exchange_declared(self, exchange: Exchange) -> None:
        """A durable exchange was created."""

    def exchange_deleted(self, exchange: Exchange) -> None:
        """A durable exchange was deleted."""

    def binding_added(self, binding: Binding) -> None:
        """A binding between durable ends was added."""

    def binding_removed(self, binding: Binding) -> None:
        """A binding between durable ends was removed."""


class ConfigListener(Protocol):
    """Told about vhosts, users, permissions and policies so that run-time changes survive a restart."""

    def vhost_added(self, name: str) -> None:
        """A vhost was created."""

    def vhost_deleted(self, name: str) -> None:
        """A vhost was deleted."""

    def user_set(self, name: str, password_hash: str, tags: tuple[str, ...]) -> None:
        """A user was created or replaced."""

    def user_deleted(self, name: str) -> None:
        """A user was deleted (with its permissions)."""

    def permissions_set(self, user: str, vhost: str, permission: Permission) -> None:
        """A user was granted permissions on a vhost."""

    def permissions_cleared(self, user: str, vhost: str) -> None:
        """A user's permissions on a vhost were taken away."""

    def policy_set(self, policy: Policy) -> None:
        """A policy was created or replaced."""

    def policy_cleared(self, vhost: str, name: str) -> None:
        """A policy was removed."""

    def topic_permissions_set(
        self, user: str, vhost: str, permissions: Sequence[TopicPermission]
    ) -> None:
        """A user's topic permissions on a vhost are now these (none: cleared)."""

    def limits_set(self, kind: str, name: str, limits: Mapping[str, int]) -> None:
        """A user's or vhost's limits are now these (kind "user" or "vhost"; none: cleared)."""


class PluginStateStore(Protocol):
    """Plugins' durable records (plugin_api.PluginState), kept by the store's metadata log."""

    def plugin_state(self, scope: str, vhost: str) -> dict[str, dict[str, Any]]:
        """The records of one scope in a vhost, by key."""
        ...

    def plugin_state_put(self, scope: str, vhost: str, key: str, value: Mapping[str, Any]) -> None:
        """Record or replace one record (a confirm waiting on it waits for its commit)."""

    def plugin_state_delete(self, scope: str, vhost: str, key: str) -> None:
        """Forget one record."""

    def plugin_state_clear(self, scope: str, vhost: str) -> None:
        """Forget every record of a scope."""

    def held_spool(self, vhost: str, exchange: str, durable: bool) -> HeldSpool:
        """The spool of an exchange's held messages."""
        ...

    def drop_held_spool(self, spool: HeldSpool) -> None:
        """Forget a spool (its exchange is gone)."""


class HeldSpool(Protocol):
    """One exchange's held messages on disk (store.spool.Spool): records of (due ms, payload)."""

    restored: list[tuple[int, int]]
    """(handle, due ms) of the durable records found when it was opened."""

    def append(self, due_ms: int, payload: bytes, durable: bool) -> int:
        """Spool a record; a durable one is on disk before the confirm of the publish doing it."""
        ...

    def read(self, handle: int) -> tuple[int, bytes]:
        """(due ms, payload) of a record."""
        ...

    def release(self, handle: int, route: Callable[[], None]) -> None:
        """Run route(); forget the record once the records route() made are on disk."""

    def cancel(self, handle: int) -> None:
        """Forget a record."""


class CommitSequence(Protocol):
    """One commit domain (a durable queue's journal, or the metadata log) as waiters see it."""

    @property
    def committed(self) -> int:
        """Every record of the domain up to this ticket is on disk."""
        ...


CommitMark = tuple[tuple[CommitSequence, int], ...]
"""What some records need before they may be announced: (domain, ticket) pairs."""


class CommitTracker(Protocol):
    """Commit domains: a confirm or -ok waits only for the domains its own records went to."""

    def watch(self) -> Any:
        """Start noting the domains records are appended to; pass the token to watched()."""

    def watched(self, outer: Any) -> CommitMark | None:
        """Stop noting: the mark of the records appended since watch() (None: none appended)."""


class CommitWaiter(Protocol):
    """Something holding replies or confirms until records commit (a connection's session)."""

    def on_commit(self) -> None:
        """More records are durable: send what they cover."""


def is_durable(mark: CommitMark | None) -> bool:
    """True once every record the mark names is on disk."""
    if mark is None:
        return True
    for sequence, ticket in mark:  # noqa: SIM110 - no generator on the confirm path
        if sequence.committed < ticket:
            return False
    return True


def is_refused(mark: CommitMark | None) -> bool:
    """True when a record the mark names was refused (forwarded and nacked, or never led here).

    A domain that can refuse has `refused`: ticket ranges (after, upto] settled as refusals.
    """
    if mark is None:
        return False
    for sequence, ticket in mark:
        refused: list[tuple[int, int]] | None = getattr(sequence, "refused", None)
        if refused:
            for after, upto in refused:
                if after < ticket <= upto:
                    return True
    return False


def merge_marks(first: CommitMark | None, second: CommitMark | None) -> CommitMark | None:
    """What both marks wait for (the later ticket of each domain)."""
    if first is None:
        return second
    if second is None:
        return first
    tickets: dict[CommitSequence, int] = {}
    for sequence, ticket in (*first, *second):
        if tickets.get(sequence, 0) < ticket:
            tickets[sequence] = ticket
    return tuple(tickets.items())


class NoCommits:
    """The in-memory broker: nothing is ever waiting for a disk."""

    def watch(self) -> None:
        """Nothing to note."""

    def watched(self, outer: Any) -> None:
        """Never anything to wait for."""
