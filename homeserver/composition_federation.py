"""The federation adapter, built for the composition module (homeserver/composition.py).

With composition.py, this is where the core is wired to `federation`: the client, the
keyring, the receiving checks, the transaction sender and the ports the core needs.
Without a listener for the federation resource none of it is built.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, cast

import nacl.signing

from federation.appkeys import (
    FED_CLIENT,
    INBOUND,
    KEYRING,
    ORIGIN_LIMITS,
    QUERIES,
    SENDER,
    TRANSACTIONS,
)
from federation.client import FederationClient
from federation.edus import InboundEdus, dispatch
from federation.inbound import InboundChecks
from federation.keyring import Keyring
from federation.keys import ServerKeys
from federation.policy import FederationPolicyServers
from federation.queries import FederationQueries, FederationRemoteKeys
from federation.receiver import TransactionReceiver
from federation.remote_events import FederationRemoteEvents
from federation.remote_rooms import FederationRemoteRooms
from federation.room_complexity import FederationRoomComplexity
from federation.sender import FederationSender, SenderSettings
from federation.server.origin_limits import OriginLimiter
from homeserver.config import Config, FederationConfig
from homeserver.config.workers import EDU_STREAMS, shard
from homeserver.ephemeral.edus import EduSender
from homeserver.ipfilter import outbound_ip_filter
from homeserver.profiles.ports import RemoteProfiles
from homeserver.replication.federation import FederationWriter, RoutedIngest
from homeserver.rooms.complexity import RemoteRoomLimit
from homeserver.rooms.remote_state import FetchLimits
from homeserver.storage import Stores


@dataclass(frozen=True)
class Overrides:
    """What a test may substitute before the app starts (production passes none)."""

    sender_settings: SenderSettings | None = None  # shorter federation backoff
    remote_profiles: RemoteProfiles | None = None  # a fake remote profile port
    fetch_limits: FetchLimits | None = None  # bounds on fetching missing state
    policy_servers: Any = None  # a fake Policy Server port (rooms.policy_server)


@dataclass
class Federation:
    """The federation adapter's outbound half: what the core receives as ports."""

    client: FederationClient
    keyring: Keyring
    checks: InboundChecks
    sender: FederationSender | None
    remote_events: FederationRemoteEvents | None
    remote_rooms: FederationRemoteRooms | None
    queries: FederationQueries | None
    policy: Any = None  # rooms.policy_server.PolicyServerPort (federation.policy)
    # rc_federation on inbound requests (None: rate limits off).
    origin_limits: OriginLimiter | None = None


def sender_settings(fc: FederationConfig) -> SenderSettings:
    """The operator's backoff (`federation:` in the config) as the sender takes it."""
    return SenderSettings(
        min_retry_interval_s=fc.destination_min_retry_interval_ms / 1000,
        max_retry_interval_s=fc.destination_max_retry_interval_ms / 1000,
        retry_multiplier=fc.destination_retry_multiplier,
        request_timeout_s=fc.request_timeout_ms / 1000,
    )


def remote_room_limit(
    config: Config, stores: Stores, client: FederationClient
) -> RemoteRoomLimit | None:
    """limit_remote_rooms' guard on local users' remote joins (None when off): the
    rooms' servers are asked for the complexity over `client`."""
    limit = config.limit_remote_rooms
    if not limit.enabled:
        return None
    return RemoteRoomLimit(
        stores,
        FederationRoomComplexity(client),
        threshold=limit.complexity,
        message=limit.complexity_error,
        admins_can_join=limit.admins_can_join,
    )


def federation_client(
    config: Config, server_keys: ServerKeys, stack: AsyncExitStack
) -> FederationClient:
    """Our signed HTTP client for other servers (closed with the stack)."""
    fed = config.federation
    client = FederationClient(
        config.server_name,
        server_keys.primary,
        ip_filter=outbound_ip_filter(fed),
        verify_tls=fed.verify_certificates,
        custom_ca_files=[str(p) for p in fed.custom_ca_list],
        plain_http=fed.plain_http_for_tests,
        minimum_tls_version=fed.client_minimum_tls_version,
        unverified_servers=fed.certificate_verification_whitelist,
    )
    stack.push_async_callback(client.close)
    return client


