"""The media repository's keys (Synapse's names): sizes, thumbnails, previews, retention."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from homeserver.config.model import (
    DEFAULT_THUMBNAIL_SIZES,
    IPNetwork,
    MediaConfig,
    ThumbnailSize,
)
from homeserver.config.reader import Reader, describe
from homeserver.config.values import parse_duration_ms, parse_network, parse_size

MEDIA_KEYS = (
    "media_store_path",
    "enable_media_repo",
    "max_upload_size",
    "max_image_pixels",
    "dynamic_thumbnails",
    "thumbnail_sizes",
    "enable_authenticated_media",
    "max_pending_media_uploads",
    "unused_expiration_time",
    "media_retention",
    "url_preview_enabled",
    "url_preview_ip_range_blacklist",
    "url_preview_ip_range_whitelist",
    "url_preview_url_blacklist",
    "max_spider_size",
    "media_upload_limits",
    "prevent_media_downloads_from",
    "url_preview_accept_language",
)

_URL_COMPONENTS = frozenset(
    {"scheme", "netloc", "path", "params", "query", "fragment", "username", "password"}
)
_URL_COMPONENTS |= {"hostname", "port"}


def _thumbnail_sizes(r: Reader, top: Mapping[str, Any]) -> tuple[ThumbnailSize, ...]:
    items = r.list(top, "thumbnail_sizes", "")
    if items is None:
        return DEFAULT_THUMBNAIL_SIZES
    sizes = []
    for i, item in enumerate(items):
        where = f"thumbnail_sizes[{i}]"
        m = r.mapping(item, where)
        if m is None:
            if item is None:
                r.problem(where, "expected a mapping, got nothing")
            continue
        r.check_keys(m, {"width", "height", "method"}, where)
        width = r.int(m, "width", where, 0, lo=1, hi=10_000)
        height = r.int(m, "height", where, 0, lo=1, hi=10_000)
        method = r.str(m, "method", where, "scale")
        if method not in ("crop", "scale"):
            r.problem(f"{where}.method", f"expected crop or scale, got {method!r}")
            continue
        if width and height:
            sizes.append(ThumbnailSize(width, height, method))
    return tuple(sizes)


def _networks(r: Reader, top: Mapping[str, Any], key: str) -> tuple[IPNetwork, ...] | None:
    items = r.list(top, key, "")
    if items is None:
        return None
    out = []
    for i, item in enumerate(items):
        try:
            out.append(parse_network(item))
        except ValueError as exc:
            r.problem(f"{key}[{i}]", str(exc))
    return tuple(out)


def _url_blacklist(r: Reader, top: Mapping[str, Any]) -> tuple[tuple[tuple[str, str], ...], ...]:
    items = r.list(top, "url_preview_url_blacklist", "") or []
    rules = []
    for i, item in enumerate(items):
        where = f"url_preview_url_blacklist[{i}]"
        m = r.mapping(item, where)
        if not m:
            r.problem(where, "expected a mapping of URL components to patterns")
            continue
        r.check_keys(m, _URL_COMPONENTS, where)
        rule = []
        for component, pattern in m.items():
            if not isinstance(pattern, str):
                r.problem(f"{where}.{component}", f"expected a string, got {describe(pattern)}")
                continue
            if pattern.startswith("^"):
                try:
                    re.compile(pattern)
                except re.error as exc:
                    r.problem(f"{where}.{component}", f"bad regular expression: {exc}")
                    continue
            rule.append((str(component), pattern))
        if rule:
            rules.append(tuple(rule))
    return tuple(rules)


def _upload_limits(r: Reader, top: Mapping[str, Any]) -> tuple[tuple[int, int], ...]:
    limits = []
    for i, item in enumerate(r.list(top, "media_upload_limits", "") or []):
        where = f"media_upload_limits[{i}]"
        m = r.mapping(item, where)
        if m is None:
            continue
        r.check_keys(m, {"time_period", "max_size"}, where)
        period = r.converted(m, "time_period", where, None, parse_duration_ms)
        size = r.converted(m, "max_size", where, None, parse_size)
        if period is None or size is None:
            r.problem(where, "needs time_period and max_size")
            continue
        limits.append((period, size))
    return tuple(sorted(limits, reverse=True))


def _accept_language(r: Reader, top: Mapping[str, Any]) -> str:
    """Synapse's list (`["en-UK", "en;q=0.9", "*;q=0.5"]`) as one header value."""
    languages = r.str_list(top, "url_preview_accept_language", "") or ["en"]
    if any(not lang or any(c in lang for c in ",\r\n") for lang in languages):
        r.problem("url_preview_accept_language", "expected language tags like en or fr;q=0.9")
        return "en"
    return ", ".join(languages)


def read_media(r: Reader, top: Mapping[str, Any]) -> MediaConfig:
    retention = r.mapping(top.get("media_retention"), "media_retention") or {}
    r.check_keys(retention, {"local_media_lifetime", "remote_media_lifetime"}, "media_retention")
    preview_enabled = r.bool(top, "url_preview_enabled", "", False)
    blacklist = _networks(r, top, "url_preview_ip_range_blacklist")
    if preview_enabled and blacklist is None:
        r.problem(
            "url_preview_ip_range_blacklist",
            "required when url_preview_enabled is true (list the ranges a preview must "
            "never reach, e.g. your private network)",
        )
    return MediaConfig(
        store_path=r.path(top, "media_store_path", "", None) or r.resolve("media_store"),
        enable_media_repo=r.bool(top, "enable_media_repo", "", True),
        max_upload_size=r.converted(top, "max_upload_size", "", 50 * 1024**2, parse_size),
        max_image_pixels=r.converted(top, "max_image_pixels", "", 32 * 1024**2, parse_size),
        dynamic_thumbnails=r.bool(top, "dynamic_thumbnails", "", False),
        thumbnail_sizes=_thumbnail_sizes(r, top),
        enable_authenticated_media=r.bool(top, "enable_authenticated_media", "", True),
        max_pending_media_uploads=r.int(top, "max_pending_media_uploads", "", 5, lo=1),
        unused_expiration_time_ms=r.converted(
            top, "unused_expiration_time", "", 24 * 3600 * 1000, parse_duration_ms
        ),
        local_media_lifetime_ms=r.converted(
            retention, "local_media_lifetime", "media_retention", None, parse_duration_ms
        ),
        remote_media_lifetime_ms=r.converted(
            retention, "remote_media_lifetime", "media_retention", None, parse_duration_ms
        ),
        url_preview_enabled=preview_enabled,
        url_preview_ip_range_blacklist=blacklist or (),
        url_preview_ip_range_whitelist=_networks(r, top, "url_preview_ip_range_whitelist") or (),
        url_preview_url_blacklist=_url_blacklist(r, top),
        max_spider_size=r.converted(top, "max_spider_size", "", 10 * 1024**2, parse_size),
        url_preview_accept_language=_accept_language(r, top),
        prevent_downloads_from=frozenset(
            n.lower() for n in r.str_list(top, "prevent_media_downloads_from", "") or ()
        ),
        upload_limits=_upload_limits(r, top),
    )
