"""AdminJobStore: background jobs started through the admin API (migration 0050).

One row per job (room deletion, history purge) with its status, so the status
endpoints and /_synapse/admin/v1/scheduled_tasks can answer after the request that
started the job returned, and after a restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._util import dump_json, load_json, now_ms
from .database import Database

ACTIVE_STATUSES = ("scheduled", "active")


@dataclass(frozen=True)
class Job:
    job_id: str
    action: str
    status: str
    resource_id: str | None
    params: dict[str, Any]
    result: Any
    error: str | None
    timestamp_ms: int


_COLUMNS = "job_id, action, status, resource_id, params, result, error, timestamp_ms"


def _job(row: Any) -> Job:
    return Job(
        job_id=row[0],
        action=row[1],
        status=row[2],
        resource_id=row[3],
        params=load_json(row[4]) if row[4] else {},
        result=load_json(row[5]) if row[5] else None,
        error=row[6],
        timestamp_ms=int(row[7]),
    )


class AdminJobStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(
        self, job_id: str, action: str, resource_id: str | None, params: dict[str, Any]
    ) -> Job:
        ts = now_ms()
        await self.db.execute(
            f"INSERT INTO admin_jobs ({_COLUMNS}) VALUES ($1, $2, 'scheduled', $3, $4, NULL,"
            " NULL, $5)",
            job_id,
            action,
            resource_id,
            dump_json(params),
            ts,
        )
        return Job(job_id, action, "scheduled", resource_id, params, None, None, ts)

    async def update(
        self, job_id: str, status: str, *, result: Any = None, error: str | None = None
    ) -> None:
        await self.db.execute(
            "UPDATE admin_jobs SET status = $2, result = $3, error = $4, timestamp_ms = $5"
            " WHERE job_id = $1",
            job_id,
            status,
            None if result is None else dump_json(result),
            error,
            now_ms(),
        )

    async def get(self, job_id: str) -> Job | None:
        row = await self.db.fetchrow(f"SELECT {_COLUMNS} FROM admin_jobs WHERE job_id = $1", job_id)
        return None if row is None else _job(row)

    async def find(
        self,
        *,
        action: str | None = None,
        resource_id: str | None = None,
        status: str | None = None,
        max_timestamp: int | None = None,
        limit: int = 1000,
    ) -> list[Job]:
        """Newest first, filtered like Synapse's scheduled_tasks query."""
        clauses: list[str] = []
        args: list[Any] = []
        for column, value in (("action", action), ("resource_id", resource_id), ("status", status)):
            if value is not None:
                args.append(value)
                clauses.append(f"{column} = ${len(args)}")
        if max_timestamp is not None:
            args.append(max_timestamp)
            clauses.append(f"timestamp_ms <= ${len(args)}")
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        args.append(limit)
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM admin_jobs{where}"
            f" ORDER BY timestamp_ms DESC, job_id LIMIT ${len(args)}",
            *args,
        )
        return [_job(r) for r in rows]

    async def fail_interrupted(self, reason: str) -> int:
        """Jobs a previous run left scheduled or active: they did not finish."""
        return await self.db.execute(
            "UPDATE admin_jobs SET status = 'failed', error = $1, timestamp_ms = $2"
            " WHERE status IN ('scheduled', 'active')",
            reason,
            now_ms(),
        )

    async def delete_older_than(self, ts: int) -> int:
        return await self.db.execute(
            "DELETE FROM admin_jobs WHERE timestamp_ms < $1 AND status NOT IN"
            " ('scheduled', 'active')",
            ts,
        )
