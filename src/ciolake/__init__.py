"""ciolake: Customer.io reporting webhooks, verified and landed exactly once in Delta Lake."""

import os as _os

__version__ = "0.1.0"

# delta-rs allocates through its own jemalloc, which by default keeps freed pages for 10 s
# and only returns them while it is busy. A checkpoint loads a table's whole state, so each
# one left ~20 MiB resident per table for good (155 MiB over ten tables, measured); returning
# pages at once keeps 8. It must be set before deltalake is loaded, hence here: every ciolake
# module is imported after this one. A value set by the user wins.
_os.environ.setdefault("_RJEM_MALLOC_CONF", "dirty_decay_ms:0,muzzy_decay_ms:0")

# Arrow's own default pool (mimalloc) keeps freed memory too; the committer's batches already
# allocate through malloc (``memory.use_system_allocator``), and this covers what Arrow's C++
# code allocates without being handed a pool. Same rule: before pyarrow loads; the user's wins.
_os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
