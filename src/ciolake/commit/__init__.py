"""From the journal to the tables: the committer and the exactly-once index."""
