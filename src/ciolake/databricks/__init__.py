"""Databricks: Unity Catalog tables and views through the SQL Statement Execution API."""
