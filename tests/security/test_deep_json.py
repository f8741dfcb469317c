"""Deeply nested JSON in the free-form parts of a request (architecture and dataset parameters,
prediction inputs) is refused at parse time with a 422 naming the field and the limit; it never
reaches the serializer (which gave a 500 at 255 levels) or anything else that recurses."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.core.services import Services
from models.request import MAX_NESTING, check_nesting
from tests.app.conftest import publish

JSON = {"Content-Type": "application/json"}
DEEP = 255


def nested_lists(levels: int) -> str:
    return "[" * levels + "1" + "]" * levels


def nested_objects(levels: int) -> str:
    return '{"a":' * levels + "1" + "}" * levels


def job_body(field: str, value: str) -> str:
    head = '{"model_name":"m","architecture":"mlp","dataset":"digits"'
    return f'{head},"{field}":{{"hidden_size":{value}}}}}'


def assert_refused_for_nesting(response, field: str) -> None:
    assert response.status_code == 422, response.text
    items = response.json()["detail"]
    assert isinstance(items, list), items
    (item,) = [i for i in items if i["loc"][:2] == ["body", field]]
    assert item["msg"].startswith(f"{field}: "), item
    assert f"the limit is {MAX_NESTING}" in item["msg"], item


@pytest.mark.parametrize("field", ["architecture_params", "dataset_params"])
@pytest.mark.parametrize("shape", [nested_lists, nested_objects], ids=["lists", "objects"])
def test_deeply_nested_params_are_422_naming_the_field(client: TestClient, field, shape):
    body = job_body(field, shape(DEEP))
    assert len(body) < 2000  # a small body: the nesting, not the size, is the problem
    response = client.post("/v1/jobs", content=body, headers=JSON)
    assert_refused_for_nesting(response, field)


def test_params_within_the_nesting_limit_are_not_refused_for_it(client: TestClient):
    # The params dict is level 1, so the value may hold MAX_NESTING - 1 levels of lists.
    body = job_body("architecture_params", nested_lists(MAX_NESTING - 1))
    response = client.post("/v1/jobs", content=body, headers=JSON)
    assert response.status_code == 422, response.text  # the catalogue's check, not nesting
    assert "hidden_size" in response.text and "limit" not in response.text


@pytest.fixture
def house(services: Services, house_model) -> str:
    publish(services, "house", house_model)
    return "house"


@pytest.mark.parametrize("levels", [MAX_NESTING + 1, DEEP, 900])
def test_deeply_nested_prediction_inputs_are_422(client: TestClient, house, levels):
    body = f'{{"inputs":[{nested_lists(levels)}]}}'
    response = client.post(f"/v1/models/{house}/predict", content=body, headers=JSON)
    assert_refused_for_nesting(response, "inputs")


def test_the_nesting_check_does_not_recurse():
    value: list = []
    for _ in range(100_000):  # far beyond Python's recursion limit
        value = [value]
    with pytest.raises(ValueError, match=f"the limit is {MAX_NESTING}"):
        check_nesting(value)
    assert check_nesting({"a": [[1, 2], {"b": [3]}]}) == {"a": [[1, 2], {"b": [3]}]}
