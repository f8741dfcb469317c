"""Every bad input gets a clear 4xx: `{"detail": ...}` naming what was wrong, never a 5xx or a
trace, and nothing is written outside the data dir's stores.

One table of bad requests (malformed JSON, wrong types, NaN and infinity, huge numbers and sizes,
long and unicode strings, path traversal in names, paths, bodies and uploads, bodies over the
limits), run against SQLite and, where a PostgreSQL server answers, PostgreSQL: it refuses some
strings (NUL) that SQLite stores. After the table the service still answers normally.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from app.api.main import create_app
from app.core.names import is_alias, is_slug
from tests.app.api.test_models import BOSTON_ROW
from tests.app.conftest import AUTH, make_settings, publish
from tests.e2e.processes import postgres_database
from tests.security.server import serve

MINIMAL = {"model_name": "house", "architecture": "house_prices_mlp", "dataset": "boston_housing"}
MODEL = "house-prices"  # published before the table runs
CSV = b"a,b,label\n1,2,3.5\n2,3,4.5\n3,4,5.5\n"
MAX_BODY = 64 * 1024
MAX_UPLOAD = 256 * 1024

TRAVERSALS = [
    "../x",
    "..%2fx",
    "%2e%2e%2f",
    "%252e%252e%252f",
    "/etc/passwd",
    "..\\..\\x",
    "C:\\x",
    "\u2024\u2024",  # one dot leader, twice: looks like '..'
    "\u2024\u2024/x",
    "\uff0f",  # fullwidth solidus
    "\uff0e\uff0e\uff0fx",  # fullwidth '../x'
    ".",
    "..",
    "a/../../b",
]
STRANGE = [
    "😀",
    "\u202eabc",  # right-to-left override
    "a\x00b",
    "\x00",
    "a\nb",
    "ＡＢＣ",
    "x" * 10_000,
]


@dataclass
class Bad:
    """One bad request and what its answer must say."""

    id: str
    method: str
    path: str
    codes: tuple[int, ...]
    says: tuple[str, ...]  # all of these in the detail (case-insensitive)
    json: Any = None
    content: bytes | Callable[[], Iterator[bytes]] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    data: dict[str, str] | None = None
    files: dict[str, tuple[str, bytes]] | None = None

    def send(self, client: httpx.Client) -> httpx.Response:
        content = self.content() if callable(self.content) else self.content
        return client.request(
            self.method,
            self.path,
            json=self.json,
            content=content,
            headers=self.headers,
            data=self.data,
            files=self.files,
        )


def raw_job(fragment: str) -> bytes:
    """MINIMAL with `fragment` (raw JSON, e.g. `"epochs": NaN`) added."""
    return (json.dumps(MINIMAL)[:-1] + ", " + fragment + "}").encode()


def job(**change: Any) -> dict[str, Any]:
    return MINIMAL | change


JSON = {"Content-Type": "application/json"}


def post_job(id: str, codes, says, *, body=None, raw: bytes | None = None, **kw) -> Bad:
    if raw is not None:
        return Bad(id, "POST", "/v1/jobs", codes, says, content=raw, headers=JSON, **kw)
    return Bad(id, "POST", "/v1/jobs", codes, says, json=body, **kw)


def predict(id: str, codes, says, *, body=None, raw: bytes | None = None) -> Bad:
    path = f"/v1/models/{MODEL}/predict"
    if raw is not None:
        return Bad(id, "POST", path, codes, says, content=raw, headers=JSON)
    return Bad(id, "POST", path, codes, says, json=body)


def upload(id: str, codes, says, *, name="mine", data=CSV, filename="d.csv", **form) -> Bad:
    fields = {"name": name, "target": "label"} | form
    fields = {k: v for k, v in fields.items() if v is not None}
    return Bad(
        id, "POST", "/v1/datasets", codes, says, data=fields, files={"file": (filename, data)}
    )


def npz(**arrays: Any) -> bytes:
    buffer = io.BytesIO()
    np.savez(
        buffer, **{k: np.array(v, dtype=object if None in v else None) for k, v in arrays.items()}
    )
    return buffer.getvalue()


def chunks(head: bytes, size: int, tail: bytes = b"") -> Callable[[], Iterator[bytes]]:
    """A body sent chunked (no Content-Length) of about `size` bytes."""

    def generate() -> Iterator[bytes]:
        yield head
        for _ in range(size // 4096 + 1):
            yield b"1" * 4096
        yield tail

    return generate


def multipart_chunks(size: int) -> Callable[[], Iterator[bytes]]:
    head = (
        b'--b0undary\r\nContent-Disposition: form-data; name="name"\r\n\r\nbig\r\n'
        b'--b0undary\r\nContent-Disposition: form-data; name="target"\r\n\r\nlabel\r\n'
        b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="x.csv"\r\n\r\n'
        b"a,label\n"
    )
    return chunks(head, size, b"\r\n--b0undary--\r\n")


TOO_BIG = ("over the limit", str(MAX_BODY), "TRAINSERVE_MAX_BODY_BYTES")
TOO_BIG_UPLOAD = ("over the limit", str(MAX_UPLOAD), "TRAINSERVE_MAX_UPLOAD_BYTES")

TABLE: list[Bad] = [
    # -- malformed JSON and wrong content -------------------------------------------------
    post_job("json-unclosed", (422,), ("not valid JSON",), raw=b"{"),
    post_job("json-trailing-comma", (422,), ("not valid JSON",), raw=b'{"model_name": "a",}'),
    post_job("json-single-quotes", (422,), ("not valid JSON",), raw=b"{'model_name': 'a'}"),
    post_job("json-not-utf8", (400,), ("not UTF-8",), raw=b'{"model_name": "\xff\xfe"}'),
    post_job("json-array", (422,), ("JSON object",), raw=b"[]"),
    post_job("json-string", (422,), ("JSON object",), raw=b'"x"'),
    post_job("json-null", (422,), ("JSON object",), raw=b"null"),
    post_job("json-empty", (422,), ("missing",), raw=b""),
    post_job("json-too-deep", (400,), ("nested too deeply",), raw=b"[" * 30_000 + b"]" * 30_000),
    Bad(
        "json-as-text-plain",
        "POST",
        "/v1/jobs",
        (422,),
        ("JSON object", "application/json"),
        content=json.dumps(MINIMAL).encode(),
        headers={"Content-Type": "text/plain"},
    ),
    # -- wrong types (strict: no coercion of bools, strings or floats to integers) -------------
    post_job("epochs-string", (422,), ("epochs",), body=job(epochs="ten")),
    post_job("epochs-numeric-string", (422,), ("epochs",), body=job(epochs="10")),
    post_job("epochs-bool", (422,), ("epochs",), body=job(epochs=True)),
    post_job("epochs-fraction", (422,), ("epochs",), body=job(epochs=10.5)),
    post_job("seed-bool", (422,), ("seed",), body=job(seed=False)),
    post_job("model-name-number", (422,), ("model_name",), body=job(model_name=5)),
    post_job("model-name-null", (422,), ("model_name",), body=job(model_name=None)),
    post_job("optimizer-string", (422,), ("optimizer",), body=job(optimizer="adam")),
    post_job("lr-string", (422,), ("optimizer.lr",), body=job(optimizer={"lr": "0.1"})),
    post_job("params-list", (422,), ("architecture_params",), body=job(architecture_params=[])),
    post_job(
        "param-object",
        (422,),
        ("hidden_size", "integer"),
        body=job(architecture_params={"hidden_size": {"a": [1]}}),
    ),
    post_job("unknown-field", (422,), ("bogus", "unknown field"), body=job(bogus=1)),
    predict("inputs-string", (422,), ("inputs",), body={"inputs": "x"}),
    predict("inputs-object", (422,), ("inputs",), body={"inputs": {"a": 1}}),
    predict("sample-strings", (422,), ("sample 0", "13"), body={"inputs": [["a"] * 13]}),
    predict("sample-ragged", (422,), ("sample 1",), body={"inputs": [BOSTON_ROW, [1, [2, 3]]]}),
    # -- NaN and infinity, as JSON tokens and as an overflowing literal -------------------------
    *[
        post_job(
            f"test-fraction-{token}",
            (422,),
            ("test_fraction",),
            raw=raw_job(f'"test_fraction": {token}'),
        )
        for token in ("NaN", "Infinity", "-Infinity", "1e999")
    ],
    post_job("lr-nan", (422,), ("optimizer.lr",), raw=raw_job('"optimizer": {"lr": NaN}')),
    post_job("clip-inf", (422,), ("grad_clip_norm",), raw=raw_job('"grad_clip_norm": Infinity')),
    post_job(
        "param-nan",
        (422,),
        ("hidden_size", "NaN"),
        raw=raw_job('"architecture_params": {"hidden_size": NaN}'),
    ),
    post_job(
        "dataset-param-inf",
        (422,),
        ("noise", "NaN"),
        raw=raw_job('"dataset_params": {"noise": -Infinity}'),
    ),
    *[
        predict(
            f"sample-{token}",
            (422,),
            ("sample 1",),
            raw=f'{{"inputs": [{json.dumps(BOSTON_ROW)}, [{"1, " * 12}{token}]]}}'.encode(),
        )
        for token in ("NaN", "Infinity", "-Infinity", "1e999")
    ],
    # -- huge numbers ---------------------------------------------------------------------
    post_job(
        "epochs-10e400",
        (422,),
        ("epochs", "TRAINSERVE_MAX_EPOCHS"),
        raw=raw_job(f'"epochs": {10**400}'),
    ),
    post_job("epochs-1e308", (422,), ("epochs",), raw=raw_job('"epochs": 1e308')),
    post_job("batch-1e308", (422,), ("batch_size",), raw=raw_job('"batch_size": 1e308')),
    post_job("seed-10e400", (422,), ("seed",), raw=raw_job(f'"seed": {10**400}')),
    post_job(
        "eval-every-negative-huge",
        (422,),
        ("eval_every",),
        raw=raw_job(f'"eval_every": -{10**400}'),
    ),
    post_job(
        "hidden-10e400",
        (422,),
        ("hidden_size", "between"),
        raw=raw_job(f'"architecture_params": {{"hidden_size": {10**400}}}'),
    ),
    post_job(
        "hidden-1e308",
        (422,),
        ("hidden_size", "between"),
        raw=raw_job('"architecture_params": {"hidden_size": 1e308}'),
    ),
    post_job("digits-5000", (400,), ("over 4300 digits",), raw=raw_job(f'"epochs": {"9" * 5000}')),
    predict(
        "sample-10e400",
        (422,),
        ("sample 0", "too large"),
        raw=f'{{"inputs": [[{"1, " * 12}{10**400}]]}}'.encode(),
    ),
    predict("sample-1e308", (422,), ("sample 0", "too large"), body={"inputs": [[1e308] * 13]}),
    # -- huge sizes -----------------------------------------------------------------------
    post_job("epochs-10e12", (422,), ("epochs", "TRAINSERVE_MAX_EPOCHS"), body=job(epochs=10**12)),
    post_job(
        "batch-10e9",
        (422,),
        ("batch_size", "TRAINSERVE_MAX_BATCH_SIZE"),
        body=job(batch_size=10**9),
    ),
    post_job(
        "hidden-10e9",
        (422,),
        ("hidden_size", "between"),
        body=job(architecture_params={"hidden_size": 10**9}),
    ),
    post_job(
        "n-samples-10e12",
        (422,),
        ("n_samples", "between"),
        body=job(dataset="synthetic_regression", dataset_params={"n_samples": 10**12}),
    ),
    predict("samples-10e5", (413,), TOO_BIG, body={"inputs": [[0] * 13] * 10**5}),
    post_job("body-50mb", (413,), TOO_BIG, raw=b"[" + b"1," * (25 * 1024 * 1024) + b"1]"),
    post_job("body-chunked", (413,), TOO_BIG, raw=None, content=chunks(b'{"x": "', MAX_BODY)),
    upload("upload-too-big", (413,), TOO_BIG_UPLOAD, data=b"a,label\n" + b"1,2\n" * MAX_UPLOAD),
    Bad(
        "upload-chunked",
        "POST",
        "/v1/datasets",
        (413,),
        TOO_BIG_UPLOAD,
        content=multipart_chunks(MAX_UPLOAD),
        headers={"Content-Type": "multipart/form-data; boundary=b0undary"},
    ),
    # -- long strings ---------------------------------------------------------------------
    post_job(
        "model-name-10k",
        (422,),
        ("model_name", "10000 characters"),
        body=job(model_name="x" * 10_000),
    ),
    post_job("architecture-60k", (422,), ("architecture",), body=job(architecture="x" * 60_000)),
    post_job("architecture-1mb", (413,), TOO_BIG, body=job(architecture="x" * 1024 * 1024)),
    post_job("dataset-10k", (422,), ("dataset",), body=job(dataset="d" * 10_000)),
    upload("upload-name-10k", (422,), ("dataset name",), name="x" * 10_000),
    # -- unicode --------------------------------------------------------------------------
    *[
        post_job(f"model-name-{s[:8]!r}", (422,), ("model_name",), body=job(model_name=s))
        for s in STRANGE
    ],
    *[post_job(f"dataset-{s[:8]!r}", (422,), ("dataset",), body=job(dataset=s)) for s in STRANGE],
    *[
        post_job(f"architecture-{s[:8]!r}", (422,), ("architecture",), body=job(architecture=s))
        for s in STRANGE
    ],
    post_job(
        "model-name-surrogate", (422,), ("model_name",), raw=raw_job('"model_name": "\\ud800"')
    ),
    post_job(
        "architecture-surrogate",
        (422,),
        ("architecture",),
        raw=raw_job('"architecture": "\\udfff"'),
    ),
    post_job("dataset-surrogate", (422,), ("dataset",), raw=raw_job('"dataset": "a\\ud800b"')),
    post_job(
        "param-name-surrogate",
        (422,),
        ("no parameter",),
        raw=raw_job('"architecture_params": {"\\ud800": 1}'),
    ),
    *[upload(f"upload-name-{s[:8]!r}", (422,), ("dataset name",), name=s) for s in STRANGE[:-1]],
    # -- traversal in names: bodies, uploads, paths, query strings -------------------------
    *[
        post_job(f"model-name-{t!r}", (422,), ("model_name",), body=job(model_name=t))
        for t in TRAVERSALS
    ],
    *[post_job(f"dataset-{t!r}", (422,), ("dataset",), body=job(dataset=t)) for t in TRAVERSALS],
    *[upload(f"upload-name-{t!r}", (422,), ("dataset name",), name=t) for t in TRAVERSALS],
    upload("upload-target", (400,), ("column", "not in the header"), target="../../etc/passwd"),
    # -- file contents: what parses but cannot be trained on ---------------------------------
    upload(
        "csv-float32-overflow",
        (400,),
        ("line 3", "column 'a'", "float32"),
        data=b"a,label\n1,2\n1e300,3\n",
    ),
    upload(
        "csv-target-overflow",
        (400,),
        ("line 2", "label", "float32"),
        data=b"a,label\n1,-1e39\n2,3\n",
    ),
    upload("csv-nan", (400,), ("line 2", "finite"), data=b"a,label\nnan,2\n2,3\n"),
    upload(
        "csv-10e400",
        (400,),
        ("line 2", "not a finite number"),
        data=b"a,label\n" + str(10**400).encode() + b",2\n2,3\n",
    ),
    upload("csv-empty", (400,), ("empty",), data=b""),
    upload("csv-binary", (400,), ("UTF-8",), data=b"\xff\xfe\x00a,label\n"),
    upload("csv-no-target", (422,), ("target",), target=None),
    upload(
        "npz-no-values",
        (400,),
        ("hold no values",),
        data=npz(X=[[], []], y=[1.0, 2.0]),
        filename="d.npz",
        target=None,
    ),
    upload(
        "npz-pickle",
        (400,),
        ("Python objects",),
        data=npz(X=[{"a": 1}, None], y=[1, 2]),
        filename="d.npz",
        target=None,
    ),
    upload(
        "npz-not-a-zip", (400,), ("NPZ",), data=b"PK\x03\x04 broken", filename="d.npz", target=None
    ),
    *[
        Bad(f"model-path-{t!r}", method, path.format(t), (404,), says, json=body)
        for t in TRAVERSALS + ["%00", "a%00b", "%ff", "A", "x" * 300]
        if t not in (".", "..")  # a dot segment is removed by the client: another path
        for method, path, says, body in [
            ("GET", "/v1/models/{}", ("model", "does not exist"), None),
            ("POST", "/v1/models/{}/predict", ("model", "does not exist"), {"inputs": [[0] * 13]}),
            ("GET", "/v1/models/{}/versions/1/weights", ("model", "does not exist"), None),
        ]
        if "/" not in t and "%2f" not in t.lower()  # a '/' is another route: below
    ],
    *[
        Bad(f"route-{t!r}", "GET", f"/v1/models/{t}/versions/1/weights", (404,), ("no route",))
        for t in ("../x", "..%2fx", "/etc/passwd", "a/../../b", "\u2024\u2024/x")
    ],
    *[
        Bad(f"job-path-{t!r}", "GET", f"/v1/jobs/{t}", (404,), ("job", "does not exist"))
        for t in [
            "..%5C..%5Cx",
            "C:%5Cx",
            "%E2%80%A4%E2%80%A4",
            "%EF%BC%8F",
            "%00",
            "%ff",
            "x" * 300,
        ]
    ],
    *[
        Bad(f"job-filter-{t!r}", "GET", f"/v1/jobs?model_name={t}", (422,), ("model_name",))
        for t in [
            "..%2fx",
            "%2e%2e%2f",
            "%252e%252e%252f",
            "%2Fetc%2Fpasswd",
            "%00",
            "%E2%80%A4%E2%80%A4",
        ]
    ],
    # -- numbers in paths, queries and headers --------------------------------------------
    *[
        Bad(
            f"version-{v[:8]}",
            "GET",
            f"/v1/models/{MODEL}/versions/{v}/weights",
            (404,) if is_alias(v) else (422,),  # an alias: a model may have it, this one not
            ("alias",) if is_alias(v) else ("version",),
        )
        for v in ("0", "-1", "x", "1e3", "0x1", str(2**70), "9" * 5000)
    ],
    *[
        Bad(
            f"predict-version-{v[:8]}",
            "POST",
            f"/v1/models/{MODEL}/predict?version={v}",
            (404,) if is_alias(v) else (422,),
            ("alias",) if is_alias(v) else ("version",),
            json={"inputs": [BOSTON_ROW]},
        )
        for v in ("0", "x", "NaN", str(2**70))
    ],
    *[
        Bad(f"query-{q[:16]}", "GET", f"/v1/jobs?{q}", (422,), (q.split("=")[0],))
        for q in (
            "limit=0",
            "limit=1e999",
            "limit=" + "9" * 5000,
            "offset=-1",
            "status=%00",
            "status=done",
        )
    ],
    *[
        post_job(
            f"idempotency-key-{k[:5]!r}",
            (422,),
            ("idempotency-key",),
            body=MINIMAL,
            headers={"Idempotency-Key": k},
        )
        for k in ("", "x" * 300, "a\tb")
    ],
    # -- unknown routes and methods ---------------------------------------------------------
    Bad("no-route", "GET", "/v1/nowhere", (404,), ("no route", "/v1/nowhere")),
    Bad("no-method", "DELETE", "/v1/jobs", (405,), ("not allowed",)),
]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def api(request, tmp_path_factory, house_model) -> Iterator[tuple[httpx.Client, Path]]:
    """The app over real HTTP (paths decoded as a server does), module-wide, with a published
    model version; and its data dir."""
    data_dir = tmp_path_factory.mktemp(f"bad-{request.param}") / "data"
    overrides: dict[str, Any] = {"max_body_bytes": MAX_BODY, "max_upload_bytes": MAX_UPLOAD}
    with _database(request.param) as url:
        if url is not None:
            overrides["database_url"] = url
        app = create_app(make_settings(data_dir, **overrides))
        with serve(app) as base_url, httpx.Client(base_url=base_url, headers=AUTH) as client:
            publish(app.state.services, MODEL, house_model)
            yield client, data_dir


class _database:
    def __init__(self, kind: str) -> None:
        self.kind, self._context = kind, None

    def __enter__(self) -> str | None:
        if self.kind == "sqlite":
            return None
        self._context = postgres_database()
        return self._context.__enter__()

    def __exit__(self, *exc) -> None:
        if self._context is not None:
            self._context.__exit__(*exc)


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _outside(data_dir: Path) -> set[str]:
    """What is next to the data dir and in the working directory (where a name that escaped the
    stores would land)."""
    return {p.name for p in data_dir.parent.iterdir()} | {p.name for p in Path.cwd().iterdir()}


@pytest.mark.parametrize("bad", TABLE, ids=[bad.id for bad in TABLE])
def test_bad_input_gets_a_clear_4xx(api, bad: Bad):
    client, data_dir = api
    before, outside = _tree(data_dir), _outside(data_dir)
    response = bad.send(client)
    assert response.status_code in bad.codes, (response.status_code, response.text[:500])
    body = response.json()
    assert set(body) == {"detail"} and body["detail"], body
    detail = json.dumps(body["detail"], ensure_ascii=False)
    for words in bad.says:
        assert words.lower() in detail.lower(), (words, detail[:500])
    assert "Traceback" not in response.text and 'File "' not in response.text
    assert len(response.content) < 20_000  # the message does not echo a huge input
    assert _tree(data_dir) == before  # nothing written, in the stores or elsewhere
    assert _outside(data_dir) == outside


def test_file_names_of_uploads_never_become_paths(api):
    client, data_dir = api
    for i, filename in enumerate(["../../x.csv", "/etc/x.csv", "..\\..\\x.csv", "\u2024\u2024/x"]):
        response = client.post(
            "/v1/datasets",
            data={"name": f"named-{i}", "target": "label"},
            files={"file": (filename, CSV)},
        )
        assert response.status_code == 201, response.text
    stored = [p.name for p in (data_dir / "datasets").iterdir()]
    assert len(stored) == 1 and re.fullmatch(r"[0-9a-f]{64}\.npz", stored[0])  # by content
    listed = [d for d in client.get("/v1/datasets").json() if d["name"].startswith("named-")]
    assert len(listed) == 4 and all(stored[0][:12] in d["description"] for d in listed)
    assert not list(data_dir.parent.glob("x*")) and not Path("x.csv").exists()


def test_the_service_still_works_after_the_table(api):
    client, data_dir = api
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    submitted = client.post("/v1/jobs", json=MINIMAL)
    assert submitted.status_code == 202, submitted.text
    assert client.get(submitted.headers["location"]).json()["status"] == "queued"
    predicted = client.post(f"/v1/models/{MODEL}/predict", json={"inputs": [BOSTON_ROW]})
    assert predicted.status_code == 200, predicted.text
    # The stores hold slug-named entries only: <model>/v<N>.safetensors, <dataset>.npz.
    for model_dir in (data_dir / "weights").iterdir():
        assert is_slug(model_dir.name)
        assert all(
            f.name.startswith("v") and f.suffix == ".safetensors" for f in model_dir.iterdir()
        )
    for dataset in (data_dir / "datasets").iterdir():
        assert dataset.suffix == ".npz" and is_slug(dataset.stem)
