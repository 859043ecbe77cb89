"""Analytics over the Delta tables: views, simulation, report, dashboard and checks."""
