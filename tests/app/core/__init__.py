"""Tests mirroring app/core."""
