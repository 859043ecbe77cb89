"""The dashboard at ``/dashboard``: Vega-Lite charts of the analytics views, served locally.

``GET /dashboard`` is the page; ``GET /dashboard/data/<panel>?since=&until=&channel=`` gives a
panel's rows as JSON (the page fetches them, so it can refresh without reloading);
``/dashboard/static/`` serves the page's script, style and the vendored Vega libraries, so the
dashboard works offline. DuckDB and Altair load on the first dashboard request, not when the
server starts, and every query runs in a worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import functools
import html
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from ciolake.events.model import MESSAGE_CHANNELS
from ciolake.settings import Settings

if TYPE_CHECKING:
    from ciolake.dashboard.queries import Reader, Row

STATIC_DIR = Path(__file__).with_name("static")
ASSETS: dict[str, str] = {
    "vega_js": "vega@6.4.0.min.js",
    "vega_lite_js": "vega-lite@6.4.1.min.js",
    "vega_embed_js": "vega-embed@7.3.0.min.js",
}
"""The vendored browser builds under ``static/`` (see its README for their sources)."""

CHANNELS = MESSAGE_CHANNELS
"""What the channel filter offers."""

logger = logging.getLogger(__name__)

DEFAULT_DAYS = 30
REFRESH_SECONDS = 60
_TEMPLATE = Template(Path(__file__).with_name("dashboard.html").read_text())


class DashboardDataError(Exception):
    """A panel's rows could not be read (tables missing or unreadable).

    Attributes:
        reason: a stable code for the answer: ``tables_missing``, ``tables_unreadable``,
            ``tables_location_invalid`` or ``store_unavailable``.
    """

    def __init__(self, message: str, *, reason: str = "tables_unreadable") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Filters:
    """What the dashboard shows: a range of UTC dates (both included) and one channel or all."""

    since: date
    until: date
    channel: str | None = None

    @property
    def hourly(self) -> bool:
        """Whether per-period panels are shown per hour (three days or less) or per day."""
        return (self.until - self.since).days < 3

    def as_dict(self) -> dict[str, str]:
        """The filters as query-string values."""
        return {
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "channel": self.channel or "",
        }


@dataclass(frozen=True, slots=True)
class Panel:
    """One box of the page: a chart, a table or the headline tiles."""

    name: str
    title: str
    about: str
    kind: str = "chart"
    size: str = ""


COHORT_COLUMNS: tuple[dict[str, str], ...] = (
    {"field": "message", "title": "Campaign / message"},
    {"field": "origin", "title": "Origin", "className": "origin"},
    {"field": "messages", "title": "Messages", "format": "number"},
    {"field": "delivery_rate", "title": "Delivered", "format": "percent"},
    {"field": "open_rate", "title": "Opened", "format": "percent"},
    {"field": "click_rate", "title": "Clicked", "format": "percent"},
    {"field": "conversion_rate", "title": "Converted", "format": "percent"},
    {"field": "unsubscribe_rate", "title": "Unsubscribed", "format": "percent"},
    {"field": "failure_rate", "title": "Failed", "format": "percent"},
)

SECTIONS: tuple[tuple[str, tuple[Panel, ...]], ...] = (
    (
        "Messages",
        (
            Panel(
                "events_per_day",
                "Events per day",
                "Events landed in the channel tables by event date, by channel; choose a"
                " channel to see its metrics.",
                size="wide",
            ),
            Panel(
                "funnel",
                "Delivery funnel",
                "Deliveries sent in the range reaching each step (email unless a channel is"
                " chosen). Percentages are of those sent.",
            ),
            Panel(
                "engagement",
                "Open and click rates",
                "Per send day, of delivered messages. Solid: opened or clicked by a person;"
                " dashed: only by machines (privacy proxies, prefetching, link scanners).",
            ),
            Panel(
                "cohorts",
                "Cohorts by campaign",
                "Deliveries sent in the range, per campaign, broadcast or newsletter. Open and"
                " click rates count people only where the channel tells machines apart.",
                kind="table",
                size="wide",
            ),
            Panel(
                "failures",
                "Failure reasons",
                "The most frequent failure messages of failed, bounced and dropped events.",
            ),
            Panel(
                "subscriptions",
                "Subscription changes",
                "Subscribes, unsubscribes and preference changes per day.",
            ),
        ),
    ),
    (
        "Pipeline health",
        (
            Panel(
                "throughput",
                "Throughput",
                "Deliveries received, by what became of them (all channels).",
                size="third",
            ),
            Panel(
                "lag",
                "Lag",
                "Seconds from the event to its receipt; retries and late events make the tail.",
                size="third",
            ),
            Panel(
                "quarantine",
                "Quarantine",
                "Authentic deliveries that could not be typed, by reason (all channels).",
                size="third",
            ),
        ),
    ),
)
PANELS: tuple[Panel, ...] = (
    Panel("summary", "Summary", "Headline numbers.", kind="tiles"),
    *(panel for _title, panels in SECTIONS for panel in panels),
)
_PANEL_NAMES = frozenset(p.name for p in PANELS)


@dataclass(frozen=True, slots=True)
class _Heavy:
    specs: dict[str, dict[str, Any]]
    queries: dict[str, Callable[[Reader, Filters], list[Row]]]
    default_until: Callable[[Reader, date], date]
    reader: Callable[[str], Reader]


@functools.cache
def _heavy() -> _Heavy:
    # DuckDB and Altair take most of a second to import: only the dashboard needs them, so
    # they load with its first request, not with every ``ciolake serve``.
    from ciolake.dashboard import charts as dashboard_charts  # noqa: PLC0415
    from ciolake.dashboard import queries as dashboard_queries  # noqa: PLC0415

    return _Heavy(
        specs=dashboard_charts.all_specs(),
        queries=dashboard_queries.QUERIES,
        default_until=dashboard_queries.default_until,
        reader=dashboard_queries.LakeReader,
    )


class _Backend:
    # The dashboard's view of the lake, opened on first use and shared by its requests.

    def __init__(
        self,
        tables_uri: str,
        clock: Callable[[], float],
        open_reader: Callable[[], Reader] | None = None,
    ) -> None:
        self.tables_uri = tables_uri
        self._clock = clock
        self._open_reader = open_reader
        self._lock = threading.Lock()
        self._lake: Reader | None = None
        self._unavailable: tuple[str, str] | None = None

    def lake(self) -> Reader:
        with self._lock:
            if self._lake is None:
                opened = self._open_reader or functools.partial(_heavy().reader, self.tables_uri)
                self._lake = opened()
            return self._lake

    def today(self) -> date:
        return datetime.fromtimestamp(self._clock(), UTC).date()

    def filters(self, params: dict[str, str]) -> Filters:
        """Filters from query parameters; missing dates default to the last 30 days of data.

        Raises:
            ValueError: a parameter is invalid.
        """
        channel = params.get("channel") or None
        if channel is not None and channel not in CHANNELS:
            raise ValueError(f"unknown channel {channel!r}: one of {', '.join(CHANNELS)}")
        # Both read before the default, which reads the tables: a bad date is told as such.
        given_since, given_until = _date(params, "since"), _date(params, "until")
        until = given_until or self._default_until()
        since = given_since or until - timedelta(days=DEFAULT_DAYS - 1)
        if since > until:
            raise ValueError("since must not be after until")
        return Filters(since, until, channel)

    def _default_until(self) -> date:
        try:
            return _heavy().default_until(self.lake(), self.today())
        except DashboardDataError:
            return self.today()

    def rows(self, panel: str, filters: Filters) -> list[Row]:
        return _heavy().queries[panel](self.lake(), filters)

    def note_unavailable(self, exc: DashboardDataError) -> None:
        """Log why the tables cannot be read, in one line, once until it changes."""
        said = (exc.reason, str(exc))
        if said != self._unavailable:
            self._unavailable = said
            logger.warning(
                "dashboard data unavailable", extra={"reason": said[0], "error": said[1]}
            )

    def note_available(self) -> None:
        """The tables were read: a later failure is logged again."""
        self._unavailable = None

    def close(self) -> None:
        with self._lock:
            if self._lake is not None:
                self._lake.close()
                self._lake = None


def _date(params: dict[str, str], name: str) -> date | None:
    raw = params.get(name, "").strip()
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise ValueError(
            f"{name} must be a date like 2026-01-31 (YYYY-MM-DD), got {raw!r}"
        ) from None


def dashboard_routes(
    settings: Settings, *, clock: Callable[[], float], prefix: str = "/dashboard"
) -> list[BaseRoute]:
    """The dashboard's routes, to add to a Starlette application.

    Args:
        settings: where the tables are (``tables_location``).
        clock: current unix time in seconds; "today" for the default date range.
        prefix: the path the dashboard lives under.
    """
    return _routes(_Backend(settings.tables_location, clock), prefix)


def dashboard_app(
    settings: Settings,
    *,
    clock: Callable[[], float],
    open_reader: Callable[[], Reader] | None = None,
    source: str | None = None,
) -> Starlette:
    """The dashboard alone, as ``ciolake dashboard`` serves it (``/`` redirects to it).

    Args:
        settings: where the tables are.
        clock: current unix time in seconds.
        open_reader: what the panels read through, opened at the first request (default:
            DuckDB over ``settings.tables_location``).
        source: what the page names as its source (default: the tables' location).
    """
    backend = _Backend(source or settings.tables_location, clock, open_reader)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await asyncio.to_thread(backend.close)

    home = Route("/", _home, methods=["GET"])
    return Starlette(routes=[*_routes(backend, "/dashboard"), home], lifespan=lifespan)


def _routes(backend: _Backend, prefix: str) -> list[BaseRoute]:
    return [
        Route(prefix, functools.partial(_page, backend, prefix), methods=["GET"]),
        Route(prefix + "/data/{panel}", functools.partial(_data, backend), methods=["GET"]),
        Mount(prefix + "/static", app=StaticFiles(directory=STATIC_DIR)),
    ]


async def _home(request: Request) -> Response:
    return RedirectResponse("/dashboard")


def _error(status: int, reason: str, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "reason": reason}, status_code=status)


async def _page(backend: _Backend, prefix: str, request: Request) -> Response:
    try:
        filters = await asyncio.to_thread(backend.filters, dict(request.query_params))
    except ValueError as exc:
        return _error(400, "bad_filter", str(exc))
    specs = await asyncio.to_thread(lambda: _heavy().specs)
    return HTMLResponse(_render(prefix, filters, specs, backend.tables_uri))


async def _data(backend: _Backend, request: Request) -> Response:
    panel = request.path_params["panel"]
    if panel not in _PANEL_NAMES:
        return _error(404, "unknown_panel", f"no panel {panel!r}")
    try:
        filters = await asyncio.to_thread(backend.filters, dict(request.query_params))
    except ValueError as exc:
        return _error(400, "bad_filter", str(exc))
    try:
        rows = await asyncio.to_thread(backend.rows, panel, filters)
    except DashboardDataError as exc:
        backend.note_unavailable(exc)
        return _error(503, exc.reason, str(exc))
    backend.note_available()
    payload = {"panel": panel, "filters": filters.as_dict(), "rows": rows}
    return JSONResponse(payload, headers={"Cache-Control": "no-store"})


def _render(prefix: str, filters: Filters, specs: dict[str, Any], tables_uri: str) -> str:
    config = {
        "base": prefix,
        "refresh_seconds": REFRESH_SECONDS,
        "filters": filters.as_dict(),
        "panels": [_panel_config(p) for p in PANELS],
        "specs": specs,
    }
    # Inside <script>, "</" would end the element: JSON allows "<\/" for it.
    config_json = json.dumps(config, separators=(",", ":")).replace("</", "<\\/")
    return _TEMPLATE.substitute(
        static=html.escape(prefix + "/static"),
        base=html.escape(prefix),
        since=filters.since.isoformat(),
        until=filters.until.isoformat(),
        channel_options=_channel_options(filters.channel),
        sections="\n".join(_section(title, panels) for title, panels in SECTIONS),
        tables=html.escape(tables_uri),
        config=config_json,
        **ASSETS,
    )


def _panel_config(panel: Panel) -> dict[str, Any]:
    config: dict[str, Any] = {"name": panel.name, "kind": panel.kind}
    if panel.kind == "table":
        config["columns"] = COHORT_COLUMNS
    return config


def _channel_options(selected: str | None) -> str:
    options = ['<option value="">All channels</option>']
    for channel in CHANNELS:
        chosen = " selected" if channel == selected else ""
        label = channel.replace("_", "-")
        options.append(f'<option value="{channel}"{chosen}>{label}</option>')
    return "".join(options)


def _section(title: str, panels: tuple[Panel, ...]) -> str:
    grid = "grid thirds" if all(p.size == "third" for p in panels) else "grid"
    boxes = "\n".join(
        f'      <section class="panel {p.size}" data-panel="{p.name}">\n'
        f"        <h2>{html.escape(p.title)}</h2>\n"
        f'        <p class="about">{html.escape(p.about)}</p>\n'
        f'        <div class="panel-body"></div>\n'
        "      </section>"
        for p in panels
    )
    heading = f'    <h3 class="section">{html.escape(title)}</h3>'
    return f'{heading}\n    <div class="{grid}">\n{boxes}\n    </div>'
