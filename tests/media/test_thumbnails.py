"""Thumbnails through the client API (issue 12): the configured sizes, the choice of
the closest stored one, exact sizes with dynamic_thumbnails, output types, EXIF
orientation, animation, and images we refuse to decode."""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from PIL import Image

from homeserver.app import create_app
from tests.client.helpers import auth, make_user
from tests.media.test_media_api import V1, upload


def image_bytes(size: tuple[int, int], fmt: str, mode: str = "RGB", **save: Any) -> bytes:
    img = Image.new(mode, size, (200, 30, 30) if mode == "RGB" else (200, 30, 30, 128))
    # A diagonal so that orientation and cropping are visible in the pixels.
    for i in range(min(size)):
        img.putpixel((i, i), (0, 0, 255) if mode == "RGB" else (0, 0, 255, 255))
    out = io.BytesIO()
    img.save(out, fmt, **save)
    return out.getvalue()


async def thumb(
    client: TestClient, token: str, ref: str, w: int, h: int, method: str, **extra: str
) -> tuple[int, Any, Image.Image | None]:
    params = {"width": str(w), "height": str(h), "method": method, **extra}
    resp = await client.get(f"{V1}/thumbnail/{ref}", params=params, headers=auth(token))
    data = await resp.read()
    if resp.status != 200:
        return resp.status, await resp.json(), None
    img = Image.open(io.BytesIO(data))
    return resp.status, resp.headers, img


@pytest.fixture
async def client(aiohttp_client: Any, tmp_config: Any) -> TestClient:
    return await aiohttp_client(create_app(tmp_config()))


async def test_crop_and_scale_pick_the_closest_stored_size(client: TestClient) -> None:
    _, token, _ = await make_user(client, "alice")
    ref = await upload(client, token, image_bytes((1000, 800), "JPEG"), "image/jpeg")
    cases = [
        # (asked, method) -> size served (from 32x32, 96x96 crop; 320x240, 640x480, 800x600 scale)
        ((96, 96), "crop", (96, 96)),
        ((50, 50), "crop", (96, 96)),
        ((20, 20), "crop", (32, 32)),
        ((320, 240), "scale", (300, 240)),
        ((700, 500), "scale", (750, 600)),
        ((100, 100), "scale", (300, 240)),
        ((4000, 4000), "scale", (750, 600)),
    ]
    for (w, h), method, expected in cases:
        status, headers, img = await thumb(client, token, ref, w, h, method)
        assert status == 200, headers
        assert img is not None and img.size == expected, (w, h, method)
        assert headers["Content-Type"] == "image/jpeg" and img.format == "JPEG"


async def test_dynamic_thumbnails_have_the_exact_size(aiohttp_client: Any, tmp_config: Any) -> None:
    client = await aiohttp_client(create_app(tmp_config(dynamic_thumbnails=True)))
    _, token, _ = await make_user(client, "alice")
    ref = await upload(client, token, image_bytes((1000, 800), "PNG"), "image/png")
    status, headers, img = await thumb(client, token, ref, 123, 45, "crop")
    assert status == 200 and img is not None and img.size == (123, 45)
    status, headers, img = await thumb(client, token, ref, 123, 456, "scale")
    assert img is not None and img.size == (123, 98)
    # A scale never enlarges.
    status, headers, img = await thumb(client, token, ref, 2000, 2000, "scale")
    assert img is not None and img.size == (1000, 800)
    assert headers["Content-Type"] == "image/png"


async def test_output_types_follow_the_source(client: TestClient) -> None:
    _, token, _ = await make_user(client, "alice")
    cases = [
        (image_bytes((400, 300), "PNG"), "image/png", "image/png"),
        (image_bytes((400, 300), "GIF"), "image/gif", "image/png"),
        (image_bytes((400, 300), "WEBP"), "image/webp", "image/jpeg"),
        (image_bytes((400, 300), "WEBP", mode="RGBA"), "image/webp", "image/png"),
        (image_bytes((400, 300), "PNG", mode="RGBA"), "image/png", "image/png"),
    ]
    for data, source_type, expected in cases:
        ref = await upload(client, token, data, source_type)
        status, headers, img = await thumb(client, token, ref, 96, 96, "crop")
        assert status == 200, (source_type, headers)
        assert headers["Content-Type"] == expected, source_type
        assert img is not None and img.size == (96, 96)


async def test_exif_orientation_is_applied(client: TestClient) -> None:
    _, token, _ = await make_user(client, "alice")
    img = Image.new("RGB", (800, 400), (10, 200, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    out = io.BytesIO()
    img.save(out, "JPEG", exif=exif.tobytes())
    ref = await upload(client, token, out.getvalue(), "image/jpeg")
    status, _, thumbnail = await thumb(client, token, ref, 320, 240, "scale")
    assert status == 200 and thumbnail is not None
    assert thumbnail.height > thumbnail.width  # shown portrait, as the phone took it
    assert thumbnail.size == (120, 240)


async def test_animated_thumbnails_are_animated_webp(client: TestClient) -> None:
    _, token, _ = await make_user(client, "alice")
    frames = [Image.new("RGB", (200, 200), (i * 60, 0, 0)) for i in range(4)]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    ref = await upload(client, token, out.getvalue(), "image/gif")
    status, headers, img = await thumb(client, token, ref, 96, 96, "crop", animated="true")
    assert status == 200, headers
    assert headers["Content-Type"] == "image/webp"
    assert img is not None and img.size == (96, 96) and getattr(img, "n_frames", 1) == 4
    # Without animated=true: a still PNG.
    status, headers, img = await thumb(client, token, ref, 96, 96, "crop")
    assert headers["Content-Type"] == "image/png" and getattr(img, "n_frames", 1) == 1


def png_bomb(width: int, height: int) -> bytes:
    """A valid PNG header claiming width x height, with a tiny (truncated) body."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = zlib.compress(b"\x00" * 1000)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (png_bomb(50_000, 50_000), "image/png"),  # 2.5 gigapixels
        (b"not an image at all", "image/png"),
        (image_bytes((300, 300), "PNG")[:200], "image/png"),  # truncated
        (image_bytes((300, 300), "BMP"), "image/png"),  # a decoder we never enable
        (b"%PDF-1.4 ...", "application/pdf"),
    ],
    ids=["bomb", "not-an-image", "truncated", "bmp-as-png", "pdf"],
)
async def test_images_we_will_not_decode_get_400_and_the_server_stays_up(
    client: TestClient, data: bytes, content_type: str
) -> None:
    _, token, _ = await make_user(client, "alice")
    ref = await upload(client, token, data, content_type)
    for _ in range(2):  # the second answer comes from the remembered failure
        status, body, _img = await thumb(client, token, ref, 96, 96, "crop")
        assert status == 400, body
        assert body["errcode"] == "M_UNKNOWN"
    resp = await client.get(f"{V1}/download/{ref}", headers=auth(token))
    assert resp.status == 200 and await resp.read() == data
