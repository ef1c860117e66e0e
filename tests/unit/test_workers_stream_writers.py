"""Stream writers among the client readers (`stream_writers: {account_data, to_device,
receipts, push_rules, device_lists, typing: [...]}`): which processes write, what they
need (a replication listener for the streams other servers send EDUs for), and the
routes each serves (issue 16)."""

from __future__ import annotations

from pathlib import Path

import pytest

from homeserver.config import ConfigError, load_config
from homeserver.config.workers import EDU_STREAMS
from homeserver.replication.forward import served_here, writes_stream
from homeserver.replication.nginx import Upstreams, render
from tests.unit.test_workers_config import PG, WORKER_BITS, write

# The client readers' replication listeners (where a stream writer gets other servers'
# EDUs of its streams).
READERS_MAP = "  reader1: {port: 9111}\n  reader2: {port: 9112}\n"


def _shared_file(tmp_path: Path, stream_writers: str, readers_map: str = READERS_MAP) -> Path:
    """The deployment's shared config with these `stream_writers` (YAML flow text)."""
    bits = WORKER_BITS.replace(
        "instance_map: {main: {host: 127.0.0.1, port: 9093}}\n",
        "instance_map:\n  main: {host: 127.0.0.1, port: 9093}\n" + readers_map,
    )
    return write(
        tmp_path / "hs.yaml",
        "server_name: example.com\n" + PG + bits + f"stream_writers: {stream_writers}\n",
    )


def _reader_file(tmp_path: Path, name: str, replication: bool = True) -> Path:
    """A client reader's own config file (with a replication listener, or without)."""
    listeners = "{port: 8101, resources: [{names: [client]}]}"
    if replication:
        listeners += ", {port: 9111, resources: [{names: [replication]}]}"
    return write(
        tmp_path / f"{name}.yaml",
        f"worker_app: generic_worker\nworker_name: {name}\nworker_listeners: [{listeners}]\n",
    )


@pytest.mark.parametrize("stream", ["to_device", "receipts", "device_lists", "typing", "presence"])
def test_writers_of_streams_with_edus_need_a_replication_listener(
    tmp_path: Path, stream: str
) -> None:
    """Federation inbound workers hand a writer of typing, receipts, to-device, device
    lists or presence other servers' EDUs of its stream: it must be reachable."""
    shared = _shared_file(tmp_path, f"{{{stream}: [reader1]}}")
    reader = load_config(shared, _reader_file(tmp_path, "reader1")).workers
    assert reader.reader_streams == {stream}
    with pytest.raises(ConfigError) as caught:
        load_config(shared, _reader_file(tmp_path, "reader1", replication=False))
    assert "worker_listeners: a writer of the typing" in "\n".join(caught.value.problems)
    unmapped = _shared_file(tmp_path, f"{{{stream}: [reader1]}}", readers_map="")
    with pytest.raises(ConfigError) as caught:
        load_config(unmapped)
    assert "instance_map.reader1: required" in "\n".join(caught.value.problems)
    # Streams nobody sends EDUs for need neither.
    plain = _shared_file(tmp_path, "{account_data: [reader1], push_rules: [reader1]}", "")
    no_listener = _reader_file(tmp_path, "reader1", replication=False)
    assert load_config(plain, no_listener).workers.reader_streams == {
        "account_data",
        "push_rules",
    }


