"""``ciolake backfill``: Customer.io's delivery records as rows of the channel tables
(docs/reconcile.md)."""
