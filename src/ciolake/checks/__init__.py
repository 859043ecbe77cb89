"""Operational checks (``ciolake check``): volume, freshness, failures, metrics."""
