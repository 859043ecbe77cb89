"""The dashboard's charts: Vega-Lite specs built with Altair, without data.

The page fetches each panel's rows from ``/dashboard/data/<panel>`` and puts them in as the
spec's data, so a spec is built once per process and the same rows can be read as JSON.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import altair as alt

Spec = dict[str, Any]

_FONT = 'system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif'
_MUTED = "#52606d"
_CHANNEL_COLORS = {
    "email": "#2563eb",
    "push": "#f59e0b",
    "in_app": "#10b981",
    "sms": "#8b5cf6",
    "slack": "#ec4899",
    "webhook": "#64748b",
    "whatsapp": "#22c55e",
    "customer": "#94a3b8",
}
_PALETTE = ["#2563eb", "#f59e0b", "#10b981", "#8b5cf6", "#ec4899", "#14b8a6", "#ef4444", "#64748b"]
_HEIGHT = 230
_FIT_WIDTH = alt.AutoSizeParams(type="fit-x", contains="padding")
_LAG_TICKS = (0.1, 1, 10, 60, 600, 3_600, 21_600, 86_400, 604_800)
_LAG_LABEL = (
    "datum.value >= 86400 ? datum.value / 86400 + ' d'"
    " : datum.value >= 3600 ? datum.value / 3600 + ' h'"
    " : datum.value >= 60 ? datum.value / 60 + ' min' : datum.value + ' s'"
)
_TimeUnit = Literal["utcyearmonthdate", "utcyearmonthdatehours"]
_TIME_UNITS: dict[str, _TimeUnit] = {"day": "utcyearmonthdate", "hour": "utcyearmonthdatehours"}
_TIME_FORMATS = {"day": "%b %d", "hour": "%b %d %H:%M"}


def _rows() -> alt.Chart:
    return alt.Chart(alt.NamedData(name="rows"))


def _finish(chart: alt.TopLevelMixin, height: int = _HEIGHT) -> Spec:
    # A fixed height fits the width only (fit-x); a height per bar (a Step) leaves the
    # autosize to Vega-Lite, which otherwise warns that it drops fit-y.
    sizing: dict[str, Any] = {} if isinstance(height, alt.Step) else {"autosize": _FIT_WIDTH}
    spec: Spec = (
        chart.properties(width="container", height=height, **sizing)
        .configure(font=_FONT, background="transparent")
        .configure_view(stroke=None)
        .configure_axis(
            labelColor=_MUTED,
            titleColor=_MUTED,
            gridColor="#edf0f3",
            domainColor="#cbd2d9",
            tickColor="#cbd2d9",
            labelFontSize=11,
            titleFontSize=11,
            titleFontWeight="normal",
        )
        .configure_legend(
            orient="top", labelFontSize=11, labelColor=_MUTED, symbolType="circle", title=None
        )
        .configure_range(category=_PALETTE)
        .to_dict()
    )
    return spec


def _day_axis(field: str = "day", grain: str = "day") -> alt.X:
    # Per day, a tick per day at most (labels thinned where they would overlap): a short range
    # would otherwise get a tick every 12 hours, and each day's label twice.
    ticks: dict[str, Any] = (
        {"tickCount": alt.TimeIntervalStep(interval="day", step=1)} if grain == "day" else {}
    )
    return alt.X(
        f"{field}:T",
        timeUnit=_TIME_UNITS[grain],
        title=None,
        scale=alt.Scale(type="utc"),
        axis=alt.Axis(
            format=_TIME_FORMATS[grain],
            labelAngle=0,
            labelOverlap="greedy",
            labelSeparation=8,
            grid=False,
            **ticks,
        ),
    )


def _channel_color(field: str) -> alt.Color:
    return alt.Color(
        f"{field}:N",
        scale=alt.Scale(domain=list(_CHANNEL_COLORS), range=list(_CHANNEL_COLORS.values())),
        legend=alt.Legend(title=None),
    )


def events_per_day(series: str) -> Spec:
    """Stacked bars of events per day, by channel (or by metric within one channel)."""
    color = (
        _channel_color("series")
        if series == "channel"
        else alt.Color("series:N", legend=alt.Legend(title=None))
    )
    chart = (
        _rows()
        .mark_bar()
        .encode(
            x=_day_axis(),
            y=alt.Y("sum(events):Q", title="events", stack="zero"),
            color=color,
            tooltip=[
                alt.Tooltip("day:T", title="day", format="%Y-%m-%d", formatType="utc"),
                alt.Tooltip("series:N", title=series),
                alt.Tooltip("events:Q", format=","),
            ],
        )
    )
    return _finish(chart)


def funnel() -> Spec:
    """Horizontal bars from sent to converted, labelled with the share of those sent."""
    base = _rows().encode(
        y=alt.Y("stage:N", sort=alt.EncodingSortField("step", op="min"), title=None),
        x=alt.X("deliveries:Q", title="deliveries", axis=alt.Axis(format="~s")),
        tooltip=[
            alt.Tooltip("stage:N"),
            alt.Tooltip("deliveries:Q", format=","),
            alt.Tooltip("share:Q", title="of sent", format=".1%"),
        ],
    )
    bars = base.mark_bar(color="#2563eb", cornerRadiusEnd=3, size=22)
    labels = (
        base.transform_calculate(
            label="format(datum.deliveries, ',') + '  ·  ' + format(datum.share, '.1%')"
        )
        .mark_text(align="left", dx=5, color=_MUTED, fontSize=11)
        .encode(text=alt.Text("label:N"))
    )
    return _finish(alt.layer(bars, labels))


def engagement(split: bool) -> Spec:
    """Open and click rates per send day; solid for people, dashed for machines only."""
    encoding: dict[str, Any] = {
        "x": _day_axis(),
        "y": alt.Y("rate:Q", title="of delivered", axis=alt.Axis(format="%")),
        "color": alt.Color(
            "measure:N",
            scale=alt.Scale(domain=["Open rate", "Click rate"], range=["#2563eb", "#f59e0b"]),
            legend=alt.Legend(title=None, symbolType="stroke", symbolStrokeWidth=3),
        ),
        "tooltip": [
            alt.Tooltip("day:T", title="send day", format="%Y-%m-%d", formatType="utc"),
            alt.Tooltip("measure:N"),
            alt.Tooltip("audience:N"),
            alt.Tooltip("rate:Q", format=".1%"),
        ],
    }
    if split:
        encoding["strokeDash"] = alt.StrokeDash(
            "audience:N",
            scale=alt.Scale(domain=["People", "Machines only"], range=[[1, 0], [5, 3]]),
            legend=alt.Legend(
                title=None, symbolType="stroke", symbolStrokeColor=_MUTED, symbolStrokeWidth=2
            ),
        )
    base = _rows()
    lines = base.mark_line(strokeWidth=2).encode(**encoding)
    # Points as a layer of their own (a line's point overlay blanks the dash legend's
    # symbols): a range of one day has no line to draw.
    points = base.mark_point(filled=True, size=30).encode(
        x=encoding["x"], y=encoding["y"], color=encoding["color"], tooltip=encoding["tooltip"]
    )
    return _finish(alt.layer(lines, points))


def failures() -> Spec:
    """The most frequent failure messages, coloured by channel."""
    chart = (
        _rows()
        # The same thickness whether one message is shown or twelve.
        .mark_bar(cornerRadiusEnd=3, size=14)
        .encode(
            y=alt.Y(
                "failure_message:N",
                sort="-x",
                title=None,
                axis=alt.Axis(labelLimit=300),
            ),
            x=alt.X("failures:Q", title="failures", axis=alt.Axis(tickMinStep=1, format="~s")),
            color=_channel_color("channel"),
            tooltip=[
                alt.Tooltip("channel:N"),
                alt.Tooltip("failure_message:N", title="message"),
                alt.Tooltip("failures:Q", format=","),
            ],
        )
    )
    return _finish(chart)


def subscriptions() -> Spec:
    """Stacked bars of subscription changes per day."""
    chart = (
        _rows()
        .mark_bar()
        .encode(
            x=_day_axis(),
            y=alt.Y("sum(changes):Q", title="changes", axis=alt.Axis(tickMinStep=1)),
            color=alt.Color(
                "change:N",
                scale=alt.Scale(
                    domain=["Subscribed", "Unsubscribed", "Preferences changed"],
                    range=["#10b981", "#ef4444", "#8b5cf6"],
                ),
                legend=alt.Legend(title=None),
            ),
            tooltip=[
                alt.Tooltip("day:T", format="%Y-%m-%d", formatType="utc"),
                alt.Tooltip("change:N"),
                alt.Tooltip("changes:Q", format=","),
            ],
        )
    )
    return _finish(chart)


def throughput(grain: str) -> Spec:
    """Deliveries received per period: landed, duplicate, quarantined."""
    chart = (
        _rows()
        .mark_bar()
        .encode(
            x=_day_axis("period", grain),
            y=alt.Y("sum(deliveries):Q", title="deliveries", axis=alt.Axis(format="~s")),
            color=alt.Color(
                "kind:N",
                scale=alt.Scale(
                    domain=["Landed", "Duplicate", "Quarantined"],
                    range=["#2563eb", "#93c5fd", "#ef4444"],
                ),
                legend=alt.Legend(title=None),
            ),
            tooltip=[
                alt.Tooltip("period:T", format=_TIME_FORMATS[grain], formatType="utc"),
                alt.Tooltip("kind:N"),
                alt.Tooltip("deliveries:Q", format=","),
            ],
        )
    )
    return _finish(chart, height=200)


def lag(grain: str) -> Spec:
    """Lag from event to receipt per period, on a log scale."""
    chart = (
        _rows()
        .transform_filter("datum.seconds > 0")
        .mark_line(point=alt.OverlayMarkDef(size=14), strokeWidth=2)
        .encode(
            x=_day_axis("period", grain),
            y=alt.Y(
                "seconds:Q",
                title="lag (log scale)",
                scale=alt.Scale(type="log"),
                axis=alt.Axis(values=list(_LAG_TICKS), labelExpr=_LAG_LABEL),
            ),
            color=alt.Color(
                "stat:N",
                scale=alt.Scale(
                    domain=["Median", "99th percentile", "Maximum"],
                    range=["#2563eb", "#f59e0b", "#94a3b8"],
                ),
                legend=alt.Legend(title=None),
            ),
            tooltip=[
                alt.Tooltip("period:T", format=_TIME_FORMATS[grain], formatType="utc"),
                alt.Tooltip("stat:N"),
                alt.Tooltip("seconds:Q", format=",.1f"),
            ],
        )
    )
    return _finish(chart, height=200)


def quarantine(grain: str) -> Spec:
    """Quarantined deliveries per period, by reason."""
    chart = (
        _rows()
        .mark_bar()
        .encode(
            x=_day_axis("period", grain),
            y=alt.Y("sum(deliveries):Q", title="deliveries", axis=alt.Axis(tickMinStep=1)),
            color=alt.Color("reason:N", legend=alt.Legend(title=None, columns=2)),
            tooltip=[
                alt.Tooltip("period:T", format=_TIME_FORMATS[grain], formatType="utc"),
                alt.Tooltip("reason:N"),
                alt.Tooltip("deliveries:Q", format=","),
            ],
        )
    )
    return _finish(chart, height=200)


_BUILDERS: dict[str, Callable[[], Spec]] = {
    "events_per_day": lambda: events_per_day("channel"),
    "events_per_day:metric": lambda: events_per_day("metric"),
    "funnel": funnel,
    "engagement": lambda: engagement(split=True),
    "engagement:all": lambda: engagement(split=False),
    "failures": failures,
    "subscriptions": subscriptions,
}
_BY_GRAIN: dict[str, Callable[[str], Spec]] = {
    "throughput": throughput,
    "lag": lag,
    "quarantine": quarantine,
}


def all_specs() -> dict[str, Spec]:
    """Every chart's spec by panel name, and its variants as ``<name>:<variant>``."""
    specs = {name: build() for name, build in _BUILDERS.items()}
    for name, build in _BY_GRAIN.items():
        specs[name] = build("day")
        specs[f"{name}:hour"] = build("hour")
    return specs


def vega_lite_version() -> str:
    """The Vega-Lite version of the specs (Altair's schema version, without the ``v``)."""
    return str(alt.SCHEMA_VERSION).lstrip("v")
