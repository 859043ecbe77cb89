"""ciolake: Customer.io reporting webhooks, verified and landed exactly once in Delta Lake."""

__version__ = "0.1.0"
