"""Per-channel delivery funnels and send-date cohort metrics, generated from one definition.

Each channel is described once (which metrics it has, which outcomes imply which, which rates it
reports); the SQL of ``<channel>_delivery_funnel``, ``<channel>_cohort_metrics`` and the long
``cohort_rates`` view is generated from that description, in DuckDB's dialect. So seven channels
never mean seven hand-kept copies of the same query.

Two rules make every rate at most 100% by construction:

* the funnel is closed upwards: an outcome implies the steps before it (an opened email was
  delivered, a delivered one was sent), so a lost ``delivered`` webhook cannot leave an open
  without a delivery;
* a rate's numerator counts only deliveries that are also in its denominator.

Counts are of deliveries (``delivery_id``), never of events: five opens of one message are one
opened delivery.
"""

from __future__ import annotations

from dataclasses import dataclass

from ciolake.events.schemas import ALL_SCHEMAS
from ciolake.lake.tables import CHANNEL_SPECS

ORIGIN_COLUMNS: tuple[str, ...] = (
    "origin",
    "campaign_id",
    "broadcast_id",
    "newsletter_id",
    "transactional_message_id",
    "action_id",
)
"""The cohort metrics' grouping besides ``cohort_date``: where the message comes from."""

CUSTOMER_KEY = "coalesce(identifier_cio_id, identifier_id, customer_id, identifier_email)"
"""Who an event is about: the most stable identifier it carries."""

_PER_DELIVERY_COLUMNS: tuple[str, ...] = (*ORIGIN_COLUMNS, "template_id")
HUMAN_OPEN = (
    "metric = 'opened' AND NOT (coalesce(proxied, FALSE) OR coalesce(prefetched, FALSE)"
    " OR coalesce(synthetic, FALSE))"
)
HUMAN_CLICK = "metric = 'clicked' AND NOT coalesce(machine, FALSE)"


@dataclass(frozen=True, slots=True)
class Flag:
    """An outcome of a delivery: true when an event matches ``condition`` or an implying flag."""

    name: str
    condition: str
    implied_by: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Rate:
    """A rate: numerator over denominator, both counted in deliveries (or push devices).

    ``denominator`` is a flag name, or ``None`` for every delivery of the cohort. With
    ``devices`` the two name per-delivery device counts to be summed instead.
    """

    name: str
    numerator: str
    denominator: str | None
    devices: bool = False


@dataclass(frozen=True, slots=True)
class Channel:
    """One messaging channel: its table, outcomes and rates."""

    name: str
    flags: tuple[Flag, ...]
    rates: tuple[Rate, ...]
    devices: bool = False

    @property
    def table(self) -> str:
        """The channel's Delta table."""
        return f"{self.name}_events"

    @property
    def funnel_view(self) -> str:
        """Name of the one-row-per-delivery view."""
        return f"{self.name}_delivery_funnel"

    @property
    def cohort_view(self) -> str:
        """Name of the cohort metrics view."""
        return f"{self.name}_cohort_metrics"

    def flag(self, name: str) -> Flag:
        """The flag called ``name``."""
        for flag in self.flags:
            if flag.name == name:
                return flag
        raise KeyError(name)


def channel_metrics(channel: str) -> tuple[str, ...]:
    """The metrics the spec defines for a channel, in the spec's order."""
    return tuple(
        schema.metric for schema in ALL_SCHEMAS if schema.object_types == frozenset({channel})
    )


def _flags(
    channel: str, implied: dict[str, tuple[str, ...]], extra: tuple[Flag, ...] = ()
) -> tuple[Flag, ...]:
    flags = [Flag(m, f"metric = '{m}'", implied.get(m, ())) for m in channel_metrics(channel)]
    return (*flags, *extra)


def _r(name: str, numerator: str, denominator: str | None) -> Rate:
    return Rate(name, numerator, denominator)


