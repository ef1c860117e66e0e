"""Prometheus metrics and the request log, as an operator sees them.

In process: the metrics a scrape returns after real traffic (Synapse's names and
labels, so its Grafana dashboard's queries match), and the one-line-per-request log
(tokens redacted, requester named). As a process: a server with a Synapse-style
`type: metrics` listener and a Synapse-style log_config file, driven over real sockets.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from homeserver.appstate import STORES
from tests import deployment_mode
from tests.admin.conftest import AdminEnv
from tests.ports import free_port
from tests.unit.test_cli import ENV, wait_until_serving

CLIENT = "/_matrix/client/v3"


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def value(found: dict[str, Any], metric: str, **labels: str) -> float:
    return sum(
        v for lab, v in found.get(metric, []) if all(lab.get(k) == x for k, x in labels.items())
    )


@pytest.mark.skipif(
    bool(deployment_mode.MODE),
    reason="each process of a deployment serves its own metrics, not through nginx",
)
async def test_metrics_after_real_traffic(make_admin_env: Any) -> None:
    env: AdminEnv = await make_admin_env(enable_metrics=True)
    client = env.client
    response = await client.post(f"{CLIENT}/createRoom", headers=env.user, json={})
    room_id = (await response.json())["room_id"]
    for i in range(3):
        response = await client.put(
            f"{CLIENT}/rooms/{room_id}/send/m.room.message/t{i}",
            headers=env.user,
            json={"msgtype": "m.text", "body": "hi"},
        )
        assert response.status == 200
    await client.get(f"{CLIENT}/sync", headers=env.user)
    await client.get("/_matrix/client/v3/no/such/endpoint")
    response = await client.get("/_synapse/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    found = samples(await response.text())

    sends = value(
        found, "synapse_http_server_requests_received_total", servlet="RoomSendEventRestServlet"
    )
    assert sends == 3
    assert (
        value(found, "synapse_http_server_requests_received_total", servlet="SyncRestServlet") == 1
    )
    # Every label the dashboard filters on is there, server_name included.
    buckets = [
        lab
        for lab, _ in found["synapse_http_server_response_time_seconds_bucket"]
        if lab["servlet"] == "RoomSendEventRestServlet"
    ]
    assert buckets and all(
        lab["method"] == "PUT" and lab["code"] == "200" and lab["server_name"] == "test.local"
        for lab in buckets
    )
    assert (
        value(
            found,
            "synapse_http_server_response_time_seconds_count",
            servlet="RoomSendEventRestServlet",
        )
        == 3
    )
    assert value(found, "synapse_http_server_responses_total", code="404") == 1
    assert value(found, "synapse_http_server_requests_received_total", servlet="unrecognized") == 1
    # The scrape itself is in flight while it is rendered; nothing else is.
    assert value(found, "synapse_http_server_in_flight_requests_count") == 1
    # createRoom's state events plus the three messages.
    assert value(found, "synapse_storage_events_persisted_events_total") >= 9
    assert (
        value(
            found,
            "synapse_storage_events_persisted_events_sep_total",
            type="m.room.message",
            origin_type="local",
            origin_entity="*client*",
        )
        == 3
    )
    assert value(found, "synapse_storage_transaction_time_count_total", desc="write") > 0
    assert value(found, "synapse_storage_schedule_time_count") > 0
    assert value(found, "synapse_util_caches_cache", name="getEvent") > 0
    assert value(found, "synapse_util_caches_cache_hits", name="get_user_by_access_token") >= 3
    assert "synapse_util_caches_cache_size" in found
    assert "synapse_federation_client_sent_transactions_total" in found
    assert "synapse_federation_destinations_backing_off" in found
    assert "process_cpu_seconds_total" in found and "python_gc_objects_collected_total" in found


async def test_metrics_are_off_by_default(env: AdminEnv) -> None:
    response = await env.client.get("/_synapse/metrics")
    assert response.status == 404


@pytest.mark.skipif(
    bool(deployment_mode.MODE), reason="reads the log of the test's process, not a deployment's"
)
async def test_request_log_line(env: AdminEnv, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="homeserver.access")
    await env.client.get(
        f"{CLIENT}/sync?timeout=0&access_token={env.user_token}", headers={"User-Agent": "Tester/1"}
    )
    await env.client.get("/_matrix/client/v3/nothing/here")
    await env.client.post(
        f"{CLIENT}/register/m.login.registration_token/validity?token=secret-token"
    )
    lines = [r.getMessage() for r in caplog.records if r.name == "homeserver.access"]
    sync = next(line for line in lines if "/sync" in line)
    assert env.user_token not in sync and "access_token=<redacted>" in sync
    assert "{@bob:test.local} Processed request:" in sync
    assert ' 200 "GET /_matrix/client/v3/sync?timeout=0&access_token=<redacted> HTTP/1.1"' in sync
    assert sync.endswith('"Tester/1"')
    missing = next(line for line in lines if "/nothing/here" in line)
    assert "{None}" in missing and ' 404 "GET ' in missing
    assert not any("secret-token" in line for line in lines)
    # Database statements are not in the request log, nor anywhere at INFO.
    assert not any(
        r.name.startswith(("homeserver.storage.sql", "aiosqlite")) for r in caplog.records
    )


async def test_sql_tracing_on_its_own_logger(
    env: AdminEnv, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="homeserver.storage.sql")
    await env.client.get(f"{CLIENT}/account/whoami", headers=env.user)
    await env.client.server.app[STORES].accounts.get_user(env.user_id)
    sql = [r.getMessage() for r in caplog.records if r.name == "homeserver.storage.sql"]
    assert any(line.startswith("[SQL] SELECT") and "FROM users" in line for line in sql)


LOG_CONFIG = """\
version: 1
formatters:
  precise:
    format: '%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s'