def reader_federation_client(
    config: Config,
    fed: Federation | None,
    server_keys: ServerKeys,
    stack: AsyncExitStack,
) -> FederationClient | None:
    """A client reader's own client for other servers: it serves the reads that ask
    them (homeserver.replication.forward: key queries and claims, remote profiles and
    aliases, other servers' room directories, spaces with remote children) and holds
    no other federation state (each is one signed request). None where the process
    federates (its adapter's client is used) or serves no client API."""
    federates = fed is not None and fed.sender is not None
    if not federates and config.workers.is_worker and "client" in config.resources:
        return federation_client(config, server_keys, stack)
    return None


def remote_keys(
    fed: Federation | None, reader_client: FederationClient | None
) -> FederationRemoteKeys | None:
    """Where /keys/query and /keys/claim ask other servers about their users."""
    if fed is not None and fed.sender is not None:
        return FederationRemoteKeys(fed.client)
    return FederationRemoteKeys(reader_client) if reader_client is not None else None


def federation_queries(
    fed: Federation | None, reader_client: FederationClient | None
) -> FederationQueries | None:
    """Where profiles, aliases, room directories and spaces of other servers are asked."""
    if fed is not None and fed.queries is not None:
        return fed.queries
    return FederationQueries(reader_client) if reader_client is not None else None


def build_federation(
    config: Config,
    server_keys: ServerKeys,
    stores: Stores,
    stack: AsyncExitStack,
    overrides: Overrides,
) -> Federation | None:
    """The federation adapter when a listener serves federation or the key API: the
    client and keyring; with federation, the sender and every port of the core."""
    served = config.resources
    workers = config.workers
    if workers.is_event_persister or (workers.replicated and not workers.is_worker):
        # Without a federation listener of its own, an event persister sends its rooms'
        # events to their servers, joins remote rooms and fetches what their events
        # refer to; the main writes what federation inbound workers hand it (EDUs, PDUs
        # of rooms without a persister) and delivers when no federation sender does.
        served |= {"federation"}
    if not served & {"federation", "keys", "media"}:
        return None  # (a media worker fetches remote media: it needs the client)
    client = federation_client(config, server_keys, stack)
    keyring = Keyring(
        stores.server_keys,
        client,
        config.server_name,
        [
            {"server_name": t.server_name, "verify_keys": dict(t.verify_keys or {})}
            for t in config.keys.trusted_key_servers
        ],
        # signedjson's VerifyKey type is a protocol that nacl's VerifyKey implements.
        local_keys=cast(Mapping[str, nacl.signing.VerifyKey], server_keys.verify_keys()),
    )
    checks = InboundChecks(keyring)
    rl = config.ratelimit
    limits = OriginLimiter(rl.federation) if rl.enabled else None
    if "federation" not in served:
        return Federation(client, keyring, checks, None, None, None, None, None, limits)
    sender = FederationSender(
        stores.transactions,
        stores.events,
        client,
        config.server_name,
        overrides.sender_settings or sender_settings(config.federation),
    )

    return Federation(
        client=client,
        keyring=keyring,
        checks=checks,
        sender=sender,
        remote_events=FederationRemoteEvents(client, checks, stores.rooms.get_room_version),
        remote_rooms=FederationRemoteRooms(client, checks, config.server_name, server_keys.primary),
        queries=FederationQueries(client),
        policy=overrides.policy_servers or FederationPolicyServers(client),
        origin_limits=limits,
    )


class _QueueOnly:
    """The transport of a sender that never delivers (see outbound_sender)."""

    async def put_json(
        self, destination: str, path: str, json_body: Any, *, timeout: float | None = None
    ) -> Any:
        raise RuntimeError("this process queues federation traffic; others deliver it")


def outbound_sender(
    config: Config, stores: Stores, fed: Federation | None
) -> FederationSender | None:
    """Where this process queues what it sends to other servers: the federation
    adapter's sender or, on a client reader that writes to-device messages, receipts,
    device lists or typing (`stream_writers`, EDU_STREAMS) and has no federation of
    its own, a sender that only queues. Its EDUs (messages for other servers' devices,
    read receipts, device-list updates, typing) go to the durable outbox in the same
    database, and the process delivering to each destination is woken over the bus
    (build_replication sets `owns` and `elsewhere`): nothing is delivered from here,
    nothing is dropped."""
    if fed is not None and fed.sender is not None:
        return fed.sender
    workers = config.workers
    if workers.is_worker and workers.reader_streams & EDU_STREAMS:
        return FederationSender(
            stores.transactions, stores.events, _QueueOnly(), config.server_name
        )
    return None


