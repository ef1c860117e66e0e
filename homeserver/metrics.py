"""Prometheus metrics, under Synapse's names where the same thing is measured, so
Synapse's Grafana dashboard (contrib/grafana/synapse.json) works unchanged.

Off unless `enable_metrics: true`; served at /_synapse/metrics on listeners with the
`metrics` resource (or a `type: metrics` listener). Every metric carries Synapse's
`server_name` label. One `Metrics` object per app, with its own registry, so several
servers in one process (tests) do not mix their numbers.

How each number is taken, cheaply:
- HTTP: one middleware (counter, histogram and in-flight gauge per request). The
  `servlet` label is Synapse's servlet name for the endpoints its dashboard selects
  (SERVLET_NAMES), else the handler's name; unmatched paths are "unrecognized".
- Database: the storage backends call `db_observer` per transaction/read.
- Events: a persister listener counts every persisted event.
- Federation: the transaction receiver reports what arrives (`federation_received`);
  what the sender and the caches count anyway is read at scrape time
  (`FederationCollector`, `CacheCollector`).

The app factory builds it (its middleware must exist before the app starts) and hands
it to the composition module, which wires it to the database, the persister, the
receiver and the sender as they are built.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from homeserver.admin.ports import OutboundFederation
from homeserver.events import Event
from homeserver.http import Handler
from homeserver.storage.cache import named_caches

SERVER_NAME_LABEL = "server_name"
METRICS_PATH = "/_synapse/metrics"

# Synapse's servlet names for handlers its dashboard (or admins' habits) single out.
SERVLET_NAMES = {
    "homeserver.client.messages.send_event": "RoomSendEventRestServlet",
    "homeserver.client.messages.redact_event": "RoomRedactEventRestServlet",
    "homeserver.client.messages.get_messages": "RoomMessageListRestServlet",
    "homeserver.client.messages.get_context": "RoomEventContextServlet",
    "homeserver.client.messages.get_event": "EventRestServlet",
    "homeserver.client.sync.get_sync": "SyncRestServlet",
    "homeserver.client.room_state.put_state_event": "RoomStateEventRestServlet",
    "homeserver.client.room_state.get_state_event": "RoomStateEventRestServlet",
    "homeserver.client.room_state.get_state": "RoomStateRestServlet",
    "homeserver.client.rooms_create.create_room": "RoomCreateRestServlet",
    "homeserver.client.membership.join_by_id_or_alias": "JoinRoomAliasServlet",
    "homeserver.client.login.post_login": "LoginRestServlet",
    "homeserver.client.register.post_register": "RegisterRestServlet",
    "homeserver.client.keys.upload_keys": "KeyUploadServlet",
    "homeserver.client.keys.query_keys": "KeyQueryServlet",
    "homeserver.client.keys.claim_keys": "OneTimeKeyServlet",
    "homeserver.client.to_device.send_to_device": "SendToDeviceRestServlet",
    "homeserver.client.ephemeral.put_typing": "RoomTypingRestServlet",
    "homeserver.client.ephemeral.post_receipt": "ReceiptRestServlet",
    "federation.server.transactions.put_send": "FederationSendServlet",
}

# Synapse's response time buckets (seconds).
RESPONSE_TIME_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    30.0,
    60.0,
    120.0,
    180.0,
    float("inf"),
)
DB_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, float("inf"))


def servlet_name(request: web.Request) -> str:
    route = request.match_info.route
    if getattr(request.match_info, "http_exception", None) is not None or route is None:
        return "unrecognized"
    handler = route.handler
    qualified = f"{getattr(handler, '__module__', '')}.{getattr(handler, '__qualname__', '')}"
    return SERVLET_NAMES.get(qualified) or str(getattr(handler, "__name__", "handler"))


class Metrics:
    def __init__(self, server_name: str) -> None:
        self.server_name = server_name
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        s = SERVER_NAME_LABEL
        self.requests_received = Counter(
            "synapse_http_server_requests_received", "", ["method", "servlet", s], registry=r
        )
        self.responses = Counter(
            "synapse_http_server_responses", "", ["method", "code", s], registry=r
        )
        self.response_count = Counter(
            "synapse_http_server_response_count", "", ["method", "servlet", "tag", s], registry=r
        )
        self.response_time = Histogram(
            "synapse_http_server_response_time_seconds",
            "sec",
            ["method", "servlet", "tag", "code", s],
            buckets=RESPONSE_TIME_BUCKETS,
            registry=r,
        )
        self.response_size = Counter(
            "synapse_http_server_response_size", "", ["method", "servlet", "tag", s], registry=r
        )
        self.in_flight = Gauge(
            "synapse_http_server_in_flight_requests_count", "", ["method", "servlet", s], registry=r
        )
        self.events_persisted = Counter(
            "synapse_storage_events_persisted_events", "", [s], registry=r
        )
        self.events_persisted_sep = Counter(
            "synapse_storage_events_persisted_events_sep",
            "",
            ["type", "origin_type", "origin_entity", s],
            registry=r,
        )
        self.fed_received_pdus = Counter(
            "synapse_federation_server_received_pdus", "", [s], registry=r
        )
        self.fed_received_edus = Counter(
            "synapse_federation_server_received_edus", "", [s], registry=r
        )
        self.db_schedule = Histogram(
            "synapse_storage_schedule_time", "sec", [s], buckets=DB_BUCKETS, registry=r
        )
        self.db_txn_count = Counter(
            "synapse_storage_transaction_time_count", "sec", ["desc", s], registry=r
        )
        self.db_txn_sum = Counter(
            "synapse_storage_transaction_time_sum", "sec", ["desc", s], registry=r
        )
        self.db_txn_time = Histogram(
            "synapse_storage_transaction_duration_seconds",
            "sec",
            ["desc", s],
            buckets=DB_BUCKETS,
            registry=r,
        )
        # Ours (Synapse has no such lock): in a worker deployment, how long write
        # transactions waited for their turn at the deployment-wide write lock.
        self.db_turn_wait = Histogram(
            "homeserver_storage_write_turn_wait_seconds",
            "sec",
            ["turn", s],
            buckets=DB_BUCKETS,
            registry=r,
        )
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        r.register(CacheCollector(server_name))
        # Children with fixed labels, bound once (the per-transaction path stays cheap).
        self._schedule = self.db_schedule.labels(server_name)
        self._db = {
            kind: (
                self.db_txn_count.labels(kind, server_name),
                self.db_txn_sum.labels(kind, server_name),
                self.db_txn_time.labels(kind, server_name),
            )
            for kind in ("write", "read")
        }
        self._persisted = self.events_persisted.labels(server_name)

    # -- hooks ------------------------------------------------------------------------

    def db_observer(self, kind: str, waited_s: float, took_s: float) -> None:
        if kind.startswith("turn "):
            self.db_turn_wait.labels(kind[5:], self.server_name).observe(waited_s)
            return
        count, total, hist = self._db.get(kind) or self._db["read"]
        self._schedule.observe(waited_s)
        count.inc()
        total.inc(took_s)
        hist.observe(took_s)

    def on_new_event(self, event: Event, stream_ordering: int) -> None:
        """EventListener: every event the persister stored."""
        self._persisted.inc()
        server = event.sender.partition(":")[2]
        local = server == self.server_name
        self.events_persisted_sep.labels(
            event.type if len(event.type) <= 64 else "other",
            "local" if local else "remote",
            "*client*" if local else server[:255],
            self.server_name,
        ).inc()

    def federation_received(self, pdus: int, edus: int) -> None:
        if pdus:
            self.fed_received_pdus.labels(self.server_name).inc(pdus)
        if edus:
            self.fed_received_edus.labels(self.server_name).inc(edus)

    def watch_outbound(self, outbound: OutboundFederation | None) -> None:
        if outbound is not None:
            self.registry.register(FederationCollector(outbound, self.server_name))

    def render(self) -> bytes:
        return generate_latest(self.registry)

    async def serve(self, request: web.Request) -> web.Response:
        """GET /_synapse/metrics: the scrape (the listener filter decides who gets it)."""
        return web.Response(body=self.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})


class FederationCollector:
    """The sender's counters, read at scrape time."""

    def __init__(self, outbound: OutboundFederation, server_name: str) -> None:
        self._outbound = outbound
        self._server_name = server_name

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        o, s = self._outbound, [SERVER_NAME_LABEL]
        for name, value in (
            ("synapse_federation_client_sent_transactions", o.transactions_sent),
            ("synapse_federation_client_sent_pdu_destinations_count", o.pdus_sent),
            ("synapse_federation_client_sent_edus", o.edus_sent),
            ("synapse_federation_client_failed_transactions", o.transactions_failed),
        ):
            family = CounterMetricFamily(name, "", labels=s)
            family.add_metric([self._server_name], value)
            yield family
        backoff = GaugeMetricFamily(
            "synapse_federation_destinations_backing_off",
            "destinations the sender waits for after failures",
            labels=s,
        )
        backoff.add_metric([self._server_name], o.destinations_backing_off)
        yield backoff


