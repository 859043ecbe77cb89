"""The processes: supervisor, workers, the shared runtime, locks and memory."""
