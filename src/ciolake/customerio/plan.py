"""The webhook ``ciolake webhooks ensure`` wants, and the changes that lead to it.

The desired state comes from a TOML file and the command's flags, checked before any request;
``find_existing`` picks the webhook it describes, and ``plan`` says what changes.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec

from ciolake.customerio.client import WRITABLE_FIELDS, ReportingWebhook
from ciolake.customerio.events_catalog import expand_events
from ciolake.errors import ConfigurationError


class WebhookSpecError(ConfigurationError):
    """The webhook described on the command line or in the file is incomplete or invalid."""


class _WebhookFile(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: str | None = None
    endpoint: str | None = None
    events: list[str] | str | None = None
    disabled: bool | None = None
    full_resolution: bool | None = None
    with_content: bool | None = None


@dataclass(frozen=True)
class Desired:
    """The writable fields a command wants set; None leaves a field as it is (or the default)."""

    name: str | None = None
    endpoint: str | None = None
    events: tuple[str, ...] | None = None
    disabled: bool | None = None
    full_resolution: bool | None = None
    with_content: bool | None = None

    def given(self) -> dict[str, Any]:
        """The fields that were set."""
        values = {field: getattr(self, field) for field in WRITABLE_FIELDS}
        return {field: value for field, value in values.items() if value is not None}


@dataclass(frozen=True)
class Change:
    """One field's difference between the webhook as it is and as it will be."""

    field: str
    before: Any
    after: Any


def build_desired(
    *,
    file: Path | None = None,
    name: str | None = None,
    endpoint: str | None = None,
    events: Sequence[str] | None = None,
    disabled: bool | None = None,
    full_resolution: bool | None = None,
    with_content: bool | None = None,
    allow_http: bool = False,
) -> Desired:
    """Merge the file (if any) and the flags into a checked ``Desired``.

    Raises:
        WebhookSpecError: the file cannot be read, or a value is invalid.
        UnknownEventError: an event name is unknown.
    """
    base = _read_file(file) if file is not None else _WebhookFile()
    flags: dict[str, Any] = {
        "name": name,
        "endpoint": endpoint,
        "events": list(events) if events else None,
        "disabled": disabled,
        "full_resolution": full_resolution,
        "with_content": with_content,
    }
    merged = {f: getattr(base, f) if flags[f] is None else flags[f] for f in WRITABLE_FIELDS}
    raw_events = merged["events"]
    if isinstance(raw_events, str):
        raw_events = [raw_events]
    if raw_events is not None:
        expanded = expand_events(raw_events)
        if not expanded:
            raise WebhookSpecError("--events names no event")
        merged["events"] = tuple(expanded)
    if merged["name"] is not None and not merged["name"].strip():
        raise WebhookSpecError("the webhook name is empty")
    if merged["endpoint"] is not None:
        check_endpoint(merged["endpoint"], allow_http=allow_http)
    return Desired(**merged)


def check_endpoint(endpoint: str, *, allow_http: bool) -> None:
    """Require an https URL with a host (http too with ``allow_http``).

    Raises:
        WebhookSpecError: the endpoint is not acceptable.
    """
    parts = urlsplit(endpoint)
    allowed = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in allowed or not parts.hostname:
        hint = "" if allow_http or parts.scheme != "http" else " (--allow-http accepts http)"
        raise WebhookSpecError(f"endpoint {endpoint!r} is not an https URL{hint}")


def _read_file(path: Path) -> _WebhookFile:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise WebhookSpecError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise WebhookSpecError(
            f"{path} is not UTF-8 text (byte {exc.start} is {exc.object[exc.start]:#04x}); "
            "save it as UTF-8 TOML"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise WebhookSpecError(f"{path} is not valid TOML: {exc}") from None
    try:
        return msgspec.convert(document, _WebhookFile)
    except msgspec.ValidationError as exc:
        raise WebhookSpecError(f"{path}: {exc}") from None


def plan(
    current: ReportingWebhook | None, desired: Desired
) -> tuple[ReportingWebhook, list[Change]]:
    """The webhook ``desired`` leads to from ``current`` (None: to create), and the changes.

    Events are compared as sets: the API's order is not a difference.

    Raises:
        WebhookSpecError: creating, but name, endpoint or events are missing.
    """
    given = desired.given()
    if current is None:
        missing = [f for f in ("name", "endpoint", "events") if f not in given]
        if missing:
            flags = ", ".join(f"--{f}" for f in missing)
            raise WebhookSpecError(f"a new webhook needs {flags}")
        target = ReportingWebhook(**given)
        return target, [Change(f, None, getattr(target, f)) for f in WRITABLE_FIELDS]
    if "events" in given and set(given["events"]) == set(current.events):
        del given["events"]
    target = msgspec.structs.replace(current, **given)
    changes = [
        Change(f, getattr(current, f), getattr(target, f))
        for f in WRITABLE_FIELDS
        if getattr(current, f) != getattr(target, f)
    ]
    return target, changes


def find_existing(
    webhooks: Sequence[ReportingWebhook], desired: Desired
) -> ReportingWebhook | None:
    """The webhook ``desired`` describes: the one with its name, else the one with its endpoint.

    Raises:
        WebhookSpecError: several webhooks match, so which one to change is unclear.
    """
    for field in ("name", "endpoint"):
        wanted = getattr(desired, field)
        matches = [
            hook for hook in webhooks if wanted is not None and getattr(hook, field) == wanted
        ]
        if len(matches) > 1:
            ids = ", ".join(str(hook.id) for hook in matches)
            raise WebhookSpecError(
                f"several webhooks have {field} {wanted!r} (ids {ids}); "
                "delete the extra ones or use `ciolake webhooks update ID`"
            )
        if matches:
            return matches[0]
    return None


__all__ = [
    "Change",
    "Desired",
    "WebhookSpecError",
    "build_desired",
    "check_endpoint",
    "find_existing",
    "plan",
]
