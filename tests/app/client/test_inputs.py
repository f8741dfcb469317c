"""`models predict`'s samples from JSON or CSV, and what a refusal prints."""

from __future__ import annotations

import httpx
import pytest

from app.client.commands.models import read_inputs
from app.client.errors import USAGE, CliError
from app.client.http import refused


def test_json_list_object_and_csv_with_or_without_a_header():
    assert read_inputs("[[1, 2], [3, 4]]", "-") == [[1, 2], [3, 4]]
    assert read_inputs('{"inputs": [[1, 2]]}', "f.json") == [[1, 2]]
    assert read_inputs("a,b\n1,2\n3.5,-4e1\n", "f.csv") == [[1.0, 2.0], [3.5, -40.0]]
    assert read_inputs("1,2\n\n3,4\n", "f.csv") == [[1.0, 2.0], [3.0, 4.0]]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "f: no samples"),
        ("[1, 2", "f: not JSON"),
        ('{"samples": []}', 'f: a JSON object needs "inputs"'),
        ('{"inputs": 3}', "f: expected a list of samples"),
        ("a,b\n1,2\n3,x\n", "f: line 3: not all numbers"),
    ],
)
def test_unreadable_inputs_are_usage_errors(text, message):
    with pytest.raises(CliError) as caught:
        read_inputs(text, "f")
    assert caught.value.message.startswith(message) and caught.value.exit_code == USAGE


def test_a_refusal_prints_the_servers_detail():
    plain = refused(httpx.Response(409, json={"detail": "job 'x' already ended"}))
    assert plain.message == "409 Conflict: job 'x' already ended" and plain.exit_code == USAGE
    items = [{"loc": ["body", "epochs"], "msg": "epochs: Input should be >= 1", "type": "x"}]
    listed = refused(httpx.Response(422, json={"detail": items}))
    assert listed.message == (
        "422 Unprocessable Entity: the request is invalid:\n  epochs: Input should be >= 1"
    )
    not_json = refused(httpx.Response(502, text="<html>bad gateway</html>"))
    assert not_json.message == "502 Bad Gateway: <html>bad gateway</html>"
