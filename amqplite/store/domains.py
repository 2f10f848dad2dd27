"""One commit sequence of the store: tickets taken by appends, how far commits made them durable."""

from __future__ import annotations

from collections.abc import Callable

Mark = tuple[tuple["CommitDomain", int], ...]
"""The (domain, ticket) pairs some records need committed."""


class CommitDomain:
    """One commit sequence: tickets taken by appends, and how far commits have made them durable."""

    __slots__ = (
        "after",
        "busy",
        "committed",
        "flushed",
        "gate",
        "name",
        "refused",
        "synced",
        "written",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.written = 0  # the ticket of the last record appended
        self.flushed = 0  # the ticket of the last record handed to a job
        self.synced = 0  # every record up to this ticket is on this node's disk
        self.committed = 0  # ... and wherever else it must be (what confirms wait for)
        self.busy = False  # a job of this domain is in flight (at most one)
        self.after: tuple[CommitDomain, int] | None = None  # a record it depends on elsewhere
        # cluster mode, a mirrored queue's domain: how far its mirrors let `synced` count
        self.gate: Callable[[int], int] | None = None
        # cluster mode: ticket ranges (after, upto] refused, not committed (their confirms are nacks)
        self.refused: list[tuple[int, int]] | None = None

    def refuse(self, upto: int) -> None:
        """The records after the committed point up to `upto` will never commit: settle them as refused."""
        if upto <= self.committed:
            return
        if self.refused is None:
            self.refused = []
        self.refused.append((self.committed, upto))
        del self.refused[:-64]  # old ranges: their waiters are long settled
        self.committed = upto

    def regate(self) -> None:
        """Recompute the committed point (after a sync, or when the mirrors acked more)."""
        gate = self.gate
        self.committed = self.synced if gate is None else gate(self.synced)

    def __repr__(self) -> str:
        return f"<CommitDomain {self.name} {self.committed}/{self.written}>"
