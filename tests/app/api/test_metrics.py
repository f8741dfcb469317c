"""GET /metrics after real requests: values, not only names (prometheus-client's own parser)."""

from __future__ import annotations

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.core.services import Services
from models.training import TrainingResult
from tests.app.conftest import publish

MINIMAL = {"model_name": "house", "architecture": "house_prices_mlp", "dataset": "boston_housing"}


def scrape(client: TestClient) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics", headers={"Authorization": ""})  # no key needed
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_http_requests_by_route_template_method_and_status(client: TestClient):
    before = scrape(client)
    for _ in range(3):
        assert client.get("/v1/jobs/no-such-job").status_code == 404
    assert client.get("/v1/jobs", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/no/route/here").status_code == 404
    after = scrape(client)

    def delta(route, method, status):
        labels = {"route": route, "method": method, "status": status}
        name = "trainserve_http_requests_total"
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("/v1/jobs/{job_id}", "GET", "404") == 3  # the template, not the raw path
    assert delta("/v1/jobs", "GET", "401") == 1  # answered by the guard, before routing
    assert delta("unmatched", "GET", "404") == 1
    count = "trainserve_http_request_duration_seconds_count"
    labels = {"route": "/v1/jobs/{job_id}", "method": "GET", "status": "404"}
    assert value(after, count, **labels) - value(before, count, **labels) == 3
    assert not any("no-such-job" in str(key) for key in after)


def test_jobs_by_status_queue_depth_and_heartbeat_ages(client: TestClient, services: Services):
    before = scrape(client)
    ids = [client.post("/v1/jobs", json=MINIMAL).json()["id"] for _ in range(3)]
    services.store.claim(ids[0], "worker-1")  # one running, with a fresh heartbeat
    after = scrape(client)
    assert value(after, "trainserve_jobs", status="queued") == 2
    assert value(after, "trainserve_jobs", status="running") == 1
    assert value(after, "trainserve_jobs", status="failed") == 0
    assert value(after, "trainserve_queue_depth") == 2
    assert value(after, "trainserve_broker_messages") >= 2
    submitted = "trainserve_jobs_submitted_total"
    assert value(after, submitted) - value(before, submitted) == 3
    age = value(after, "trainserve_job_heartbeat_age_seconds", job_id=ids[0])
    assert 0 <= age < 30
    assert ("trainserve_job_heartbeat_age_seconds", (("job_id", ids[1]),)) not in after


def test_predictions_record_stages_batches_and_cache_loads(
    client: TestClient, services: Services, house_model: TrainingResult
):
    """Real predictions through the batcher: each request's queue wait and inference, each
    forward's batch size, the version's load into the cache; deleting it counts an eviction."""
    name = "metrics-house"
    version = publish(services, name, house_model)
    before = scrape(client)
    sample = [[0.00632, 18, 2.31, 0, 0.538, 6.575, 65.2, 4.09, 1, 296, 15.3, 396.9, 4.98]]
    for inputs in (sample, sample * 3):
        response = client.post(f"/v1/models/{name}/predict", json={"inputs": inputs})
        assert response.status_code == 200, response.text
    loaded = scrape(client)
    assert client.delete(f"/v1/models/{name}/versions/{version}").status_code == 204
    after = scrape(client)

    def delta(samples, name, **labels):
        return value(samples, name, **labels) - value(before, name, **labels)

    stage = "trainserve_prediction_duration_seconds"
    assert delta(loaded, f"{stage}_count", model=name, stage="queue_wait") == 2
    assert delta(loaded, f"{stage}_count", model=name, stage="inference") == 2
    assert delta(loaded, f"{stage}_sum", model=name, stage="inference") > 0
    batch = "trainserve_prediction_batch_size"
    assert delta(loaded, f"{batch}_count", model=name) == 2
    assert delta(loaded, f"{batch}_sum", model=name) == 4  # 1 sample, then 3
    assert delta(loaded, "trainserve_model_cache_loads_total", model=name) == 1
    assert value(loaded, "trainserve_model_cache_bytes") > 0
    assert delta(after, "trainserve_model_cache_evictions_total", model=name) == 1
