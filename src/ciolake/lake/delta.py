"""The Delta gateway: the one module that imports ``deltalake`` (delta-rs).

Every other module of ``lake/`` takes the Delta protocol's types from here, so that one place
pins what ciolake uses of delta-rs: tables and their commits (app transactions, write
transactions of files written by pyarrow), maintenance (optimize, checkpoint, vacuum) and its
errors. delta-rs owns the protocol: a table whose features it cannot honour is refused by it,
never written around.
"""

from __future__ import annotations

import os

# delta-rs allocates with its own jemalloc, read once when the library loads. Its defaults (an
# arena per thread of four per core, a cache per thread) kept about 50 MiB more resident in
# the committer's process than one arena without thread caches, for no measurable speed
# (docs/performance.md). A setting of the user's own is left alone.
os.environ.setdefault("_RJEM_MALLOC_CONF", "narenas:1,tcache:false")

# The imports come after the allocator setting, which must precede the library's loading.
from deltalake import (
    CommitProperties,
    DeltaTable,
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
    "RemoveAction",
    "TableNotFoundError",
    "Transaction",
    "WriterProperties",
]
