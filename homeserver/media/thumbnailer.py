"""Thumbnails with Pillow: pure functions of a file, run on worker threads.

Only the JPEG, PNG, GIF and WebP decoders are ever used (Image.open's `formats`), so
an upload cannot reach Pillow's less-travelled parsers. An image whose header claims
more than `max_pixels` pixels is refused before any pixel is decoded (decompression
bombs). EXIF orientation is applied, so phone photos are not shown sideways.

Output: JPEG for JPEG and opaque WebP sources, PNG for PNG, GIF and anything with
transparency, animated WebP when an animation is asked for and the source moves.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, ImageSequence

DECODERS = ("JPEG", "PNG", "GIF", "WEBP")
THUMBNAIL_SOURCE_TYPES = frozenset(
    {"image/jpeg", "image/jpg", "image/pjpeg", "image/png", "image/gif", "image/webp"}
)
# An animated thumbnail decodes every frame: bound their number and total pixels.
MAX_ANIMATION_FRAMES = 100
JPEG_QUALITY = 80


class ThumbnailError(Exception):
    """The file is not an image we can (or may) thumbnail."""


@dataclass(frozen=True)
class ImageInfo:
    width: int
    height: int
    format: str
    frames: int


@dataclass(frozen=True)
class Rendered:
    width: int
    height: int
    method: str
    content_type: str
    data: bytes
    requested: tuple[int, int]


def _open(path: Path, max_pixels: int) -> Image.Image:
    try:
        img = Image.open(path, formats=DECODERS)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ThumbnailError(f"not a supported image: {e}") from e
    width, height = img.size
    if width < 1 or height < 1 or width * height > max_pixels:
        img.close()
        raise ThumbnailError(f"image of {width}x{height} pixels is too large")
    return img


def probe(path: Path, max_pixels: int) -> ImageInfo:
    """Size and format from the header only."""
    with _open(path, max_pixels) as img:
        return ImageInfo(img.width, img.height, img.format or "", getattr(img, "n_frames", 1))


def scaled_size(
    src_w: int, src_h: int, max_w: int, max_h: int, upscale: bool = False
) -> tuple[int, int]:
    """The largest size with the source's aspect ratio that fits in max_w x max_h."""
    if max_w * src_h < max_h * src_w:
        w, h = max_w, max(1, max_w * src_h // src_w)
    else:
        w, h = max(1, max_h * src_w // src_h), max_h
    if not upscale and (w > src_w or h > src_h):
        return src_w, src_h
    return w, h


def output_size(src_w: int, src_h: int, width: int, height: int, method: str) -> tuple[int, int]:
    if method == "crop":
        return width, height
    return scaled_size(src_w, src_h, width, height)


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)


def _resize(img: Image.Image, width: int, height: int, method: str) -> Image.Image:
    if method == "crop":
        return ImageOps.fit(img, (width, height), Image.Resampling.LANCZOS)
    return img.resize((width, height), Image.Resampling.LANCZOS)


def _encode(img: Image.Image, source_format: str) -> tuple[bytes, str]:
    out = io.BytesIO()
    if source_format in ("JPEG", "WEBP") and not _has_alpha(img):
        img.convert("RGB").save(out, "JPEG", quality=JPEG_QUALITY, optimize=True)
        return out.getvalue(), "image/jpeg"
    if img.mode not in ("RGB", "RGBA", "L", "LA", "P"):
        img = img.convert("RGBA")
    img.save(out, "PNG", optimize=False)
    return out.getvalue(), "image/png"


def _animated(img: Image.Image, width: int, height: int, method: str) -> bytes:
    frames = []
    durations = []
    for frame in ImageSequence.Iterator(img):
        frames.append(_resize(frame.convert("RGBA"), width, height, method))
        durations.append(frame.info.get("duration", 100))
        if len(frames) >= MAX_ANIMATION_FRAMES:
            break
    out = io.BytesIO()
    frames[0].save(
        out,
        "WEBP",
        save_all=True,
        append_images=frames[1:],
        duration=durations,
        loop=img.info.get("loop", 0),
        quality=JPEG_QUALITY,
    )
    return out.getvalue()


def render(
    path: Path,
    sizes: list[tuple[int, int, str]],
    max_pixels: int,
    animated: bool = False,
) -> list[Rendered]:
    """Thumbnails of the image at `path` for each (width, height, method), decoding it
    once. A scale never enlarges the image; a crop has exactly the size asked for."""
    if not sizes:
        return []
    with _open(path, max_pixels) as img:
        source_format = img.format or ""
        frames = getattr(img, "n_frames", 1)
        moving = animated and frames > 1 and source_format in ("GIF", "WEBP", "PNG")
        if moving and img.width * img.height * min(frames, MAX_ANIMATION_FRAMES) > max_pixels:
            moving = False
        src_w, src_h = img.size
        targets = [(w, h, m, *output_size(src_w, src_h, w, h, m)) for w, h, m in sizes]
        try:
            if moving:
                return [
                    Rendered(ow, oh, m, "image/webp", _animated(img, ow, oh, m), (w, h))
                    for w, h, m, ow, oh in targets
                ]
            if source_format == "JPEG":
                # Let the decoder scale by 1/2..1/8 when that still covers every target.
                need_w = max(ow for *_, ow, _oh in targets)
                need_h = max(oh for *_, oh in targets)
                img.draft("RGB", (need_w, need_h))
            img.load()
            oriented = ImageOps.exif_transpose(img) or img
            if oriented.mode == "P" or oriented.mode == "1":
                oriented = oriented.convert("RGBA" if _has_alpha(oriented) else "RGB")
            elif oriented.mode not in ("RGB", "RGBA", "L", "LA"):
                oriented = oriented.convert("RGB")
            # After orientation, width and height may have swapped.
            src_w, src_h = oriented.size
            results = []
            for w, h, m in sizes:
                ow, oh = output_size(src_w, src_h, w, h, m)
                data, content_type = _encode(_resize(oriented, ow, oh, m), source_format)
                results.append(Rendered(ow, oh, m, content_type, data, (w, h)))
            return results
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            raise ThumbnailError(f"cannot decode image: {e}") from e
