"""Response headers for served media: type, disposition, sandboxing, caching.

Media bytes come from anyone, so a browser must never run them in our origin: types
outside an allow-list are served as attachments, SVG and HTML included, and every
download carries a sandboxing Content-Security-Policy and `nosniff`. Filenames are
percent-encoded (RFC 6266 / RFC 5987) unless they are a plain HTTP token.
"""

from __future__ import annotations

from urllib.parse import quote

# Shown inline: pictures, audio and video that browsers render without scripts, and
# plain text. (Element's list of safe types; SVG and HTML deliberately absent.)
INLINE_TYPES = frozenset(
    {
        "text/css",
        "text/plain",
        "text/csv",
        "application/json",
        "application/ld+json",
        "image/jpeg",
        "image/gif",
        "image/png",
        "image/apng",
        "image/webp",
        "image/avif",
        "video/mp4",
        "video/webm",
        "video/ogg",
        "video/quicktime",
        "audio/mp4",
        "audio/webm",
        "audio/aac",
        "audio/mpeg",
        "audio/ogg",
        "audio/wave",
        "audio/wav",
        "audio/x-wav",
        "audio/x-pn-wav",
        "audio/flac",
        "audio/x-flac",
    }
)

# Text types a browser should decode as UTF-8 when the uploader named no charset.
_TEXT_TYPES = frozenset(
    {
        "text/css",
        "text/csv",
        "text/html",
        "text/calendar",
        "text/plain",
        "text/javascript",
        "application/json",
        "application/ld+json",
        "application/rtf",
        "image/svg+xml",
        "text/xml",
    }
)

SANDBOX_CSP = (
    "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf;"
    " style-src 'unsafe-inline'; media-src 'self'; object-src 'self';"
)

_TOKEN_SEPARATORS = frozenset('()<>@,;:\\"/[]?={}')

DEFAULT_CONTENT_TYPE = "application/octet-stream"


def _base_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def clean_content_type(value: str | None) -> str:
    """The uploader's Content-Type if it is a plausible header value, else the default."""
    if not value or len(value) > 255 or not value.isprintable() or "\n" in value:
        return DEFAULT_CONTENT_TYPE
    if "/" not in _base_type(value):
        return DEFAULT_CONTENT_TYPE
    return value.strip()


def served_content_type(content_type: str) -> str:
    if _base_type(content_type) in _TEXT_TYPES and "charset" not in content_type.lower():
        return content_type + "; charset=utf-8"
    return content_type


def _is_token(name: str) -> bool:
    return all(32 < ord(c) < 127 and c not in _TOKEN_SEPARATORS for c in name)


def content_disposition(content_type: str, filename: str | None) -> str:
    disposition = "inline" if _base_type(content_type) in INLINE_TYPES else "attachment"
    if filename:
        if _is_token(filename):
            return f"{disposition}; filename={filename}"
        return f"{disposition}; filename*=utf-8''{quote(filename.encode('utf-8'), safe='')}"
    return disposition


def media_headers(content_type: str, filename: str | None) -> dict[str, str]:
    """Every header of a media download (the body's length is added by the sender)."""
    return {
        "Content-Type": served_content_type(content_type),
        "Content-Disposition": content_disposition(content_type, filename),
        "Content-Security-Policy": SANDBOX_CSP,
        "X-Content-Type-Options": "nosniff",
        "Cross-Origin-Resource-Policy": "cross-origin",
        "X-Robots-Tag": "noindex, nofollow, noarchive, noimageindex",
        # Media never changes once uploaded.
        "Cache-Control": "public,max-age=86400,s-maxage=0,proxy-revalidate",
    }


def clean_filename(value: str | None) -> str | None:
    """An upload's name as given, unless it could break a header or a path."""
    if value is None:
        return None
    value = value.strip()
    if not value or len(value) > 255 or any(c in value for c in "\x00\r\n"):
        return None
    if not value.isprintable():
        return None
    return value
