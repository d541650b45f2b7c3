"""Tests of the FastAPI service (``app/``)."""
