"""A single SQLite server loads no PostgreSQL or Redis client: asyncpg and redis cost
about 8 MB of memory that such a server never uses (memory is a goal: Synapse's third).
Once, a PostgreSQL-only helper imported at the top of a shared module loaded asyncpg
into every server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

_SCRIPT = """
import asyncio, sys
from aiohttp.test_utils import TestClient, TestServer
from homeserver.app import create_app
from tests.conftest import make_config

async def main():
    client = TestClient(TestServer(create_app(make_config(__import__("pathlib").Path(sys.argv[1])))))
    await client.start_server()
    try:
        assert (await client.get("/_matrix/client/versions")).status == 200
    finally:
        await client.close()
    print(sorted(m for m in ("asyncpg", "redis") if m in sys.modules))

asyncio.run(main())
"""


def test_a_sqlite_server_loads_no_postgresql_or_redis_client(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=repo,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
