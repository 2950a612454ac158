"""Clinic invite links: `https://t.me/<bot>?start=<payload>`, signed so a forged or edited link is refused.

Telegram allows 64 characters of `A-Za-z0-9_-` in a start payload. An invite packs the treatment,
its time, when the link expires, a random nonce (the invite's identity: the first Telegram user to
redeem it owns it) and the clinic's own reference, signed with HMAC-SHA256 under
`AFTERCARE_INVITE_SECRET`:

    <signature: 16> a <treatment: 1> <treated at: 7> <expires: 6> <nonce: 6> <reference: 0-16>
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import string
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from bot.core.plans import TREATMENTS

_EPOCH = datetime(2020, 1, 1, tzinfo=UTC)
_ALPHABET = string.digits + string.ascii_lowercase
_REF = re.compile(r"^[A-Za-z0-9]{0,16}$")
_BODY = re.compile(r"^a([0-9a-z])([0-9a-z]{7})([0-9a-z]{6})([0-9a-z]{6})([A-Za-z0-9]{0,16})$")
SIGNATURE = 16
MAX_PAYLOAD = 64


@dataclass(frozen=True, slots=True)
class Invite:
    treatment: str
    treated_at: datetime  # aware
    expires: datetime  # aware
    nonce: str  # the invite's identity
    ref: str = ""  # the clinic's own reference (a file number, never a name)


class Refusal(StrEnum):
    INVALID = "invalid"  # malformed, forged or altered
    EXPIRED = "expired"


def _base36(value: int, width: int) -> str:
    digits = ""
    while value:
        value, digit = divmod(value, 36)
        digits = _ALPHABET[digit] + digits
    if len(digits) > width:
        raise ValueError("value too large for an invite")
    return digits.rjust(width, "0")


class InviteCodec:
    def __init__(self, secret: str) -> None:
        if not secret:
            raise ValueError("an invite secret is needed")
        self._key = secret.encode("utf-8")

    def _sign(self, body: str) -> str:
        digest = hmac.new(self._key, body.encode("ascii"), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode("ascii")[:SIGNATURE]

    def new(self, treatment: str, treated_at: datetime, *, valid_for: timedelta, ref: str = "") -> Invite:
        """A fresh invite with a random nonce (one per patient)."""
        if treatment not in TREATMENTS:
            raise ValueError(f"unknown treatment '{treatment}' (known: {', '.join(TREATMENTS)})")
        if not _REF.match(ref):
            raise ValueError("the reference may have at most 16 letters and digits")
        nonce = "".join(secrets.choice(_ALPHABET) for _ in range(6))
        return Invite(treatment, treated_at.astimezone(UTC), treated_at.astimezone(UTC) + valid_for, nonce, ref)

    def encode(self, invite: Invite) -> str:
        minutes = int((invite.treated_at - _EPOCH).total_seconds() // 60)
        hours = int((invite.expires - _EPOCH).total_seconds() // 3600)
        body = (
            f"a{_ALPHABET[TREATMENTS.index(invite.treatment)]}{_base36(minutes, 7)}{_base36(hours, 6)}"
            f"{invite.nonce}{invite.ref}"
        )
        payload = self._sign(body) + body
        assert len(payload) <= MAX_PAYLOAD
        return payload

    def decode(self, payload: str, now: datetime) -> Invite | Refusal:
        """The invite, or why it is refused: anything malformed, forged or altered is INVALID."""
        if len(payload) > MAX_PAYLOAD or len(payload) <= SIGNATURE:
            return Refusal.INVALID
        signature, body = payload[:SIGNATURE], payload[SIGNATURE:]
        found = _BODY.match(body)
        if found is None or not hmac.compare_digest(signature, self._sign(body)):
            return Refusal.INVALID
        treatment_code, minutes, hours, nonce, ref = found.groups()
        index = _ALPHABET.index(treatment_code)
        if index >= len(TREATMENTS):
            return Refusal.INVALID
        treated_at = _EPOCH + timedelta(minutes=int(minutes, 36))
        expires = _EPOCH + timedelta(hours=int(hours, 36))
        if now > expires:
            return Refusal.EXPIRED
        return Invite(TREATMENTS[index], treated_at, expires, nonce, ref)