def test_account_data_writers_are_named_readers_that_share_the_write_lock(
    tmp_path: Path,
) -> None:
    shared = _shared_file(tmp_path, "{account_data: [main, reader1]}")
    main = load_config(shared).workers
    assert main.account_data_writers == ("reader1",) and main.writes_account_data
    # Another process writes a stream: write transactions take the deployment's lock.
    assert main.shared_writers and not main.event_persisters
    reader = _reader_file(tmp_path, "reader1")
    assert load_config(shared, reader).workers.writes_account_data
    other = _reader_file(tmp_path, "reader2")
    assert not load_config(shared, other).workers.writes_account_data
    # Only on main alone: the same as no setting.
    alone = write(tmp_path / "alone.yaml", shared.read_text().replace(", reader1", ""))
    assert not load_config(alone).workers.shared_writers
    twice = write(tmp_path / "twice.yaml", shared.read_text().replace("main, ", "reader1, "))
    with pytest.raises(ConfigError) as caught:
        load_config(twice)
    assert "names a process twice" in "\n".join(caught.value.problems)
    # The routes such a reader serves, and nginx sends to the readers.
    c = "/_matrix/client/v3"
    for method, path in (
        ("PUT", f"{c}/user/@a:x/account_data/m.direct"),
        ("PUT", f"{c}/user/@a:x/rooms/!r:x/account_data/org.example"),
        ("PUT", f"{c}/user/@a:x/rooms/!r:x/tags/u.work"),
        ("DELETE", f"{c}/user/@a:x/rooms/!r:x/tags/u.work"),
    ):
        assert writes_stream({"account_data"}, method, path), (method, path)
    for method, path in (
        ("GET", f"{c}/user/@a:x/account_data/m.direct"),
        ("PUT", f"{c}/user/@a:x/filter"),
        ("PUT", f"{c}/rooms/!r:x/read_markers"),
    ):
        assert not writes_stream({"account_data"}, method, path), (method, path)
    routed = render(
        Upstreams(
            main="127.0.0.1:8008",
            client_readers=["127.0.0.1:8101"],
            streams_to_readers=frozenset({"account_data"}),
        )
    )
    assert '/tags/[^/]+$" client_readers;' in routed
    plain = render(Upstreams(main="127.0.0.1:8008", client_readers=["127.0.0.1:8101"]))
    assert "/tags/" not in plain


def test_to_device_writers_serve_send_to_device_and_share_the_write_lock(
    tmp_path: Path,
) -> None:
    shared = _shared_file(tmp_path, "{to_device: reader1, account_data: [reader2]}")
    main = load_config(shared).workers
    assert main.to_device_writers == ("reader1",) and main.writes_to_device
    assert main.shared_writers and main.reader_streams == frozenset()
    reader = _reader_file(tmp_path, "reader1")
    one = load_config(shared, reader).workers
    assert one.writes_to_device and not one.writes_account_data
    assert one.reader_streams == frozenset({"to_device"})
    other = _reader_file(tmp_path, "reader2")
    assert load_config(shared, other).workers.reader_streams == frozenset({"account_data"})
    c = "/_matrix/client/v3"
    assert writes_stream({"to_device"}, "PUT", f"{c}/sendToDevice/m.room.encrypted/t1")
    assert not writes_stream({"account_data"}, "PUT", f"{c}/sendToDevice/m.room.encrypted/t1")
    assert not writes_stream({"to_device"}, "GET", f"{c}/sendToDevice/m.room.encrypted/t1")
    assert not writes_stream({"to_device"}, "PUT", f"{c}/user/@a:x/account_data/m.direct")
    routed = render(
        Upstreams(
            main="127.0.0.1:8008",
            client_readers=["127.0.0.1:8101"],
            streams_to_readers=frozenset({"to_device"}),
        )
    )
    [line] = [line for line in routed.splitlines() if "sendToDevice" in line]
    assert line.strip().startswith('"~^PUT ') and line.endswith(" client_readers;")
    assert "/tags/" not in routed
    unknown = write(
        tmp_path / "bad.yaml",
        shared.read_text().replace("to_device: reader1", "caches: reader1"),
    )
    with pytest.raises(ConfigError) as caught:
        load_config(unknown)
    problems = "\n".join(caught.value.problems)
    assert (
        "only the events, account_data, to_device, receipts, push_rules, device_lists, typing"
        in problems
    )


