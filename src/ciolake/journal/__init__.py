"""The journal: append-only segments, their records, and reading them back."""
