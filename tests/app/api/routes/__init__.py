"""Tests mirroring app/api/routes."""
