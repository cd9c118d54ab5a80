"""Jump connections shared by the sessions of one process, counted, and closed with their last user.

Sessions through the same jump host (the same hop chain, outermost first) share that hop's
transport: each target is one more ``direct-tcpip`` channel on it, not one more SSH login on
the bastion. A chain is shared hop by hop, so ``t1`` behind ``j1`` and ``t2`` behind ``j1, j2``
share ``j1``'s connection, and ``j2``'s runs as a channel of it.

A hop is known by its whole ``ConnectSpec`` and those of the hops before it: a changed
credential or trusted key set is another chain, opened (and verified) afresh, while the
sessions on the old one keep it until they close. A hop connection that dropped is never
handed out again: the next session that needs it opens a new one (every session through the
dead one sees its own connection drop, and reconnects through the new one); the dead one
closes when its last user lets go.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sshlib.connect import Connection, ConnectSpec

# Opens one hop over the previous hop's connection (None for the first): sshlib.connect's.
OpenHop = Callable[["ConnectSpec", "Connection | None"], "Connection"]


@dataclass(eq=False)
class _Hop:
    chain: tuple[ConnectSpec, ...]  # this hop's spec last
    connection: Connection
    parent: _Hop | None
    users: int = 0  # sessions on this hop, and the hops opened over it


@dataclass(eq=False)
class Lease:
    """One session's hold on a chain; ``release()`` once, when the session's connection closes."""

    pool: JumpPool
    last: _Hop
    released: bool = False

    @property
    def connections(self) -> tuple[Connection, ...]:
        """The chain's connections, outermost first."""
        found: list[Connection] = []
        hop: _Hop | None = self.last
        while hop is not None:
            found.append(hop.connection)
            hop = hop.parent
        return tuple(reversed(found))

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.pool._release(self.last)


@dataclass
class JumpPool:
    """The hop connections this process holds, by chain. Thread-safe."""

    _hops: dict[tuple[ConnectSpec, ...], _Hop] = field(default_factory=dict)
    _opening: dict[tuple[ConnectSpec, ...], threading.Lock] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def lease(self, hops: tuple[ConnectSpec, ...], open_hop: OpenHop) -> Lease:
        """Hold the chain ``hops``, opening (or re-opening) whatever part of it is not live.

        Raises what ``open_hop`` raises; nothing stays held then.
        """
        if not hops:
            raise ValueError("a lease needs at least one hop")
        last: _Hop | None = None
        try:
            for depth in range(1, len(hops) + 1):
                last = self._hold(hops[:depth], last, open_hop)
        except BaseException:
            if last is not None:
                self._release(last)
            raise
        assert last is not None
        return Lease(self, last)

    def _hold(self, chain: tuple[ConnectSpec, ...], parent: _Hop | None, open_hop: OpenHop) -> _Hop:
        """One more user of ``chain``'s live hop, opened over ``parent`` if needed.

        The caller's hold on ``parent`` passes to the returned hop (released with it).
        """
        with self._lock:
            opening = self._opening.setdefault(chain, threading.Lock())
        # One opener per chain: sessions opened at once through a new bastion share one login.
        with opening:
            with self._lock:
                hop = self._hops.get(chain)
                # A hop over a parent that was replaced runs over a dead connection, even if
                # its own transport has not noticed yet.
                live = hop is not None and hop.parent is parent and hop.connection.is_active()
                if live:
                    assert hop is not None
                    hop.users += 1
            if live:
                assert hop is not None
                if parent is not None:
                    self._release(parent)  # the live hop already holds its parent
                return hop
            connection = open_hop(chain[-1], parent.connection if parent is not None else None)
            fresh = _Hop(chain=chain, connection=connection, parent=parent, users=1)
            with self._lock:
                self._hops[chain] = fresh  # a dead one it replaces closes with its last user
            return fresh

    def _release(self, hop: _Hop | None) -> None:
        while hop is not None:
            with self._lock:
                hop.users -= 1
                if hop.users > 0:
                    return
                if self._hops.get(hop.chain) is hop:
                    del self._hops[hop.chain]
                    self._opening.pop(hop.chain, None)
            hop.connection.close()  # its channels, the hops further in, are closed already
            hop = hop.parent

    def held(self) -> list[Connection]:
        """The hop connections held now (for tests and metrics)."""
        with self._lock:
            return [hop.connection for hop in self._hops.values()]