def edu_sender(sender: FederationSender | None) -> EduSender | None:
    """The ephemeral services' way out (ephemeral.edus.EduOutbox): queue each EDU for
    its destinations with `sender` (None: this process sends no EDUs)."""
    if sender is None:
        return None

    async def send_edu(edu_type: str, content: dict[str, Any], destinations: list[str]) -> None:
        await sender.send_edu(destinations, edu_type, content)

    return send_edu


async def build_inbound(
    config: Config,
    fed: Federation | None,
    stores: Stores,
    stack: AsyncExitStack,
    tasks: Any,
    ingest: Any,
    ephemeral: list[Any],
    e2ee: Any,
    metrics: Any,
    replication: Any = None,
) -> TransactionReceiver | None:
    """The federation adapter's inbound half (EDUs and transactions), which needs the
    core's services; starts the outbound sender where this process delivers.
    `ephemeral`: the typing, receipts and presence services; `e2ee`: e2ee.build.E2ee;
    `replication`: replication.build.Replication in a deployment with workers (a
    federation inbound worker hands PDUs and EDUs to the writers, which serve them)."""
    typing, receipts, presence = ephemeral
    edus = InboundEdus(
        stores,
        config.server_name,
        typing,
        receipts,
        presence,
        e2ee.device_lists,
        e2ee.to_device,
        remote_devices=e2ee.remote_device_cache,
    )
    workers = config.workers
    if fed is None:
        # A client reader writing streams other servers send EDUs for: the federation
        # inbound workers hand it those EDUs over its replication listener.
        streams = workers.reader_streams & EDU_STREAMS
        if replication is not None and streams:
            handlers = edus.handlers()
            replication.federation = FederationWriter(
                None, lambda origin, items: dispatch(handlers, origin, items), streams
            )
        return None
    routed = None
    forwarder = replication.forwarder if replication is not None else None
    if forwarder is not None and workers.is_worker and not workers.is_event_persister:
        routed = RoutedIngest(
            forwarder,
            workers.room_writer_url,
            lambda stream, origin: _edu_writer_urls(workers, stream, origin),
        )
    transactions = TransactionReceiver(
        stores,
        fed.checks,
        routed or ingest,
        edus.handlers(),
        tasks,
        observer=metrics.federation_received if metrics is not None else None,
        edus=routed.edus if routed is not None else None,
    )
    if replication is not None and routed is None:
        main = not workers.is_worker
        replication.federation = FederationWriter(
            ingest, transactions.handle_edus if main else None
        )
    if fed.sender is not None and (not workers.is_worker or workers.is_federation_sender):
        await fed.sender.start()  # resume what the outbox still holds
        stack.push_async_callback(fed.sender.stop)
    return transactions


def federation_services(
    fed: Federation | None, transactions: TransactionReceiver | None
) -> dict[Any, Any]:
    """The federation adapter's parts the app serves with (federation/appkeys.py)."""
    if fed is None:
        return {}
    services: dict[Any, Any] = {
        FED_CLIENT: fed.client,
        KEYRING: fed.keyring,
        INBOUND: fed.checks,
        ORIGIN_LIMITS: fed.origin_limits,
        TRANSACTIONS: transactions,
    }
    if fed.sender is not None:
        services[SENDER] = fed.sender
    if fed.queries is not None:
        services[QUERIES] = fed.queries
    return services


def _edu_writer_urls(workers: Any, stream: str, origin: str) -> list[str]:
    """The replication URLs of `stream`'s writers besides the main, the one for
    `origin` (sha256 mod N) first, so a server's EDUs of a stream keep one order."""
    names = workers.writers_of(stream)
    if not names:
        return []
    first = shard(origin, len(names))
    return [str(workers.instance_map[n].url) for n in names[first:] + names[:first]]