_SENT = ("delivered", "bounced")
_EMAIL = Channel(
    "email",
    _flags(
        "email",
        {
            "sent": _SENT,
            "delivered": ("opened", "clicked", "converted", "spammed", "unsubscribed"),
        },
        (Flag("human_opened", HUMAN_OPEN), Flag("human_clicked", HUMAN_CLICK)),
    ),
    (
        _r("delivery", "delivered", "sent"),
        _r("open", "opened", "delivered"),
        _r("human_open", "human_opened", "delivered"),
        _r("click", "clicked", "delivered"),
        _r("human_click", "human_clicked", "delivered"),
        _r("click_to_open", "clicked", "opened"),
        _r("human_click_to_open", "human_clicked", "human_opened"),
        _r("conversion", "converted", "delivered"),
        _r("bounce", "bounced", "sent"),
        _r("spam_complaint", "spammed", "delivered"),
        _r("unsubscribe", "unsubscribed", "delivered"),
        _r("failure", "failed", None),
    ),
)
_PUSH = Channel(
    "push",
    _flags("push", {"sent": _SENT, "delivered": ("opened", "clicked", "converted")}),
    (
        _r("delivery", "delivered", "sent"),
        _r("open", "opened", "delivered"),
        _r("click", "clicked", "delivered"),
        _r("conversion", "converted", "delivered"),
        _r("bounce", "bounced", "sent"),
        _r("failure", "failed", None),
        Rate("device_delivery", "devices_delivered", "devices", devices=True),
        Rate("device_failure", "devices_failed", "devices", devices=True),
    ),
    devices=True,
)
_IN_APP = Channel(
    "in_app",
    _flags("in_app", {"sent": ("opened", "clicked", "converted"), "opened": ("clicked",)}),
    (
        _r("open", "opened", "sent"),
        _r("click", "clicked", "sent"),
        _r("click_to_open", "clicked", "opened"),
        _r("conversion", "converted", "sent"),
        _r("failure", "failed", None),
    ),
)
_SMS = Channel(
    "sms",
    _flags("sms", {"sent": _SENT, "delivered": ("clicked", "converted", "replied")}),
    (
        _r("delivery", "delivered", "sent"),
        _r("click", "clicked", "delivered"),
        _r("conversion", "converted", "delivered"),
        _r("reply", "replied", "delivered"),
        _r("bounce", "bounced", "sent"),
        _r("failure", "failed", None),
    ),
)
_WHATSAPP = Channel(
    "whatsapp",
    _flags(
        "whatsapp",
        {"sent": _SENT, "delivered": ("opened", "clicked", "converted", "replied")},
    ),
    (
        _r("delivery", "delivered", "sent"),
        _r("open", "opened", "delivered"),
        _r("click", "clicked", "delivered"),
        _r("conversion", "converted", "delivered"),
        _r("reply", "replied", "delivered"),
        _r("bounce", "bounced", "sent"),
        _r("failure", "failed", None),
    ),
)


def _sent_or_failed(name: str) -> Channel:
    return Channel(
        name,
        _flags(name, {"sent": ("clicked",)}),
        (_r("send", "sent", None), _r("failure", "failed", None)),
    )


CHANNELS: tuple[Channel, ...] = (
    _EMAIL,
    _PUSH,
    _IN_APP,
    _SMS,
    _sent_or_failed("slack"),
    _sent_or_failed("webhook"),
    _WHATSAPP,
)
"""Every messaging channel with a delivery funnel (customer events have none)."""


def _closure(channel: Channel, name: str) -> list[str]:
    """The flag itself and every flag that implies it, transitively, in a stable order."""
    found: list[str] = []
    pending = [name]
    while pending:
        current = pending.pop(0)
        if current in found:
            continue
        found.append(current)
        pending.extend(channel.flag(current).implied_by)
    return found


def flag_expression(channel: Channel, name: str) -> str:
    """SQL that is true when a delivery of the funnel has outcome ``name`` (closure included)."""
    return " OR ".join(f"{n}_at IS NOT NULL" for n in _closure(channel, name))


def customerio_events_sql() -> str:
    """Every event of the eight channel tables, with the columns they share."""
    columns = (
        "event_id",
        "object_type",
        "metric",
        "event_time",
        "event_date",
        "received_at",
        "customer_id",
        "identifier_id",
        "identifier_email",
        "identifier_cio_id",
        "identifier_phone",
        "email_address",
        "delivery_id",
        *_PER_DELIVERY_COLUMNS,
        "recipient",
        "failure_message",
        "href",
        "content",
        "source",
    )
    parts = []
    for table, spec in CHANNEL_SPECS.items():
        present = set(spec.schema.names)
        selected = [c if c in present else f"CAST(NULL AS VARCHAR) AS {c}" for c in columns]
        parts.append(
            f"SELECT\n    '{table}' AS source_table,\n    "
            + ",\n    ".join(selected)
            + f",\n    {CUSTOMER_KEY} AS customer_key\nFROM {table}"
        )
    return "\nUNION ALL\n".join(parts)


def funnel_sql(channel: Channel) -> str:
    """One row per ``delivery_id``: cohort, origin, and a flag and first time per outcome."""
    firsts = [
        f"min(CASE WHEN {flag.condition} THEN event_time END) AS {flag.name}_at"
        for flag in channel.flags
    ]
    origin = [f"max({c}) AS {c}" for c in _PER_DELIVERY_COLUMNS]
    per_delivery = ",\n        ".join(
        [
            "delivery_id",
            "min(CASE WHEN metric = 'sent' THEN event_date END) AS sent_date",
            "min(event_time) AS first_event_at",
            "min(event_date) AS first_event_date",
            *origin,
            f"max({CUSTOMER_KEY}) AS customer_key",
            "count(*) AS events",
            *firsts,
        ]
    )
    outcomes = []
    for flag in channel.flags:
        outcomes.append(f"{flag_expression(channel, flag.name)} AS {flag.name}")
        outcomes.append(f"{flag.name}_at")
    selected = ",\n    ".join(
        [
            "p.delivery_id",
            "coalesce(p.sent_at, p.first_event_at) AS cohort_time",
            # event_date is the UTC day of event_time, so the earliest time has the earliest day.
            "coalesce(p.sent_date, p.first_event_date) AS cohort_date",
            "p.sent_at IS NULL AS cohort_from_first_event",
            *(f"p.{c}" for c in _PER_DELIVERY_COLUMNS),
            "p.customer_key",
            "p.events",
            *outcomes,
            *(_device_columns() if channel.devices else []),
        ]
    )
    joins = _device_join() if channel.devices else ""
    return (
        f"WITH per_delivery AS (\n    SELECT\n        {per_delivery}\n    FROM {channel.table}\n"
        f"    WHERE delivery_id IS NOT NULL\n    GROUP BY delivery_id\n)\n"
        f"SELECT\n    {selected}\nFROM per_delivery AS p{joins}"
    )


