"""Fixtures of the container tier (tests/support/containers.py)."""

from support.containers import base_image, engine, image  # noqa: F401 - fixtures
