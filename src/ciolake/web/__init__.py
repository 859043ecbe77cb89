"""The HTTP face of ciolake: ``create_app(settings)`` and its routes."""

from ciolake.web.app import create_app

__all__ = ["create_app"]
