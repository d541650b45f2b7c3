"""Prometheus scrape endpoint."""

from __future__ import annotations

from fastapi import APIRouter, Response

from app.api.deps import SettingsDep
from app.core.metrics import render_metrics

router = APIRouter(prefix="/metrics", tags=["metrics"])


@router.get("", include_in_schema=False)
def metrics(settings: SettingsDep) -> Response:
    # A sync endpoint: FastAPI runs it in a worker thread, so reading the multiprocess files
    # does not block the event loop.
    payload, content_type = render_metrics(settings.prometheus_multiproc_dir)
    return Response(content=payload, media_type=content_type)
