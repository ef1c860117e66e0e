"""Fixtures shared by the client tests beyond tests/conftest.py."""

from tests.client.appservice_kit import bridge

__all__ = ["bridge"]
