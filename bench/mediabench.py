#!/usr/bin/env python3
"""mediabench.py - the content repository of any homeserver, through the client API.

  mediabench.py --base-url URL --pid PID [--label L] [--size-mb 10] [--rounds 5]

Registers a user, then measures (one JSON object on stdout, progress on stderr):
- `upload`/`download`: `--rounds` uploads and downloads of a `--size-mb` file of random
  bytes (sent and read in 64 KiB chunks); median seconds and MB/s, the server's CPU
  seconds per transfer, and how far its resident memory rose above the level it had
  before the transfer (VmRSS sampled every 5 ms; `rss_growth_kb` is the largest rise).
- `thumbnail_cached`: `--requests` requests of a 320x240 thumbnail that already exists,
  `--concurrency` in flight: requests/s, p50/p99 latency and CPU per request.
- `first_thumbnail`: a fresh 4000x3000 JPEG per round: upload time, then the time of
  the first 320x240 thumbnail request after the upload returned (median); what a user
  waits for between posting a photo and everyone seeing its preview is their sum.
- the server's peak RSS (VmHWM) at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import secrets
import statistics
import sys
import time
from typing import Any

import aiohttp

CHUNK = 64 * 1024


def log(msg: str) -> None:
    print(f"[mediabench] {msg}", file=sys.stderr, flush=True)


def proc_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_kb(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round((len(s) - 1) * p / 100)))]


class RssWatch:
    """The largest VmRSS rise above the value at start, sampled every 5 ms."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.base = proc_kb(pid, "VmRSS")
        self.peak = self.base
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.peak = max(self.peak, proc_kb(self.pid, "VmRSS"))
            await asyncio.sleep(0.005)

    def __enter__(self) -> RssWatch:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        self.peak = max(self.peak, proc_kb(self.pid, "VmRSS"))

    @property
    def growth_kb(self) -> int:
        return self.peak - self.base


async def register(http: aiohttp.ClientSession, base: str) -> str:
    body: dict[str, Any] = {"username": "mb" + secrets.token_hex(4), "password": "pw-bench-1"}
    async with http.post(f"{base}/_matrix/client/v3/register", json=body) as r:
        first = await r.json()
    if "access_token" in first:
        return first["access_token"]
    body["auth"] = {"type": "m.login.dummy", "session": first["session"]}
    async with http.post(f"{base}/_matrix/client/v3/register", json=body) as r:
        data = await r.json()
        assert r.status == 200, data
        return data["access_token"]


async def upload(
    http: aiohttp.ClientSession, base: str, token: str, data: bytes, ctype: str
) -> str:
    async def chunks():  # type: ignore[no-untyped-def]
        for i in range(0, len(data), CHUNK):
            yield data[i : i + CHUNK]

    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": ctype,
        "Content-Length": str(len(data)),
    }
    async with http.post(f"{base}/_matrix/media/v3/upload", data=chunks(), headers=headers) as r:
        body = await r.json()
        assert r.status == 200, body
        return body["content_uri"][len("mxc://") :]


