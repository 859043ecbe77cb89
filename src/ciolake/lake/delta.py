"""The Delta gateway: the one module that imports ``deltalake`` (delta-rs).

Every other module of ``lake/`` takes the Delta protocol's types from here, so that one place
pins what ciolake uses of delta-rs: tables and their commits (app transactions, write
transactions of files written by pyarrow), maintenance (optimize, checkpoint, vacuum) and its
errors. delta-rs owns the protocol: a table whose features it cannot honour is refused by it,
never written around.
"""

from __future__ import annotations

# delta-rs's allocator is configured by ciolake/__init__.py, which runs before this module.
from deltalake import (
    CommitProperties,
    DeltaTable,
    Field,
    PostCommitHookProperties,
    Transaction,
    WriterProperties,
)
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError
from deltalake.fs import DeltaStorageHandler
from deltalake.transaction import AddAction, RemoveAction

__all__ = [
    "AddAction",
    "CommitFailedError",
    "CommitProperties",
    "DeltaError",
    "DeltaStorageHandler",
    "DeltaTable",
    "Field",
    "PostCommitHookProperties",
    "RemoveAction",
    "TableNotFoundError",
    "Transaction",
    "WriterProperties",
]
