"""Every commit ciolake makes to a table's log, through delta-rs's transaction API.

The data files are written first (``lake/files.py``); one ``create_write_transaction`` then
adds them (and removes the files a replay rewrote) in one version, with the app transactions
that record which journaled deliveries the table holds. delta-rs owns the protocol: it checks
concurrent commits for conflicts, writes checkpoints, and refuses a table whose protocol asks
writers for a feature it cannot honour. That refusal is turned here into an error that names
the table and the property to turn off, and a conflict into a transient error that a retry
(after reading the table again) gets past.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence

from ciolake.errors import TableWriteError, TransientError
from ciolake.lake.delta import (
    CommitFailedError,
    CommitProperties,
    DeltaTable,
    PostCommitHookProperties,
    Transaction,
)
from ciolake.lake.files import DataFile, RemovedFile
from ciolake.lake.storage import TableStorage
from ciolake.lake.tables import TableSpec

_UNSUPPORTED = re.compile(r"Unsupported table features required: \[([^\]]*)\]")

# What turns each writer feature on, as Spark and Databricks name it: the way out of a
# table another engine upgraded.
_FEATURE_PROPERTIES = {
    "InCommitTimestamp": ("inCommitTimestamp", "delta.enableInCommitTimestamps"),
    "RowTracking": ("rowTracking", "delta.enableRowTracking"),
    "DomainMetadata": ("domainMetadata", "delta.enableRowTracking"),
    "DeletionVectors": ("deletionVectors", "delta.enableDeletionVectors"),
    "ColumnMapping": ("columnMapping", "delta.columnMapping.mode"),
    "IdentityColumns": ("identityColumns", "the identity column"),
    "V2Checkpoint": ("v2Checkpoint", "delta.checkpointPolicy"),
    "TypeWidening": ("typeWidening", "delta.enableTypeWidening"),
    "ClusteredTable": ("clustering", "the table's CLUSTER BY"),
}


# The same, by the name Spark gives each feature (``DESCRIBE DETAIL``'s ``tableFeatures``).
REFUSED_FEATURES: dict[str, str] = dict(_FEATURE_PROPERTIES.values())


# delta-rs cleans expired log files after every commit by default, listing the whole log
# each time: at 1,000 versions that tripled a commit's cost. The hourly maintenance cleans
# them instead (lake/maintenance.py); checkpoints stay with the commits.
_CHECKPOINT_ONLY = PostCommitHookProperties(create_checkpoint=True, cleanup_expired_logs=False)


class CommitConflictError(TransientError):
    """Another writer's commit conflicts with this one; read the table again and retry."""


class UnsupportedTableError(TableWriteError):
    """The table's protocol asks writers for a feature delta-rs cannot honour."""

    def __init__(self, name: str, uri: str, features: Sequence[str]) -> None:
        self.table = name
        self.features = tuple(features)
        super().__init__(_unsupported_text(name, uri, features))


def _unsupported_text(name: str, uri: str, features: Sequence[str]) -> str:
    named = [_FEATURE_PROPERTIES.get(f, (f, "")) for f in features]
    spelled = ", ".join(feature for feature, _ in named)
    properties = sorted({prop for _, prop in named if prop})
    turn_off = f" turn off {', '.join(properties)} and" if properties else ""
    drops = "; ".join(f"ALTER TABLE ... DROP FEATURE {feature}" for feature, _ in named)
    return (
        f"table {name} at {uri} asks writers for table feature(s) {spelled}, which ciolake's"
        f" Delta writer (delta-rs) cannot honour, so nothing is committed to it: on the engine"
        f" that upgraded it,{turn_off} drop the feature ({drops}); the events wait in the"
        " journal and are committed once the table accepts them"
    )


def commit_files(
    table: DeltaTable,
    *,
    storage: TableStorage,
    spec: TableSpec,
    adds: Sequence[DataFile],
    removes: Sequence[RemovedFile] = (),
    transactions: Sequence[Transaction] = (),
    data_change: bool = True,
) -> int:
    """Commit ``adds`` and ``removes`` to ``table`` in one version; return the table's
    version after it (``table`` is brought up to date: the next commit builds on it).

    ``table`` must be at the version the removed files were read at. A commit that removes
    files goes in right after that version or not at all: delta-rs (1.6) rebases a write
    over concurrent commits without checking that they left its removed files in place, so
    any commit since is taken as a conflict, and the caller reads the table again.
    ``data_change`` False says the commit only moves rows between files (a compaction), so
    that streaming readers skip it.

    Raises:
        CommitConflictError: a concurrent commit conflicts; nothing was committed.
        UnsupportedTableError: the table asks for a writer feature delta-rs cannot honour.
    """
    before = table.version()
    now_ms = int(time.time() * 1000)
    actions = [r.remove_action(now_ms, data_change=data_change) for r in removes] + [
        f.add_action(data_change=data_change) for f in adds
    ]
    try:
        table.create_write_transaction(
            actions,
            mode="append",
            schema=spec.schema,
            partition_by=[spec.partition_by],
            post_commithook_properties=_CHECKPOINT_ONLY,
            commit_properties=CommitProperties(
                app_transactions=list(transactions), max_commit_retries=0 if removes else None
            ),
        )
    except CommitFailedError as exc:
        raise _commit_error(storage.uri, spec.name, exc) from exc
    table.update_incremental()
    after = table.version()
    storage.make_durable(range(before + 1, after + 1))
    return after


def _commit_error(uri: str, name: str, exc: CommitFailedError) -> Exception:
    unsupported = _UNSUPPORTED.search(str(exc))
    if unsupported:
        features = [f.strip() for f in unsupported.group(1).split(",") if f.strip()]
        return UnsupportedTableError(name, uri, features)
    return CommitConflictError(f"{name}: {exc}")
