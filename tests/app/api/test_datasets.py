"""Dataset uploads: CSV and NPZ, listed in the catalogue, usable by jobs; bad files refused."""

from __future__ import annotations

import io

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.core.artifacts import dataset_key
from app.core.services import Services

CSV = b"a,b,label\n1,2,3.5\n2,3,4.5\n3,4,5.5\n4,5,6.5\n"


def upload(client: TestClient, name="mine", data=CSV, filename="data.csv", **form):
    fields = {"name": name, "target": "label"} | form
    fields = {k: v for k, v in fields.items() if v is not None}
    return client.post("/v1/datasets", data=fields, files={"file": (filename, data)})


def npz_bytes(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def test_csv_upload_is_listed_and_trainable(client: TestClient, services: Services):
    response = upload(client)
    assert response.status_code == 201, response.text
    entry = response.json()
    assert entry["name"] == "mine" and entry["source"] == "upload"
    assert entry["task"] == "regression" and entry["n_samples"] == 4 and entry["input_shape"] == [2]
    listed = {d["name"]: d for d in client.get("/v1/datasets").json()}
    assert listed["mine"] == entry
    row = services.store.get_dataset("mine")
    assert services.artifacts.list("datasets/") == [dataset_key(row.sha256)]
    job = client.post(
        "/v1/jobs", json={"model_name": "m", "architecture": "mlp", "dataset": "mine"}
    )
    assert job.status_code == 202, job.text
    assert job.json()["request"]["loss"] == "mse"
    params = {
        "model_name": "m",
        "architecture": "mlp",
        "dataset": "mine",
        "dataset_params": {"x": 1},
    }
    assert client.post("/v1/jobs", json=params).status_code == 422


def test_classification_csv_and_task(client: TestClient):
    data = b"x,y,kind\n1,2,cat\n2,1,dog\n3,3,cat\n"
    entry = upload(client, data=data, target="kind").json()
    assert entry["task"] == "classification" and entry["n_classes"] == 2
    assert entry["classes"] == ["cat", "dog"]
    forced = upload(client, name="forced", task="classification").json()
    assert forced["task"] == "classification" and forced["n_classes"] == 4


def test_npz_upload_by_extension_or_content(client: TestClient):
    X = np.arange(20, dtype=np.float32).reshape(5, 2, 2)
    data = npz_bytes(X=X, y=np.array([0, 1, 0, 1, 1]))
    entry = upload(client, name="images", data=data, filename="d.npz", target=None).json()
    assert entry["input_shape"] == [2, 2] and entry["task"] == "classification"
    sniffed = upload(client, name="sniffed", data=data, filename="blob", target=None)
    assert sniffed.status_code == 201


def test_existing_names_conflict(client: TestClient):
    assert upload(client).status_code == 201
    again = upload(client)
    assert again.status_code == 409 and "already exists" in again.json()["detail"]
    builtin = upload(client, name="boston_housing")
    assert builtin.status_code == 409 and "built-in" in builtin.json()["detail"]


@pytest.mark.parametrize(
    ("data", "form", "code", "message"),
    [
        (b"a,b,label\n1,2,3\n1,x,4\n", {}, 400, "line 3, column 'b'"),
        (b"a,b,label\n1,2,3\n1,2\n", {}, 400, "line 3 has 2 values"),
        (b"a,b\n1,2\n3,4\n", {}, 400, "column 'label' is not in the header"),
        (b"", {}, 400, "empty"),
        (CSV, {"target": None}, 422, "'target'"),
        (b"a,b,label\n1,2,3\n1,2,x\n", {}, 422, "line 3, column 'label': 'x' is not a number"),
        (CSV, {"task": "clustering"}, 422, "task"),
    ],
)
def test_bad_csv(client: TestClient, services: Services, data, form, code, message):
    response = upload(client, data=data, **form)
    assert response.status_code == code, response.text
    assert message in str(response.json()["detail"])
    assert services.store.get_dataset("mine") is None
    assert services.artifacts.list("datasets/") == []


def test_npz_with_objects_is_refused(client: TestClient):
    objects = np.array([{"a": 1}, {"b": 2}, None], dtype=object)
    data = npz_bytes(X=objects, y=np.array([1, 2, 3]))  # np.savez pickles object arrays
    response = upload(client, data=data, filename="x.npz")
    assert response.status_code == 400
    assert "Python objects" in response.json()["detail"]


def test_broken_npz_is_refused(client: TestClient):
    response = upload(client, data=b"PK\x03\x04 not really a zip", filename="x.npz")
    assert response.status_code == 400
    assert "NPZ" in response.json()["detail"]


@pytest.mark.parametrize("name", ["../x", "..", "a/b", "A", "-x", "a..b", "", "x" * 65, "a\x00b"])
def test_names_that_are_not_slugs_are_refused(client: TestClient, settings, name):
    response = upload(client, name=name)
    assert response.status_code == 422, response.text
    assert list(settings.uploads_dir.iterdir()) == []
    assert not (settings.data_dir / "x.npz").exists()


def test_a_file_of_exactly_the_upload_limit_is_accepted(client: TestClient, settings):
    """The multipart framing around the file is not counted against the file's limit."""
    header = b"a,label\n"
    rows = (settings.max_upload_bytes - len(header)) // 4
    exact = header + b"1,2\n" * rows + b"1" * ((settings.max_upload_bytes - len(header)) % 4)
    exact = exact[: settings.max_upload_bytes - 1] + b"\n"
    assert len(exact) == settings.max_upload_bytes
    response = upload(client, data=exact)
    assert response.status_code == 201, response.text
    over = upload(client, name="over", data=exact + b"1,2\n")
    assert over.status_code == 413 and "TRAINSERVE_MAX_UPLOAD_BYTES" in over.json()["detail"]


def test_oversized_upload_is_413(client: TestClient, settings):
    big = b"a,label\n" + b"1,2\n" * (settings.max_upload_bytes // 4 + 1)
    response = upload(client, data=big)
    assert response.status_code == 413
    assert str(settings.max_upload_bytes) in response.json()["detail"]
    assert "TRAINSERVE_MAX_UPLOAD_BYTES" in response.json()["detail"]
