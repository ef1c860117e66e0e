"""The resource limits' wiring (homeserver/accounts/mau.py): built with the accounts
when a limit or the counting is configured, with the login gate, the main process's
jobs (reserved seats, reaping, the metrics' numbers) and Synapse's
synapse_admin_mau_* gauges. Split out to keep composition.py small."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from homeserver.accounts.mau import ResourceLimits
from homeserver.accounts.sessions import SessionService
from homeserver.appservice.registry import AppServices
from homeserver.background import BackgroundTasks, every
from homeserver.config import Config
from homeserver.metrics import SERVER_NAME_LABEL, Metrics
from homeserver.storage.database import Database
from homeserver.storage.monthly_active_users import MauStore

REAP_INTERVAL_S = 3600.0  # Synapse's: hourly
GAUGES_INTERVAL_S = 300.0  # Synapse's: every five minutes


async def build_resource_limits(
    config: Config,
    database: Database,
    tasks: BackgroundTasks,
    sessions: SessionService,
    metrics: Metrics | None,
) -> ResourceLimits | None:
    """None when no resource-limit key is set (nothing is counted or checked)."""
    settings = config.resource_limits
    if not (settings.tracks_mau or settings.may_block):
        return None
    services = AppServices(config.app_services, config.server_name)

    def appservice_of(user_id: str) -> str | None:
        for service in services.all:
            if user_id == service.sender or service.is_user_in_namespace(user_id):
                return service.id
        return None

    notices = config.server_notices
    main = not config.workers.is_worker
    limits = ResourceLimits(
        settings,
        MauStore(database),
        notices_user=f"@{notices.system_mxid_localpart}:{config.server_name}" if notices else None,
        appservice_of=appservice_of,
        runs_background=main,
    )
    sessions.gate = limits.check
    if main and settings.tracks_mau:
        await limits.start()
        tasks.spawn(every(REAP_INTERVAL_S, limits.reap), "monthly active users reaping")
        tasks.spawn(every(GAUGES_INTERVAL_S, limits.refresh_gauges), "monthly active users")
        if metrics is not None:
            metrics.registry.register(MauCollector(limits, config.server_name))
    return limits


class MauCollector:
    """Synapse's synapse_admin_mau_* gauges, from the numbers the main process's job
    refreshes (no query at scrape time)."""

    def __init__(self, limits: ResourceLimits, server_name: str) -> None:
        self._limits = limits
        self._server_name = server_name

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        limits, name = self._limits, [self._server_name]
        for metric, value in (
            ("synapse_admin_mau_current", limits.gauge_current),
            ("synapse_admin_mau_max", limits.config.max_mau_value),
            ("synapse_admin_mau_registered_reserved_users", len(limits.reserved_users)),
        ):
            family = GaugeMetricFamily(metric, "", labels=[SERVER_NAME_LABEL])
            family.add_metric(name, float(value))
            yield family
        by_service = GaugeMetricFamily(
            "synapse_admin_mau_current_mau_by_service",
            "",
            labels=["app_service", SERVER_NAME_LABEL],
        )
        for service, count in sorted(limits.gauge_by_service.items()):
            by_service.add_metric([service, self._server_name], float(count))
        yield by_service
