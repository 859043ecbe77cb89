"""Signature verification: a pure function of bytes, headers, keys and the clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ciolake.errors import VerificationError
from ciolake.receive.verify import sign, verify

KEY = "primary-key"
OLD_KEY = "previous-key"
NOW = 1_790_000_000
BODY = b'{"event_id":"01E4C4CT6YDC7Y5M7FE1GWWPQJ","object_type":"email","metric":"sent"}'


def headers_for(
    body: bytes = BODY, *, key: str = KEY, timestamp: int = NOW, prefix: str = ""
) -> dict[str, str]:
    return {
        "X-CIO-Timestamp": str(timestamp),
        "X-CIO-Signature": prefix + sign(body, key, timestamp),
    }


def check(body: bytes, headers: dict[str, str], keys: tuple[str, ...] = (KEY,)) -> bool:
    return verify(body, headers, keys, now=NOW, tolerance_s=300).stale


def test_signature_matches_the_documented_construction() -> None:
    import hashlib
    import hmac

    expected = hmac.new(KEY.encode(), b"v0:" + str(NOW).encode() + b":" + BODY, hashlib.sha256)
    assert sign(BODY, KEY, NOW) == expected.hexdigest()


@pytest.mark.parametrize(
    ("name", "headers", "keys"),
    [
        ("plain hex", headers_for(), (KEY,)),
        ("v0= prefix", headers_for(prefix="v0="), (KEY,)),
        ("rotated: signed with the old key", headers_for(key=OLD_KEY), (KEY, OLD_KEY)),
        ("rotated: signed with the new key", headers_for(), (OLD_KEY, KEY)),
        (
            "lower-case header names",
            {k.lower(): v for k, v in headers_for().items()},
            (KEY,),
        ),
        (
            "upper-case hex digest",
            {**headers_for(), "X-CIO-Signature": sign(BODY, KEY, NOW).upper()},
            (KEY,),
        ),
    ],
)
def test_authentic_requests_pass(name: str, headers: dict[str, str], keys: tuple[str, ...]) -> None:
    assert check(BODY, headers, keys) is False, name


@pytest.mark.parametrize(
    ("name", "body", "headers", "reason"),
    [
        ("wrong key", BODY, headers_for(key="attacker"), "signature_mismatch"),
        ("tampered body", BODY + b" ", headers_for(), "signature_mismatch"),
        (
            "timestamp changed after signing",
            BODY,
            {**headers_for(), "X-CIO-Timestamp": str(NOW + 1)},
            "signature_mismatch",
        ),
        ("no headers", BODY, {}, "missing_headers"),
        ("no signature", BODY, {"X-CIO-Timestamp": str(NOW)}, "missing_headers"),
        ("no timestamp", BODY, {"X-CIO-Signature": "ab" * 32}, "missing_headers"),
        (
            "garbage signature",
            BODY,
            {**headers_for(), "X-CIO-Signature": "zz"},
            "malformed_signature",
        ),
        (
            "signature of the wrong length",
            BODY,
            {**headers_for(), "X-CIO-Signature": "ab" * 31},
            "malformed_signature",
        ),
        ("empty signature", BODY, {**headers_for(), "X-CIO-Signature": ""}, "malformed_signature"),
        (
            "garbage timestamp",
            BODY,
            {**headers_for(), "X-CIO-Timestamp": "yesterday"},
            "malformed_timestamp",
        ),
        (
            "negative timestamp",
            BODY,
            {**headers_for(), "X-CIO-Timestamp": "-5"},
            "malformed_timestamp",
        ),
        (
            "huge timestamp",
            BODY,
            {**headers_for(), "X-CIO-Timestamp": "9" * 40},
            "malformed_timestamp",
        ),
        (
            "float timestamp",
            BODY,
            {**headers_for(), "X-CIO-Timestamp": "1790000000.5"},
            "malformed_timestamp",
        ),
    ],
)
def test_inauthentic_requests_are_refused(
    name: str, body: bytes, headers: dict[str, str], reason: str
) -> None:
    with pytest.raises(VerificationError) as caught:
        check(body, headers)
    assert caught.value.reason == reason, name


def test_no_keys_means_nothing_is_authentic() -> None:
    with pytest.raises(VerificationError):
        check(BODY, headers_for(), keys=())


@pytest.mark.parametrize(
    ("offset", "stale"),
    [(0, False), (300, False), (-300, False), (301, True), (-301, True), (86_400 * 3, True)],
)
def test_timestamps_outside_the_tolerance_are_authentic_but_stale(offset: int, stale: bool) -> None:
    timestamp = NOW + offset
    verdict = verify(BODY, headers_for(timestamp=timestamp), (KEY,), now=NOW, tolerance_s=300)
    assert verdict.timestamp == timestamp
    assert verdict.stale is stale


def test_headers_may_come_as_pairs() -> None:
    verdict = verify(BODY, list(headers_for().items()), (KEY,), now=NOW, tolerance_s=300)
    assert verdict.timestamp == NOW


@given(
    body=st.binary(max_size=512),
    headers=st.dictionaries(
        st.sampled_from(["X-CIO-Signature", "x-cio-timestamp", "X-Cio-Timestamp", "Other"])
        | st.text(max_size=20),
        st.text(max_size=80),
        max_size=4,
    ),
    keys=st.lists(st.text(max_size=40), max_size=3),
    now=st.floats(allow_nan=True, allow_infinity=True),
    tolerance=st.integers(min_value=0, max_value=10**9),
)
def test_arbitrary_input_raises_only_verification_errors(
    body: bytes, headers: dict[str, str], keys: list[str], now: float, tolerance: int
) -> None:
    reasons = {
        "missing_headers",
        "malformed_signature",
        "malformed_timestamp",
        "signature_mismatch",
    }
    reason: str | None
    try:
        verdict = verify(body, headers, keys, now=now, tolerance_s=tolerance)
    except VerificationError as exc:
        reason = exc.reason
    else:
        reason = None
        # Only a correct signature gets through, and random input essentially never has one.
        assert any(
            sign(body, key, verdict.timestamp) == headers_value(headers).lower().removeprefix("v0=")
            for key in keys
        )
    assert reason is None or reason in reasons


def headers_value(headers: dict[str, str]) -> str:
    return next(v for k, v in headers.items() if k.lower() == "x-cio-signature").strip()
