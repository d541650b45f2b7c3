"""Database models, engine construction and migration helpers."""