filters:
  context:
    (): synapse.logging.context.LoggingContextFilter
    request: ""
handlers:
  file:
    class: logging.FileHandler
    formatter: precise
    filename: {log}
    filters: [context]
  buffer:
    class: synapse.logging.handlers.PeriodicallyFlushingMemoryHandler
    target: file
    capacity: 10
    flushLevel: 30
    period: 5
loggers:
  homeserver.storage.sql:
    level: INFO
root:
  level: INFO
  handlers: [buffer]
"""


def test_server_with_metrics_listener_and_synapse_log_config(tmp_path: Path) -> None:
    client_port, metrics_port = free_port(), free_port()
    log_file = tmp_path / "homeserver.log"
    (tmp_path / "log.yaml").write_text(LOG_CONFIG.format(log=log_file))
    config = {
        "server_name": "ops.test",
        "listeners": [
            {"port": client_port, "resources": [{"names": ["client", "federation"]}]},
            {"port": metrics_port, "type": "metrics", "bind_addresses": ["127.0.0.1"]},
        ],
        "enable_metrics": True,
        "log_config": "log.yaml",
        "enable_registration": True,
        "enable_registration_without_verification": True,
        "password_hashing": {"opslimit": 1, "memlimit": 8192},
    }
    (tmp_path / "hs.yaml").write_text(yaml.safe_dump(config))
    proc = subprocess.Popen(
        [sys.executable, "-m", "homeserver", "-c", "hs.yaml"],
        cwd=tmp_path,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until_serving(proc, f"http://127.0.0.1:{client_port}/_matrix/client/versions")
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/_synapse/metrics") as r:
            text = r.read().decode()
        assert "synapse_http_server_requests_received_total" in text
        # Each listener serves only its resources.
        for url in (
            f"http://127.0.0.1:{client_port}/_synapse/metrics",
            f"http://127.0.0.1:{metrics_port}/_matrix/client/versions",
        ):
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(url)
            assert err.value.code == 404
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 0, stderr
    logged = log_file.read_text()
    assert "homeserver.access" in logged and "Processed request" in logged
    # %(request)s is filled per request ("GET-n"), and "-" outside requests.
    access = [line for line in logged.splitlines() if "Processed request" in line]
    assert any(" - GET-" in line for line in access), access
    assert "[SQL]" not in logged
    assert "Traceback" not in logged + stderr


def test_unusable_log_config_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "log.yaml").write_text(
        textwrap.dedent("""\
        version: 1
        handlers:
          h: {class: no.such.Handler}
        root: {handlers: [h]}
    """)
    )
    (tmp_path / "hs.yaml").write_text(
        yaml.safe_dump({"server_name": "x.test", "log_config": "log.yaml"})
    )
    result = subprocess.run(
        [sys.executable, "-m", "homeserver", "-c", "hs.yaml"],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "log_config" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("target", "logged"),
    [
        # Logged as received (a /sync filter's query is not decoded and re-encoded).
        ("/_matrix/client/v3/sync?filter=%7B%22room%22%7D&timeout=30000",
         "/_matrix/client/v3/sync?filter=%7B%22room%22%7D&timeout=30000"),
        ("/_matrix/client/v3/profile/%40a%3Ab", "/_matrix/client/v3/profile/%40a%3Ab"),
        # Secrets redacted, however their key is spelled.
        ("/x?access_token=s3cret&since=1", "/x?access_token=<redacted>&since=1"),
        ("/x?access%5Ftoken=s3cret", "/x?access_token=<redacted>"),
        ("/x?a=1&login_token=s3cret", "/x?a=1&login_token=<redacted>"),
        ("/x?client_secret=s3cret&token=t0k", "/x?client_secret=<redacted>&token=<redacted>"),
    ],
)  # fmt: skip
def test_request_lines_redact_secrets_and_log_the_rest_as_received(
    target: str, logged: str
) -> None:
    from aiohttp.test_utils import make_mocked_request

    from homeserver.request_log import redacted_uri

    assert redacted_uri(make_mocked_request("GET", target)) == logged