async def download(http: aiohttp.ClientSession, url: str, token: str) -> int:
    size = 0
    async with http.get(url, headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status == 200, (r.status, await r.text())
        async for chunk in r.content.iter_chunked(CHUNK):
            size += len(chunk)
    return size


def jpeg(width: int, height: int, seed: int) -> bytes:
    from PIL import Image

    img = Image.effect_noise((width // 8, height // 8), 64 + seed % 32).resize((width, height))
    out = io.BytesIO()
    img.convert("RGB").save(out, "JPEG", quality=90)
    return out.getvalue()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--label", default="")
    ap.add_argument("--size-mb", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=20)
    args = ap.parse_args()
    base, pid = args.base_url.rstrip("/"), args.pid
    out: dict[str, Any] = {"label": args.label}
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        token = await register(http, base)
        data = os.urandom(args.size_mb * 1024 * 1024)
        await upload(http, base, token, data[: 1024 * 1024], "application/octet-stream")

        log("upload/download")
        for kind in ("upload", "download"):
            times, cpus, growth = [], [], []
            refs: list[str] = []
            for _ in range(args.rounds):
                cpu0 = proc_cpu_s(pid)
                with RssWatch(pid) as watch:
                    t0 = time.perf_counter()
                    if kind == "upload":
                        refs.append(await upload(http, base, token, data, "application/zip"))
                    else:
                        url = f"{base}/_matrix/client/v1/media/download/{out['_ref']}"
                        assert await download(http, url, token) == len(data)
                    times.append(time.perf_counter() - t0)
                cpus.append(proc_cpu_s(pid) - cpu0)
                growth.append(watch.growth_kb)
            if kind == "upload":
                out["_ref"] = refs[-1]
            med = statistics.median(times)
            out[kind] = {
                "median_s": round(med, 4),
                "mb_per_s": round(args.size_mb / med, 1),
                "cpu_s": round(statistics.median(cpus), 4),
                "rss_growth_kb": max(growth),
                "rss_growth_kb_median": statistics.median(growth),
            }
            log(f"{kind}: {out[kind]}")
        out.pop("_ref")

        log("cached thumbnail")
        ref = await upload(http, base, token, jpeg(1000, 800, 1), "image/jpeg")
        url = f"{base}/_matrix/client/v1/media/thumbnail/{ref}?width=320&height=240&method=scale"
        auth = {"Authorization": f"Bearer {token}"}
        for _ in range(5):
            async with http.get(url, headers=auth) as r:
                assert r.status == 200, await r.text()
                await r.read()
        latencies: list[float] = []
        remaining = args.requests

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                t = time.perf_counter()
                async with http.get(url, headers=auth) as r:
                    await r.read()
                    assert r.status == 200
                latencies.append(time.perf_counter() - t)

        cpu0 = proc_cpu_s(pid)
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        wall = time.perf_counter() - t0
        cpu = proc_cpu_s(pid) - cpu0
        out["thumbnail_cached"] = {
            "requests_per_s": round(args.requests / wall, 1),
            "p50_ms": round(pct(latencies, 50) * 1000, 2),
            "p99_ms": round(pct(latencies, 99) * 1000, 2),
            "cpu_ms_per_request": round(cpu * 1000 / args.requests, 3),
        }
        log(f"thumbnail_cached: {out['thumbnail_cached']}")

        log("first thumbnail of a 4000x3000 JPEG")
        uploads, firsts, cpus2 = [], [], []
        for i in range(args.rounds):
            photo = jpeg(4000, 3000, i + 10)
            cpu0 = proc_cpu_s(pid)
            t0 = time.perf_counter()
            ref = await upload(http, base, token, photo, "image/jpeg")
            t1 = time.perf_counter()
            turl = (
                f"{base}/_matrix/client/v1/media/thumbnail/{ref}?width=320&height=240&method=scale"
            )
            async with http.get(turl, headers=auth) as r:
                await r.read()
                assert r.status == 200
            t2 = time.perf_counter()
            await asyncio.sleep(1.0)  # let background thumbnailing finish before the CPU read
            cpus2.append(proc_cpu_s(pid) - cpu0)
            uploads.append(t1 - t0)
            firsts.append(t2 - t1)
        out["first_thumbnail"] = {
            "jpeg_bytes": len(photo),
            "upload_median_ms": round(statistics.median(uploads) * 1000, 1),
            "first_thumbnail_median_ms": round(statistics.median(firsts) * 1000, 1),
            "upload_plus_thumbnail_median_ms": round(
                statistics.median(u + f for u, f in zip(uploads, firsts, strict=True)) * 1000, 1
            ),
            "cpu_s_per_photo": round(statistics.median(cpus2), 3),
        }
        log(f"first_thumbnail: {out['first_thumbnail']}")
    out["peak_rss_mb"] = round(proc_kb(pid, "VmHWM") / 1024, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main())
