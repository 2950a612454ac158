"""Invite QR codes as PNG images (segno: pure Python, no image library needed)."""

from __future__ import annotations

import io

import segno


def qr_png(link: str, *, scale: int = 8) -> bytes:
    """A PNG of `link`'s QR code, large enough to scan from a printed page or a screen."""
    buffer = io.BytesIO()
    segno.make(link, error="m").save(buffer, kind="png", scale=scale, border=4)
    return buffer.getvalue()
