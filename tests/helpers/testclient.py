"""FastAPI's TestClient, imported without Starlette's "use httpx2" deprecation warning."""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    # Starlette's TestClient prefers the "httpx2" package now; httpx still works.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

__all__ = ["TestClient"]
