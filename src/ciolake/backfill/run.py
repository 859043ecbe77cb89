"""One backfill: day after day of Customer.io's delivery records into the channel tables.

First, the backfilled rows whose own webhook event arrived since (a late retry) are removed:
the webhook's row supersedes them.

Each day of the window is one unit of work: its deliveries are listed (``/v1/messages``), the
rows the tables already hold for them are looked up (any source: a webhook row always wins),
the others are committed, one commit per table, and the day is recorded as done in a
checkpoint file, so that a run interrupted at any point starts again at the first day not
done. A run over days already done adds nothing but what Customer.io learnt since.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

import msgspec

from ciolake.analytics.duck import Lake
from ciolake.backfill import rows
from ciolake.customerio.reporting import Delivery, MessageRef, Messages, day_bounds
from ciolake.lake.tables import CHANNEL_TABLES
from ciolake.lake.writer import DeltaWriter


@dataclass(frozen=True, slots=True)
class Plan:
    """What to backfill: the messages (empty: every message), the days, their zone."""

    messages: tuple[MessageRef, ...]
    first: dt.date
    last: dt.date
    zone: str

    def days(self) -> list[dt.date]:
        """Every day of the window, oldest first."""
        return [self.first + dt.timedelta(days=i) for i in range((self.last - self.first).days + 1)]


@dataclass
class BackfillResult:
    """What a run did."""

    days: int = 0
    days_already_done: int = 0
    deliveries: int = 0
    added: dict[str, int] = field(default_factory=dict)
    present: int = 0
    """Rows not added because the tables already held the delivery's event of that metric."""
    unknown_types: int = 0
    """Deliveries of a type no channel table holds."""
    superseded: int = 0
    """Backfilled rows removed because the webhook's own event arrived since."""


class _Checkpoint(msgspec.Struct):
    plan: str
    done_through: dt.date | None = None


Progress = Callable[[dt.date, int, int], None]
"""Called after each day with the day, the days done and the days in all."""


class Backfill:
    """Backfills one plan into the tables, through ``writer``, looking rows up in ``lake``,
    each look-up and its commit under ``lock`` (the data directory's commit lock)."""

    def __init__(
        self,
        *,
        lake: Lake,
        messages: Messages,
        writer: DeltaWriter,
        checkpoint: Path,
        clock: Callable[[], float],
        lock: AbstractContextManager[object],
    ) -> None:
        self._lock = lock
        self._lake = lake
        self._messages = messages
        self._writer = writer
        self._checkpoint = checkpoint
        self._clock = clock

    def run(self, plan: Plan, *, progress: Progress) -> BackfillResult:
        """Backfill every day of ``plan`` not done by an earlier run of the same plan."""
        result = BackfillResult()
        with self._lock:
            result.superseded = self._drop_superseded()
        done_through = self._done_through(plan)
        days = plan.days()
        for done, day in enumerate(days, start=1):
            result.days += 1
            if done_through is not None and day <= done_through:
                result.days_already_done += 1
            else:
                self._day(plan, day, result)
                self._save(plan, day)
            progress(day, done, len(days))
        # Done: a later run of this plan walks every day again, for what Customer.io has
        # learnt since (later opens and clicks), and adds only that.
        self._checkpoint.unlink(missing_ok=True)
        return result

    def _day(self, plan: Plan, day: dt.date, result: BackfillResult) -> None:
        start, end = day_bounds(day, ZoneInfo(plan.zone))
        deliveries = self._deliveries(plan.messages, start, end)
        result.deliveries += len(deliveries)
        by_table: dict[str, list[Delivery]] = {}
        for delivery in deliveries:
            table = rows.table_of(delivery)
            if table is None:
                result.unknown_types += 1
            else:
                by_table.setdefault(table, []).append(delivery)
        # The look-up and the commit under the commit lock, as a server's committer applies
        # its batches: a webhook event cannot land between them (the API walk is outside).
        with self._lock:
            self._add(by_table, result)

    def _add(self, by_table: dict[str, list[Delivery]], result: BackfillResult) -> None:
        batches = {}
        for table, chosen in by_table.items():
            held = self._held(table, [d.id for d in chosen])
            received_us = int(self._clock() * 1_000_000)
            new = [
                rows.row(d, metric, at, received_at_us=received_us)
                for d in chosen
                for metric, at in rows.wanted(d)
                if (d.id, metric) not in held
            ]
            result.present += sum(len(rows.wanted(d)) for d in chosen) - len(new)
            if new:
                batches[table] = rows.rows_table(table, new)
                result.added[table] = result.added.get(table, 0) + len(new)
        if batches:
            self._writer.append_all(batches, versions={})

    def _drop_superseded(self) -> int:
        """Remove the backfilled rows whose event the webhook delivered since (late)."""
        removed = 0
        for table in CHANNEL_TABLES:
            sql = (
                f"SELECT b.event_id FROM {table} AS b WHERE b.source = '{rows.SOURCE}'"
                f" AND EXISTS (SELECT 1 FROM {table} AS w WHERE w.delivery_id = b.delivery_id"
                " AND w.metric = b.metric AND w.source IS NULL)"
            )
            superseded = [event_id for (event_id,) in self._lake.query(sql).rows]
            if superseded:
                removed += self._writer.delete_events(table, superseded)
        return removed

    def _deliveries(self, messages: Sequence[MessageRef], start: int, end: int) -> list[Delivery]:
        if not messages:
            return list(self._messages.created_between(None, start=start, end=end))
        found: dict[str, Delivery] = {}
        for message in messages:
            for delivery in self._messages.created_between(message, start=start, end=end):
                found[delivery.id] = delivery
        return list(found.values())

    def _held(self, table: str, delivery_ids: list[str]) -> set[tuple[str, str]]:
        """(delivery id, metric) of the rows ``table`` holds for these deliveries."""
        sql = (
            f"SELECT DISTINCT delivery_id, metric FROM {table}"
            " WHERE list_contains($ids, delivery_id)"
        )
        return {(d, m) for d, m in self._lake.query(sql, {"ids": delivery_ids}).rows}

    def _key(self, plan: Plan) -> str:
        messages = ",".join(sorted(str(m) for m in plan.messages)) or "all"
        return f"{plan.first}..{plan.last} {plan.zone} {messages}"

    def _done_through(self, plan: Plan) -> dt.date | None:
        try:
            saved = msgspec.json.decode(self._checkpoint.read_bytes(), type=_Checkpoint)
        except (FileNotFoundError, msgspec.DecodeError):
            return None
        return saved.done_through if saved.plan == self._key(plan) else None

    def _save(self, plan: Plan, day: dt.date) -> None:
        self._checkpoint.parent.mkdir(parents=True, exist_ok=True)
        partial = self._checkpoint.with_name(self._checkpoint.name + ".tmp")
        partial.write_bytes(msgspec.json.encode(_Checkpoint(self._key(plan), day)))
        os.replace(partial, self._checkpoint)
