"""A SQL warehouse through the Statement Execution API, against the fake workspace: a statement
the warehouse is still running is polled until it finishes, one that outlasts the time limit is
cancelled, and its answer is typed by the columns' types."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from ciolake.dashboard.warehouse import typed_rows
from ciolake.databricks.workspace import Parameter, StatementFailedError, Warehouse, connect
from tests.fakes.databricks import Answer, FakeWorkspace, fake_workspace


def answer(statement: str, parameters: Mapping[str, Any]) -> Answer:
    if "fail" in statement:
        raise ValueError("[TABLE_OR_VIEW_NOT_FOUND] no such table")
    return Answer(
        ["n", "share", "day", "at", "name"],
        ["LONG", "DOUBLE", "DATE", "TIMESTAMP", "STRING"],
        [["42", "0.25", str(parameters.get("day")), "2026-09-01T10:00:00.000Z", None]],
    )


@pytest.fixture
def workspace() -> Iterator[FakeWorkspace]:
    with fake_workspace(answer) as fake:
        yield fake


def warehouse_of(fake: FakeWorkspace, *, timeout_s: float = 30) -> Warehouse:
    return connect(
        host=fake.url,
        client_id=fake.client_id,
        client_secret=fake.client_secret,
        warehouse_id=fake.warehouse_id,
        timeout_s=timeout_s,
    )


def test_a_statement_still_running_is_polled_until_it_answers(workspace: FakeWorkspace) -> None:
    workspace.running_polls = 2
    result = warehouse_of(workspace).execute(
        "SELECT :day", [Parameter("day", "2026-09-01", "DATE")]
    )
    assert typed_rows(result) == [
        {"n": 42, "share": 0.25, "day": "2026-09-01", "at": "2026-09-01T10:00:00Z", "name": None}
    ]
    assert not workspace.pending, "every poll answered"
    assert workspace.cancelled == []


def test_a_failed_statement_is_the_warehouses_message_after_polling(
    workspace: FakeWorkspace,
) -> None:
    workspace.running_polls = 1
    with pytest.raises(StatementFailedError, match="TABLE_OR_VIEW_NOT_FOUND"):
        warehouse_of(workspace).execute("SELECT * FROM fail")


def test_a_statement_past_the_time_limit_is_cancelled(workspace: FakeWorkspace) -> None:
    workspace.running_polls = 1000
    with pytest.raises(StatementFailedError, match="cancelled"):
        warehouse_of(workspace, timeout_s=1.5).execute("SELECT 1")
    (statement_id,) = workspace.cancelled
    assert statement_id not in workspace.pending
