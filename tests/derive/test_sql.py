"""The SQL generator's literals: none that DuckDB and Spark would read differently."""

from __future__ import annotations

import pytest

from ciolake.derive.dialects import DuckDialect, SparkDialect
from ciolake.derive.sql import Dialect, derived_sql, output_sql, quote
from ciolake.lake.tables import CHANNEL_TABLES, QUARANTINE


@pytest.mark.parametrize("text", ["it's", "a\\b"])
def test_a_quote_or_a_backslash_is_refused_in_a_literal(text: str) -> None:
    # Spark reads 'a''b' as two literals ("ab") and unescapes backslashes; DuckDB does neither.
    with pytest.raises(ValueError, match="no quote or backslash"):
        quote(text)


@pytest.mark.parametrize("dialect", [DuckDialect(), SparkDialect()], ids=lambda d: d.name)
def test_every_statement_is_generated_for_both_engines(dialect: Dialect) -> None:
    assert "stale_timestamp" in derived_sql(dialect, tolerance_s=300)
    for table in (*CHANNEL_TABLES, QUARANTINE):
        assert output_sql(dialect, table).endswith(f"WHERE target = '{table}'")
