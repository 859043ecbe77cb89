"""The dashboard: its page, its data endpoints and its charts."""