def _device_columns() -> list[str]:
    return [
        "coalesce(d.devices, 0) AS devices",
        "coalesce(d.devices_delivered, 0) AS devices_delivered",
        "coalesce(d.devices_failed, 0) AS devices_failed",
    ]


def _device_join() -> str:
    return (
        "\nLEFT JOIN (\n    SELECT\n        delivery_id,\n        count(*) AS devices,\n"
        "        sum(CASE WHEN delivered THEN 1 ELSE 0 END) AS devices_delivered,\n"
        "        sum(CASE WHEN failed THEN 1 ELSE 0 END) AS devices_failed\n"
        "    FROM push_device_outcomes\n    GROUP BY delivery_id\n) AS d\n"
        "    ON d.delivery_id = p.delivery_id"
    )


def _numerator(rate: Rate) -> str:
    if rate.devices:
        return f"sum({rate.numerator})"
    within = (
        rate.numerator if rate.denominator is None else f"{rate.denominator} AND {rate.numerator}"
    )
    return f"sum(CASE WHEN {within} THEN 1 ELSE 0 END)"


def _denominator(rate: Rate) -> str:
    if rate.devices:
        return f"sum({rate.denominator})"
    if rate.denominator is None:
        return "count(*)"
    return f"sum(CASE WHEN {rate.denominator} THEN 1 ELSE 0 END)"


def cohort_sql(channel: Channel) -> str:
    """Rates by send-date cohort and origin, each with its numerator and denominator."""
    group = ", ".join(("cohort_date", *ORIGIN_COLUMNS))
    counts = [f"sum(CASE WHEN {f.name} THEN 1 ELSE 0 END) AS {f.name}" for f in channel.flags]
    if channel.devices:
        counts += [f"sum({c}) AS {c}" for c in ("devices", "devices_delivered", "devices_failed")]
    parts = []
    for rate in channel.rates:
        parts.append(f"{_numerator(rate)} AS {rate.name}_numerator")
        parts.append(f"{_denominator(rate)} AS {rate.name}_denominator")
    inner = ",\n        ".join([group, "count(*) AS deliveries", *counts, *parts])
    rates = [
        f"CASE WHEN {r.name}_denominator = 0 THEN NULL"
        f" ELSE CAST({r.name}_numerator AS DOUBLE) / {r.name}_denominator END AS {r.name}_rate"
        for r in channel.rates
    ]
    outer = ",\n    ".join(["counted.*", *rates])
    return (
        f"WITH counted AS (\n    SELECT\n        {inner}\n    FROM {channel.funnel_view}\n"
        f"    GROUP BY {group}\n)\nSELECT\n    {outer}\nFROM counted"
    )


def cohort_rates_sql() -> str:
    """Every channel's rates in one long view: one row per cohort, origin and rate.

    Each channel's cohort view is read once and crossed with the list of its rates, so the
    funnels are computed once per channel, not once per rate.
    """
    keys = ", ".join(f"m.{c}" for c in ("cohort_date", *ORIGIN_COLUMNS))
    parts = []
    for channel in CHANNELS:
        names = [rate.name for rate in channel.rates]
        listed = ", ".join(f"('{name}_rate')" for name in names)
        parts.append(
            f"SELECT\n    '{channel.name}' AS channel,\n    {keys},\n    r.rate,\n"
            f"    {_pick(names, 'numerator')} AS numerator,\n"
            f"    {_pick(names, 'denominator')} AS denominator,\n"
            f"    {_pick(names, 'rate')} AS value\n"
            f"FROM {channel.cohort_view} AS m\nCROSS JOIN (VALUES {listed}) AS r(rate)"
        )
    return "\nUNION ALL\n".join(parts)


def _pick(names: list[str], suffix: str) -> str:
    """The column ``<rate>_<suffix>`` of the rate named in ``r.rate``."""
    cases = " ".join(f"WHEN '{name}_rate' THEN m.{name}_{suffix}" for name in names)
    return f"CASE r.rate {cases} END"
