"""The lake: table definitions, rows as Arrow columns, and the Delta writer."""
