"""The 69 (object_type, metric) schemas of Customer.io's reporting-webhook spec.

Built once at import from ``derived-metric-matrix.json``, generated from the OpenAPI document and
shipped with the package. Two spec bugs are corrected here: ``push_drafted`` declares metric
``attempted`` (its name and description say ``drafted``), and
``cio_subscription_preferences_changed`` names its discriminator ``object_type_type``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

CUSTOMER_FAMILY_METRICS = frozenset(
    {"subscribed", "unsubscribed", "cio_subscription_preferences_changed"}
)


@dataclass(frozen=True, slots=True)
class MetricSchema:
    """One leaf schema of the spec: where it applies and which ``data`` fields it requires."""

    name: str
    object_types: frozenset[str]
    metric: str
    required: tuple[str, ...]
    optional: tuple[str, ...]
    origin_variants: str | None


def _metric_of(entry: dict[str, object]) -> str:
    name = str(entry["schema"])
    family = entry["family"]
    if family == "customer_event":
        metrics = entry["metric_enum"]
        assert isinstance(metrics, list)
        return str(metrics[0])
    # Channel schemas are named <object_type>_<metric>; the name is right where the enum is
    # wrong (push_drafted).
    object_types = entry["object_type_enum"]
    assert isinstance(object_types, list)
    return name.removeprefix(f"{object_types[0]}_")


def _load() -> tuple[MetricSchema, ...]:
    text = resources.files("ciolake.events").joinpath("derived-metric-matrix.json").read_text()
    matrix = json.loads(text)
    schemas = []
    for entry in matrix["events"]:
        required = tuple(entry["data_required_extra"])
        schemas.append(
            MetricSchema(
                name=entry["schema"],
                object_types=frozenset(entry["object_type_enum"]),
                metric=_metric_of(entry),
                required=required,
                optional=tuple(f for f in entry["data_properties_extra"] if f not in required),
                origin_variants=entry["data_common_variants"],
            )
        )
    return tuple(schemas)


ALL_SCHEMAS: tuple[MetricSchema, ...] = _load()
_CHANNEL: dict[tuple[str, str], MetricSchema] = {
    (next(iter(s.object_types)), s.metric): s for s in ALL_SCHEMAS if len(s.object_types) == 1
}
_CUSTOMER: dict[str, MetricSchema] = {
    s.metric: s
    for s in ALL_SCHEMAS
    if s.metric in CUSTOMER_FAMILY_METRICS and len(s.object_types) > 1
}


def find_schema(object_type: str, metric: str, *, has_delivery_id: bool) -> MetricSchema | None:
    """The schema an event follows, or None when the spec does not know its metric.

    An ``unsubscribed`` with a ``delivery_id`` is a message-level unsubscribe and follows the
    channel's schema where there is one; without it, the person-level one.
    """
    channel = _CHANNEL.get((object_type, metric))
    if channel is not None and (metric != "unsubscribed" or has_delivery_id):
        return channel
    return _CUSTOMER.get(metric)


def target_table(object_type: str, metric: str, *, has_delivery_id: bool) -> str:
    """The channel table an event lands in (the routing rule of docs/reference.md)."""
    if metric in ("subscribed", "cio_subscription_preferences_changed"):
        return "customer_events"
    if metric == "unsubscribed" and not has_delivery_id:
        return "customer_events"
    return f"{object_type}_events"
