"""Which local users are syncing on other processes: the presence writer's view.

A process that serves /sync but does not write presence (a client reader, or the main
when a reader writes presence) does not report every /sync: it tells the writer when
one of its users starts syncing there and when they stopped (homeserver.replication.
sync_reports), and every SNAPSHOT_S the whole set (a heartbeat that also repairs
anything lost: a writer restart, a failed request). A long-polling client therefore
costs the writer nothing per request. Pure bookkeeping, no I/O and no clock of its own:
the presence service passes the time.

The writer counts a user as syncing while any process lists them. A process that falls
silent for EXPIRE_MS (killed, partitioned) is forgotten: its users stopped syncing when
it was last heard, so their clients time out to offline as if they had gone then.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# How often a process sends its whole set, and how long the writer trusts it without
# hearing from it again (three snapshots missed).
SNAPSHOT_S = 10.0
EXPIRE_MS = 30_000
# Bounds on what the writer holds for processes (they carry the replication secret,
# but a bug must not grow the writer without end): processes, and users per process
# (beyond it a process's further users are not counted as syncing there: at worst they
# time out to offline while they sync, and come back online with their next sync).
MAX_PROCESSES = 256
MAX_USERS_PER_PROCESS = 200_000


@dataclass
class _Process:
    heard_ms: int
    users: set[str] = field(default_factory=set)


class RemoteSyncs:
    """Users syncing on other processes, by process name."""

    def __init__(self) -> None:
        self._processes: dict[str, _Process] = {}

    def __contains__(self, user_id: str) -> bool:
        return any(user_id in p.users for p in self._processes.values())

    def started(self, process: str, users: list[str], now_ms: int) -> None:
        """`process` says these users are syncing there (also its heartbeat)."""
        held = self._process(process, now_ms)
        if held is None:
            return
        held.heard_ms = max(held.heard_ms, now_ms)
        for user_id in users:
            if len(held.users) >= MAX_USERS_PER_PROCESS:
                break
            held.users.add(user_id)

    def stopped(self, process: str, users: list[str], now_ms: int) -> list[str]:
        """`process` says these users stopped syncing there: those now syncing nowhere."""
        held = self._processes.get(process)
        if held is None:
            return [u for u in users if u not in self]
        held.heard_ms = max(held.heard_ms, now_ms)
        for user_id in users:
            held.users.discard(user_id)
        return [u for u in users if u not in self]

    def snapshot(self, process: str, users: list[str], now_ms: int) -> list[str]:
        """`process`'s whole set: the users it listed before and no longer does (a lost
        `stopped`), among them those now syncing nowhere."""
        held = self._process(process, now_ms)
        if held is None:
            return []
        before = held.users
        held.users = set(users[:MAX_USERS_PER_PROCESS])
        held.heard_ms = max(held.heard_ms, now_ms)
        return [u for u in before - held.users if u not in self]

    def expire(self, now_ms: int) -> list[tuple[str, int]]:
        """Forget the processes not heard from for EXPIRE_MS: (user, when last heard)
        for each of their users now syncing nowhere."""
        gone = [name for name, p in self._processes.items() if now_ms - p.heard_ms >= EXPIRE_MS]
        dropped = [(name, self._processes.pop(name)) for name in gone]
        return [(u, p.heard_ms) for _, p in dropped for u in p.users if u not in self]

    def next_expiry(self) -> int | None:
        """When the earliest held process expires unless heard from (ms), or None."""
        if not self._processes:
            return None
        return min(p.heard_ms for p in self._processes.values()) + EXPIRE_MS

    def _process(self, name: str, now_ms: int) -> _Process | None:
        held = self._processes.get(name)
        if held is None:
            if len(self._processes) >= MAX_PROCESSES:
                return None
            held = self._processes[name] = _Process(now_ms)
        return held
