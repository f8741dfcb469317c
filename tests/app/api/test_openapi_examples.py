"""Every 2xx response in the OpenAPI document has a real example (no "string" placeholders),
and each example is valid against the response schema it illustrates."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from app.api import schemas

NO_BODY = {"204"}
BINARY = {"application/octet-stream", "application/onnx"}  # weights, exports: "binary" bytes


def responses(document: dict):
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for code, response in operation["responses"].items():
                if code.startswith("2"):
                    yield f"{method.upper()} {path} {code}", code, response


def example_of(media: dict, components: dict):
    if "example" in media:
        return media["example"]
    if media.get("examples"):
        return next(iter(media["examples"].values()))["value"]
    schema = media.get("schema", {})
    ref = schema.get("$ref") or schema.get("items", {}).get("$ref")
    if ref:
        examples = components[ref.rsplit("/", 1)[1]].get("examples")
        if examples:
            return [examples[0]] if "items" in schema else examples[0]
    return None


def strings(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)
    elif isinstance(value, str):
        yield value


def test_every_2xx_response_has_a_real_example(client: TestClient):
    document = client.get("/openapi.json").json()
    components = document["components"]["schemas"]
    missing, checked = [], 0
    for where, code, response in responses(document):
        content = response.get("content", {})
        if code in NO_BODY:
            assert not content, where
            continue
        assert content, where
        for media_type, media in content.items():
            if media_type in BINARY:
                assert media["schema"] == {"type": "string", "format": "binary"}, where
                continue
            example = example_of(media, components)
            if example is None:
                missing.append(f"{where} {media_type}")
                continue
            checked += 1
            assert "string" not in set(strings(example)), where
    assert not missing, missing
    assert checked >= 15


@pytest.mark.parametrize(
    "model",
    [
        schemas.JobOut,
        schemas.JobList,
        schemas.History,
        schemas.ArchitectureOut,
        schemas.DatasetOut,
        schemas.ModelOut,
        schemas.VersionOut,
        schemas.ModelDetail,
        schemas.AliasOut,
        schemas.PredictResponse,
        schemas.Health,
        schemas.Readiness,
    ],
)
def test_each_example_is_valid_for_its_schema(model):
    examples = model.model_json_schema()["examples"]
    for example in examples:
        assert model.model_validate_json(json.dumps(example)).model_dump(mode="json")


def test_the_event_stream_example_is_a_job_event(client: TestClient):
    document = client.get("/openapi.json").json()
    media = document["paths"]["/v1/jobs/{job_id}/events"]["get"]["responses"]["200"]["content"]
    event = media["text/event-stream"]["example"].split("\n\n")[0]
    name, data = event.split("\n")
    assert name == "event: job"
    schemas.JobOut.model_validate_json(data.removeprefix("data: "))
