"""Ports for the servers tests start, chosen so nothing else takes them before they bind.

A test picks a port, writes it into a config (a server's name includes it) and the
server binds it a moment later, often in another process. A port the kernel reports
free (bind to port 0) comes from the ephemeral range, the range outgoing connections
take their source ports from: a database or HTTP client connecting in between took one
such port and the server's bind failed (EADDRINUSE, seen in CI). So ports come from
below that range, where only a listener that asks for a port by number binds; the
ones handed out are remembered so one test process never hands out a port twice.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

# Below the ephemeral range, above the well-known services a test machine may run.
_LOWEST = 10_000
_handed_out: set[int] = set()


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


def free_port() -> int:
    """A loopback TCP port nothing listens on, outside the ephemeral range, not handed
    out before by this process."""
    highest = _ephemeral_start()
    for _ in range(1000):
        port = random.randrange(_LOWEST, highest) if highest > _LOWEST + 1000 else 0
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            port = int(s.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("no free port below the ephemeral range")
