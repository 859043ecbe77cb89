"""Talking to and as Customer.io: the App API client, and the signed test-event sender."""
