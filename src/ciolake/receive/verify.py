"""Signature and timestamp checks for Customer.io reporting webhooks.

A pure function of the raw body, the request headers, the signing keys and the current time,
after the model of standard-webhooks: no web framework, several keys (rotation), constant-time
comparison. Customer.io signs ``v0:<X-CIO-Timestamp>:<raw body>`` with HMAC-SHA256 and sends the
plain lowercase hex digest in ``X-CIO-Signature``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ciolake.errors import VerificationError

SIGNATURE_HEADER = "x-cio-signature"
TIMESTAMP_HEADER = "x-cio-timestamp"
_HEX_DIGITS = frozenset("0123456789abcdef")
_DIGEST_HEX_LENGTH = 64
# 18 digits keeps the value inside int64 whatever it says.
_MAX_TIMESTAMP_DIGITS = 18


@dataclass(frozen=True, slots=True)
class Verdict:
    """An authentic request: its signed timestamp and whether that lies outside the tolerance."""

    timestamp: int
    stale: bool


def sign(body: bytes, key: str, timestamp: int) -> str:
    """Return the hex signature Customer.io would send for this body, key and timestamp."""
    message = b"v0:" + str(timestamp).encode() + b":" + body
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def verify(
    body: bytes,
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    keys: Sequence[str],
    *,
    now: float,
    tolerance_s: int,
) -> Verdict:
    """Check that a request was signed by Customer.io with one of ``keys``.

    Args:
        body: the raw request body, exactly as received.
        headers: request headers; names are matched case-insensitively.
        keys: accepted signing keys; any one of them makes the request authentic.
        now: current unix time in seconds.
        tolerance_s: how far the signed timestamp may be from ``now`` before it is stale.

    Returns:
        The verdict. A stale timestamp is not an error: the request is authentic and is kept
        aside, because Customer.io's retries may carry old timestamps.

    Raises:
        VerificationError: headers missing or malformed, or no key matches.
    """
    signature_value, timestamp_value = _signature_headers(headers)
    timestamp = _parse_timestamp(timestamp_value)
    signature = _parse_signature(signature_value)
    if not _any_key_matches(body, timestamp_value.strip(), signature, keys):
        raise VerificationError("signature_mismatch", "no signing key matches X-CIO-Signature")
    return Verdict(timestamp=timestamp, stale=abs(now - timestamp) > tolerance_s)


def _signature_headers(
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
) -> tuple[str, str]:
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    found: dict[str, str] = {}
    for name, value in pairs:
        lowered = name.lower()
        if lowered in (SIGNATURE_HEADER, TIMESTAMP_HEADER):
            found[lowered] = value
    if SIGNATURE_HEADER not in found or TIMESTAMP_HEADER not in found:
        missing = sorted({SIGNATURE_HEADER, TIMESTAMP_HEADER} - found.keys())
        raise VerificationError("missing_headers", f"missing header(s): {', '.join(missing)}")
    return found[SIGNATURE_HEADER], found[TIMESTAMP_HEADER]


def _parse_timestamp(value: str) -> int:
    stripped = value.strip()
    if not (stripped.isascii() and stripped.isdigit()) or len(stripped) > _MAX_TIMESTAMP_DIGITS:
        raise VerificationError(
            "malformed_timestamp", "X-CIO-Timestamp must be integer unix seconds"
        )
    return int(stripped)


def _parse_signature(value: str) -> bytes:
    candidate = value.strip().lower().removeprefix("v0=")
    if len(candidate) != _DIGEST_HEX_LENGTH or not _HEX_DIGITS.issuperset(candidate):
        raise VerificationError(
            "malformed_signature", "X-CIO-Signature must be a hex HMAC-SHA256 digest"
        )
    return bytes.fromhex(candidate)


def _any_key_matches(body: bytes, timestamp: str, signature: bytes, keys: Sequence[str]) -> bool:
    message = b"v0:" + timestamp.encode() + b":" + body
    matched = False
    # Every key is tried, so the time taken does not reveal which key (if any) matched.
    for key in keys:
        # hmac.digest is OpenSSL's one-shot HMAC: no Python HMAC object per request.
        expected = hmac.digest(key.encode(), message, "sha256")
        matched |= hmac.compare_digest(expected, signature)
    return matched
