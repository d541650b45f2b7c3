"""Helpers shared by the test suites (no fixtures here: see ``tests/conftest.py``)."""
