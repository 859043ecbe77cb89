"""The last reconciliation's summary, in Prometheus text format, for ``ciolake check`` and for
a node exporter's textfile collector."""

from __future__ import annotations

import os
from pathlib import Path

from ciolake.reconcile.run import Reconciliation

OVER_TOLERANCE = "ciolake_reconcile_over_tolerance"
COMPARED = "ciolake_reconcile_counts_compared"
MISSING = "ciolake_reconcile_missing_deliveries"
LAST_RUN = "ciolake_reconcile_last_run_timestamp_seconds"


def render(result: Reconciliation, *, at: float) -> str:
    """The summary of ``result``, run at unix time ``at``."""
    missing = sum(max(0, -row.difference) for row in result.counts if row.over_tolerance)
    window = f'since="{result.window.first}",until="{result.window.last}"'
    lines = [
        f"# HELP {OVER_TOLERANCE} Counts of the last reconcile that differ beyond the tolerance.",
        f"# TYPE {OVER_TOLERANCE} gauge",
        f"{OVER_TOLERANCE}{{{window}}} {len(result.over_tolerance)}",
        f"# HELP {COMPARED} Counts (message, metric, day) the last reconcile compared.",
        f"# TYPE {COMPARED} gauge",
        f"{COMPARED}{{{window}}} {len(result.counts)}",
        f"# HELP {MISSING} Deliveries Customer.io counted beyond the tables, over the tolerance.",
        f"# TYPE {MISSING} gauge",
        f"{MISSING}{{{window}}} {missing}",
        f"# HELP {LAST_RUN} When the last reconcile ran.",
        f"# TYPE {LAST_RUN} gauge",
        f"{LAST_RUN} {at:.3f}",
    ]
    return "\n".join(lines) + "\n"


def write_summary(path: Path, result: Reconciliation, *, at: float) -> None:
    """Replace the summary file at ``path`` whole (a reader never sees half of one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(render(result, at=at))
    os.replace(partial, path)
