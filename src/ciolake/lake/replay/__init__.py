"""Re-deriving the channel tables from ``raw_events`` (``ciolake replay``)."""