def test_receipt_writers_serve_receipts_and_read_markers_with_account_data(
    tmp_path: Path,
) -> None:
    shared = _shared_file(tmp_path, "{receipts: [reader1, reader2], account_data: [reader1]}")
    main = load_config(shared).workers
    assert main.receipts_writers == ("reader1", "reader2") and main.writes_receipts
    assert main.shared_writers and main.reader_streams == frozenset()
    reader = _reader_file(tmp_path, "reader1")
    one = load_config(shared, reader).workers
    assert one.reader_streams == frozenset({"receipts", "account_data"})
    assert one.writes_receipts and one.writes_account_data and not one.writes_to_device
    two = load_config(shared, _reader_file(tmp_path, "reader2"))
    assert two.workers.reader_streams == frozenset({"receipts"})
    c = "/_matrix/client/v3"
    public = f"{c}/rooms/!r:x/receipt/m.read/$e"
    private = f"{c}/rooms/!r:x/receipt/m.read.private/$e"
    fully_read = f"{c}/rooms/!r:x/receipt/m.fully_read/$e"
    markers = f"{c}/rooms/!r:x/read_markers"
    # Receipts alone: m.read and m.read.private; a marker may write account data too.
    for streams, served, forwarded in (
        ({"receipts"}, (public, private), (fully_read, markers)),
        ({"receipts", "account_data"}, (public, private, fully_read, markers), ()),
        ({"account_data"}, (), (public, private, fully_read, markers)),
    ):
        for path in served:
            assert writes_stream(streams, "POST", path), (streams, path)
        for path in forwarded:
            assert not writes_stream(streams, "POST", path), (streams, path)
    assert not writes_stream({"receipts"}, "GET", public)
    routed = render(
        Upstreams(
            main="127.0.0.1:8008",
            client_readers=["127.0.0.1:8101"],
            streams_to_readers=frozenset({"receipts"}),
        )
    )
    assert "/receipt/m\\.read" in routed and "read_markers" not in routed
    both = render(
        Upstreams(
            main="127.0.0.1:8008",
            client_readers=["127.0.0.1:8101"],
            streams_to_readers=frozenset({"receipts", "account_data"}),
        )
    )
    assert 'read_markers$" client_readers;' in both


def test_push_rule_writers_serve_rule_changes_with_account_data(tmp_path: Path) -> None:
    shared = _shared_file(tmp_path, "{push_rules: [reader1], account_data: [reader1]}")
    reader = _reader_file(tmp_path, "reader1")
    one = load_config(shared, reader).workers
    assert one.reader_streams == frozenset({"push_rules", "account_data"})
    assert one.writes("push_rules") and load_config(shared).workers.shared_writers
    c = "/_matrix/client/v3"
    rule = f"{c}/pushrules/global/override/mute"
    changes = (
        ("PUT", rule),
        ("DELETE", rule),
        ("PUT", f"{rule}/enabled"),
        ("PUT", f"{c}/pushrules/global/override/.m.rule.master/actions"),
    )
    for method, path in changes:
        assert writes_stream({"push_rules", "account_data"}, method, path), (method, path)
        # Each change rewrites m.push_rules account data: both streams are needed.
        assert not writes_stream({"push_rules"}, method, path), (method, path)
    assert not writes_stream({"push_rules", "account_data"}, "GET", rule)
    routed = render(
        Upstreams(
            main="127.0.0.1:8008",
            client_readers=["127.0.0.1:8101"],
            streams_to_readers=frozenset({"push_rules", "account_data"}),
        )
    )

    def rule_writes(config: str) -> list[str]:
        return [
            line.strip().split()[0]
            for line in config.splitlines()
            if "/pushrules/" in line and line.strip().startswith(('"~^PUT', '"~^DELETE'))
        ]

    assert rule_writes(routed) == ['"~^PUT', '"~^DELETE']
    alone = Upstreams(
        main="127.0.0.1:8008",
        client_readers=["127.0.0.1:8101"],
        streams_to_readers=frozenset({"push_rules"}),
    )
    assert rule_writes(render(alone)) == []  # without account data writers: the main


