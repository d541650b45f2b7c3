"""fastapi-metal's reference service: a small notes API on PostgreSQL."""

__version__ = "0.1.0"
