"""The receiving checks that belong to federation, run before the room service ingests.

Spec (server-server API, "Checks performed on receipt of a PDU"), steps 1-3:
  1. the PDU is a valid event of its room version (format, size under 64 KiB),
  2. it carries valid signatures of every server that must sign it (the sender's; in
     v1/v2 the event ID's; for restricted joins the authorising server), using keys that
     were valid at `origin_server_ts` in room versions 5+,
  3. its content hash matches; if not, the event is kept but redacted.
Steps 4-6 (auth) are `homeserver.rooms.ingest`'s job. Every event we accept from a peer,
pushed or fetched, passes through `InboundChecks.check_pdu` first.
"""

from __future__ import annotations

import logging
from typing import Any

from federation.keyring import Keyring, KeyringError
from homeserver.events import Event, RoomVersion
from homeserver.events.hashing import check_content_hash
from homeserver.events.redaction import redact
from homeserver.events.signing import required_signers
from homeserver.events.validation import EventFormatError, validate_pdu_format

log = logging.getLogger(__name__)


class PduRejected(Exception):
    """The PDU failed a receiving check and must be dropped (not stored at all)."""


class PduMalformed(PduRejected):
    """Check 1 failed: not a valid event of the room version (a float or an integer
    out of range where canonical JSON is strict, a bad field...)."""


class InboundChecks:
    """Format, signature and hash checks for PDUs from other servers."""

    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring

    async def check_pdu(self, pdu: Any, room_version: RoomVersion) -> Event:
        """Run checks 1-3; return the Event to hand to the room service.

        Raises PduRejected for a malformed event or a bad/missing signature. On a content
        hash mismatch the returned Event is the redacted copy (same event ID, since the
        reference hash covers only the redacted form).
        """
        if not isinstance(pdu, dict):
            raise PduRejected("PDU is not a JSON object")
        try:
            validate_pdu_format(pdu, room_version)
        except EventFormatError as e:
            raise PduMalformed(f"invalid event format: {e}") from None
        event = Event(pdu, room_version)
        await self.check_signatures(event)
        if not check_content_hash(pdu):
            log.info("content hash mismatch on %s: redacting", event.event_id)
            return Event(redact(pdu, room_version), room_version, event.event_id)
        return event

    async def check_signatures(self, event: Event) -> None:
        """Check 2: every required server has signed the (redacted) event."""
        rv = event.room_version
        at_ts = event.origin_server_ts if rv.enforce_key_validity else None
        signable = redact(event.pdu, rv)
        signable.pop("unsigned", None)
        for server in sorted(required_signers(event)):
            try:
                await self.keyring.verify_json_for_server(server, signable, at_ts)
            except KeyringError as e:
                raise PduRejected(f"signature check for {server} failed: {e}") from None


def strip_unsigned_for_ingest(pdu: dict[str, Any]) -> dict[str, Any]:
    """A copy of `pdu` without fields a peer must not dictate to us in `unsigned`
    (everything but `invite_room_state` / `knock_room_state`, which the spec relays)."""
    unsigned = pdu.get("unsigned")
    out = {k: v for k, v in pdu.items() if k != "unsigned"}
    if isinstance(unsigned, dict):
        kept = {k: v for k, v in unsigned.items() if k in ("invite_room_state", "knock_room_state")}
        if kept:
            out["unsigned"] = kept
    return out