class CacheCollector:
    """Synapse's synapse_util_caches_* gauges for every named cache."""

    def __init__(self, server_name: str) -> None:
        self._server_name = server_name

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        labels = ["name", SERVER_NAME_LABEL]
        size = GaugeMetricFamily("synapse_util_caches_cache_size", "", labels=labels)
        hits = GaugeMetricFamily("synapse_util_caches_cache_hits", "", labels=labels)
        total = GaugeMetricFamily("synapse_util_caches_cache", "", labels=labels)
        max_size = GaugeMetricFamily("synapse_util_caches_cache_max_size", "", labels=labels)
        evicted = GaugeMetricFamily(
            "synapse_util_caches_cache_evicted_size",
            "",
            labels=["name", "reason", SERVER_NAME_LABEL],
        )
        for cache in named_caches():
            key = [str(cache.name), self._server_name]
            size.add_metric(key, cache.size)
            hits.add_metric(key, cache.hits)
            total.add_metric(key, cache.hits + cache.misses)
            max_size.add_metric(key, cache.max_size)
            evicted.add_metric([str(cache.name), "size", self._server_name], cache.evicted_size)
            evicted.add_metric(
                [str(cache.name), "invalidation", self._server_name], cache.evicted_invalidation
            )
        yield from (size, hits, total, max_size, evicted)


def metrics_middleware(metrics: Metrics) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        method = request.method
        servlet = servlet_name(request)
        server = metrics.server_name
        metrics.requests_received.labels(method, servlet, server).inc()
        in_flight = metrics.in_flight.labels(method, servlet, server)
        in_flight.inc()
        started = time.perf_counter()
        code = "500"
        size = 0
        try:
            response = await handler(request)
            code = str(response.status)
            size = _response_size(response)
            return response
        except web.HTTPException as exc:
            code = str(exc.status)
            raise
        finally:
            in_flight.dec()
            elapsed = time.perf_counter() - started
            metrics.responses.labels(method, code, server).inc()
            metrics.response_count.labels(method, servlet, "", server).inc()
            metrics.response_time.labels(method, servlet, "", code, server).observe(elapsed)
            metrics.response_size.labels(method, servlet, "", server).inc(size)

    return middleware


def _response_size(response: web.StreamResponse) -> int:
    if response.prepared:
        return response.body_length
    body = getattr(response, "body", None)
    if isinstance(body, bytes | bytearray):
        return len(body)
    return response.content_length or 0
