"""The Delta gateway: the one module that imports ``deltalake`` (delta-rs).

Every other module of ``lake/`` takes the Delta protocol's types from here, so that one place
pins what ciolake uses of delta-rs: tables and their commits (app transactions, write
transactions of files written by pyarrow), maintenance (optimize, checkpoint, vacuum) and its
errors. delta-rs owns the protocol: a table whose features it cannot honour is refused by it,
never written around.
"""

from __future__ import annotations

from deltalake import CommitProperties, DeltaTable, Transaction, WriterProperties, write_deltalake
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
    "RemoveAction",
    "TableNotFoundError",
    "Transaction",
    "WriterProperties",
    "write_deltalake",
]
