"""GET /metrics: Prometheus's text format, no API key (like /healthz); bind the API to a
private network or put it behind a proxy that keeps /metrics for the scraper."""

from __future__ import annotations

from fastapi import APIRouter, Response

from app.api.deps import ServicesDep
from app.core.metrics import StoreCollector, exposition

router = APIRouter(tags=["health"])

EXAMPLE = """# HELP trainserve_http_requests_total HTTP requests answered, by route template, method and status code
# TYPE trainserve_http_requests_total counter
trainserve_http_requests_total{method="POST",route="/v1/jobs",status="202"} 3.0
# HELP trainserve_jobs jobs in the store, by status
# TYPE trainserve_jobs gauge
trainserve_jobs{status="succeeded"} 2.0
trainserve_jobs{status="running"} 1.0
"""  # noqa: E501


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "description": "every metric in Prometheus's text format (docs/operations.md)",
            "content": {"text/plain; version=0.0.4": {"example": EXAMPLE}},
        }
    },
)
def prometheus_metrics(services: ServicesDep) -> Response:
    """Prometheus metrics of every API process (and of `serve`'s worker), with job counts,
    queue depth and heartbeat ages read from the job store."""
    collector = StoreCollector(services.store, services.queue.waiting)
    body, content_type = exposition([collector])
    return Response(body, media_type=content_type)
