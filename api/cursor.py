"""Opaque keyset cursors: base64url of the sort key, signed so that a tampered cursor is refused.

A cursor names a position in a sort order (the key of the last row returned), never a row the
caller may not see: row-level security is applied to every page independently of the cursor, and
the signature (HMAC-SHA256, key derived from the server secret) stops clients from forging keys.
The `kind` is signed too, so a cursor of one list cannot be replayed on another.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json

_MAC_BYTES = 12


class CursorError(ValueError):
    """A cursor that was not issued by this server for this list."""


class CursorCodec:
    def __init__(self, secret: bytes) -> None:
        self._key = hashlib.sha256(b"postloan-cursor\x00" + secret).digest()

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:_MAC_BYTES]

    def encode(self, kind: str, key: tuple[str | int, ...]) -> str:
        payload = json.dumps([kind, *key], separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        return base64.urlsafe_b64encode(payload + self._mac(payload)).decode("ascii").rstrip("=")

    def decode(self, kind: str, cursor: str) -> tuple[str | int, ...]:
        if not cursor or len(cursor) > 1024:
            raise CursorError("invalid cursor")
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        except (binascii.Error, ValueError):
            raise CursorError("invalid cursor") from None
        payload, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
        if len(raw) <= _MAC_BYTES or not hmac.compare_digest(mac, self._mac(payload)):
            raise CursorError("invalid cursor")
        try:
            decoded = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise CursorError("invalid cursor") from None
        if not isinstance(decoded, list) or not decoded or decoded[0] != kind:
            raise CursorError("cursor does not belong to this list")
        key = tuple(decoded[1:])
        if not all(isinstance(k, (str, int)) and not isinstance(k, bool) for k in key):
            raise CursorError("invalid cursor")
        return key
