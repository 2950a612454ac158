"""Clinic invite links: `t.me/<bot>?start=<payload>`, signed so that a forged or edited link is refused.

Telegram allows 64 characters of `[A-Za-z0-9_-]` in a start payload, so an invite is
`<treatment>-<YYYYMMDD>-<signature>` with a truncated HMAC-SHA256 signature.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import date

_PAYLOAD = re.compile(r"^([a-z0-9_]{1,30})-(\d{8})-([A-Za-z0-9_-]{16})$")


@dataclass(frozen=True, slots=True)
class Invite:
    treatment: str
    treated_on: date


class InviteCodec:
    def __init__(self, secret: str) -> None:
        self._key = secret.encode("utf-8")

    def _sign(self, body: str) -> str:
        digest = hmac.new(self._key, body.encode("ascii"), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode("ascii")[:16]

    def encode(self, invite: Invite) -> str:
        body = f"{invite.treatment}-{invite.treated_on:%Y%m%d}"
        return f"{body}-{self._sign(body)}"

    def decode(self, payload: str) -> Invite | None:
        """The invite, or None for anything malformed, forged or impossible."""
        found = _PAYLOAD.match(payload)
        if found is None:
            return None
        treatment, day, signature = found.groups()
        if not hmac.compare_digest(signature, self._sign(f"{treatment}-{day}")):
            return None
        try:
            treated_on = date(int(day[:4]), int(day[4:6]), int(day[6:]))
        except ValueError:
            return None
        return Invite(treatment, treated_on)
