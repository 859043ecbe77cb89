"""One derivation, three engines: raw deliveries to channel rows and quarantine records.

``events.definition`` holds the rules. ``derive.python`` runs them with the committer's own
code (msgspec), ``derive.duck_sql`` generates them as DuckDB SQL and ``derive.spark_sql`` as
Spark SQL; every engine takes rows shaped as ``raw_events`` and gives rows shaped as the channel
tables and the quarantine.
"""