def test_device_list_writers_serve_key_uploads_and_queue_edus(tmp_path: Path) -> None:
    shared = _shared_file(tmp_path, "{device_lists: [reader1]}")
    one = load_config(shared, _reader_file(tmp_path, "reader1")).workers
    assert one.reader_streams == frozenset({"device_lists"}) and one.writes("device_lists")
    assert load_config(shared).workers.shared_writers
    c = "/_matrix/client/v3"
    assert writes_stream({"device_lists"}, "POST", f"{c}/keys/upload")
    assert writes_stream({"device_lists"}, "POST", "/_matrix/client/r0/keys/upload/DEVICE")
    assert writes_stream({"device_lists"}, "PUT", f"{c}/devices/DEVICE")  # a rename
    assert writes_stream({"device_lists"}, "POST", f"{c}/keys/signatures/upload")
    assert writes_stream({"device_lists"}, "POST", f"{c}/keys/device_signing/upload")
    # Claims take one-time keys (one write under the deployment's lock; the appservice
    # sender hears of it over the bus from a writer); queries are every reader's reads.
    assert writes_stream({"device_lists"}, "POST", f"{c}/keys/claim")
    assert not writes_stream({"account_data"}, "POST", f"{c}/keys/claim")
    assert served_here("POST", f"{c}/keys/query")
    assert not served_here("POST", f"{c}/keys/claim")
    for method, path in (
        ("POST", f"{c}/keys/query"),
        ("GET", f"{c}/keys/upload"),
    ):
        assert not writes_stream({"device_lists"}, method, path), (method, path)
    # Sessions and device deletions (user-interactive auth sessions are in the database).
    assert served_here("GET", f"{c}/login")  # the flows
    for method, path in (
        ("POST", f"{c}/login"),
        ("POST", "/_matrix/client/v1/login/get_token"),
        ("POST", "/_matrix/client/v1/refresh"),
        ("POST", f"{c}/refresh"),
        ("POST", f"{c}/logout"),
        ("POST", "/_matrix/client/r0/logout/all"),
        ("DELETE", f"{c}/devices/DEVICE"),
        ("POST", f"{c}/delete_devices"),
    ):
        assert writes_stream({"device_lists"}, method, path), (method, path)
        assert not writes_stream({"to_device", "typing"}, method, path), (method, path)
    # Its EDUs (m.device_list_update) go to the durable outbox: a queue-only sender.
    assert "device_lists" in EDU_STREAMS


def test_typing_writers_serve_typing_and_queue_edus(tmp_path: Path) -> None:
    shared = _shared_file(tmp_path, "{typing: [reader1, reader2]}")
    one = load_config(shared, _reader_file(tmp_path, "reader1")).workers
    assert one.reader_streams == frozenset({"typing"}) and one.writes("typing")
    c = "/_matrix/client/v3"
    assert writes_stream({"typing"}, "PUT", f"{c}/rooms/!r:x/typing/@a:x")
    assert not writes_stream({"typing"}, "GET", f"{c}/rooms/!r:x/typing/@a:x")
    assert not writes_stream({"receipts"}, "PUT", f"{c}/rooms/!r:x/typing/@a:x")
    assert "typing" in EDU_STREAMS


def test_presence_has_one_writer_and_the_main_stops_writing_it(tmp_path: Path) -> None:
    """`stream_writers: {presence: [reader1]}`: reader1 alone writes presence (its
    timers run there, the others report to it); without it, the main does."""
    shared = _shared_file(tmp_path, "{presence: [reader1], typing: [reader1, reader2]}")
    main = load_config(shared).workers
    reader1 = load_config(shared, _reader_file(tmp_path, "reader1")).workers
    reader2 = load_config(shared, _reader_file(tmp_path, "reader2")).workers
    assert main.single_writer("presence") == "reader1"
    assert [c.writes("presence") for c in (main, reader1, reader2)] == [False, True, False]
    assert [c.writes("typing") for c in (main, reader1, reader2)] == [True, True, True]
    assert reader1.reader_streams == {"presence", "typing"}
    assert reader2.reader_streams == {"typing"}
    plain = load_config(_shared_file(tmp_path, "{typing: [reader1]}")).workers
    assert plain.single_writer("presence") == "main" and plain.writes("presence")
    # A presence change is served by every reader (handed to the writer from there).
    path = "/_matrix/client/v3/presence/%40a%3Aexample.com/status"
    assert served_here("PUT", path) and served_here("GET", path)
