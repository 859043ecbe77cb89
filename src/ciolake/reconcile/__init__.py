"""``ciolake reconcile``: Customer.io's own counts beside the tables' (see docs/reconcile.md)."""
