"""A realistic simulated history with known rates (``ciolake simulate``)."""
