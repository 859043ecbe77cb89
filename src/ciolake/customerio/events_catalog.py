"""The event names a reporting webhook subscribes to through the App API, and their groups.

The App API names events differently from the payloads Customer.io sends: a payload with
``object_type`` ``email`` and ``metric`` ``opened`` is subscribed to as ``email_opened``, and the
customer-family metrics are ``customer_subscribed``, ``customer_unsubscribed`` and
``customer_subscription_preferences_changed`` (not ``cio_...``). The channel names are derived
from the payload schemas, so that a metric added to the spec is subscribable without an edit here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

from ciolake.errors import TerminalError
from ciolake.events.model import MESSAGE_CHANNELS
from ciolake.events.schemas import ALL_SCHEMAS, CUSTOMER_FAMILY_METRICS

CHANNELS = MESSAGE_CHANNELS
CUSTOMER_GROUP = "customer"
ALL = "all"

_CUSTOMER_EVENT_NAMES: Mapping[str, str] = MappingProxyType(
    {
        "subscribed": "customer_subscribed",
        "unsubscribed": "customer_unsubscribed",
        "cio_subscription_preferences_changed": "customer_subscription_preferences_changed",
    }
)
# In the App API's events enum but without a payload schema in the reporting-webhooks spec.
_ENUM_ONLY_NAMES = frozenset(
    {"email_deferred", "sms_dropped", "slack_converted", "webhook_converted"}
)
# Has a payload schema, but the App API's events enum (createWebhook in journeys-app.json) does
# not list it, so the API would answer 400 to a subscription that names it.
_NOT_SUBSCRIBABLE = frozenset({"slack_undeliverable"})


class UnknownEventError(TerminalError):
    """Event names that are neither App API event names nor groups.

    Attributes:
        unknown: every unknown name, sorted, as given.
    """

    def __init__(self, unknown: Iterable[str]) -> None:
        self.unknown: tuple[str, ...] = tuple(sorted(set(unknown)))
        listed = ", ".join(repr(name) for name in self.unknown)
        super().__init__(
            f"unknown event name(s): {listed}; use App API event names such as 'email_opened', "
            f"a group ({', '.join(sorted(GROUPS))}) or '{ALL}'"
        )


def _channel_names() -> frozenset[str]:
    names = set(_ENUM_ONLY_NAMES)
    for schema in ALL_SCHEMAS:
        if len(schema.object_types) == 1:
            (channel,) = schema.object_types
            names.add(f"{channel}_{schema.metric}")
    return frozenset(names - _NOT_SUBSCRIBABLE)


def _customer_names() -> frozenset[str]:
    metrics = {s.metric for s in ALL_SCHEMAS if s.metric in CUSTOMER_FAMILY_METRICS}
    return frozenset(_CUSTOMER_EVENT_NAMES[metric] for metric in metrics)


def _groups(
    channel_names: frozenset[str], customer_names: frozenset[str]
) -> dict[str, frozenset[str]]:
    groups = {
        channel: frozenset(n for n in channel_names if n.startswith(f"{channel}_"))
        for channel in CHANNELS
    }
    groups[CUSTOMER_GROUP] = customer_names
    return groups


_CHANNEL_NAMES = _channel_names()
CUSTOMER_EVENTS: frozenset[str] = _customer_names()
EVENT_NAMES: frozenset[str] = _CHANNEL_NAMES | CUSTOMER_EVENTS
GROUPS: Mapping[str, frozenset[str]] = MappingProxyType(_groups(_CHANNEL_NAMES, CUSTOMER_EVENTS))


def expand_events(requested: Iterable[str]) -> list[str]:
    """Expand event names, groups and ``all`` into a sorted list of App API event names.

    Each item may itself be comma-separated (``"email,sms_sent"``); blanks and case around names
    are forgiven, duplicates collapse.

    Args:
        requested: event names (``email_opened``), groups (``email``, ``customer``) or ``all``.

    Returns:
        The App API event names, sorted and without duplicates (empty if nothing was requested).

    Raises:
        UnknownEventError: some names are unknown; the error names all of them.
    """
    selected: set[str] = set()
    unknown: list[str] = []
    for token in _tokens(requested):
        if token == ALL:
            selected |= EVENT_NAMES
        elif token in GROUPS:
            selected |= GROUPS[token]
        elif token in EVENT_NAMES:
            selected.add(token)
        else:
            unknown.append(token)
    if unknown:
        raise UnknownEventError(unknown)
    return sorted(selected)


def summarize_events(names: Iterable[str]) -> list[str]:
    """Describe a set of event names compactly: ``all``, whole groups by name, then the rest.

    Names outside the catalog (an API that has grown new ones) are kept as they are.
    """
    remaining = set(names)
    if remaining >= EVENT_NAMES:
        return [ALL, *sorted(remaining - EVENT_NAMES)]
    summary: list[str] = []
    for group, members in GROUPS.items():
        if members and members <= remaining:
            summary.append(group)
            remaining -= members
    return summary + sorted(remaining)


def _tokens(requested: Iterable[str]) -> list[str]:
    return [part.strip().lower() for item in requested for part in item.split(",") if part.strip()]
