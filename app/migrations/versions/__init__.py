"""Alembic revisions (loaded by path by Alembic, not imported by the app)."""
