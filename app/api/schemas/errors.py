"""Error answers, and their OpenAPI descriptions."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class ValidationItem(BaseModel):
    """One failed check of a request: where (`loc`), what (`msg`, naming the field), its kind."""

    loc: list[str]
    msg: str
    type: str | None = None


class ErrorOut(BaseModel):
    """Every error: a message that says what was wrong and how to fix it (a list of the failed
    checks when the request does not match its schema)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"detail": "architecture 'resnet99' is unknown; known: house_prices_mlp, mlp"},
                {
                    "detail": [
                        {
                            "loc": ["body", "epochs"],
                            "msg": "epochs: Input should be greater than or equal to 1",
                            "type": "greater_than_equal",
                        }
                    ]
                },
            ]
        }
    )

    detail: str | list[ValidationItem]


ERROR_DESCRIPTIONS = {
    400: "the content cannot be read (malformed JSON, a file that is not a dataset)",
    401: "no or wrong API key: send 'Authorization: Bearer <key>'",
    404: "no such resource",
    409: "the request conflicts with the resource's state",
    413: "the body is over TRAINSERVE_MAX_BODY_BYTES (uploads: TRAINSERVE_MAX_UPLOAD_BYTES)",
    422: "the request fails validation; the message names the field and the limit",
    429: "too many at once: try again after the seconds in Retry-After",
    503: "a dependency (job store, broker, stored weights) is unavailable",
    507: "no space is left on the artifact store",
}


def error_responses(*codes: int, **descriptions: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for error codes, each `{"detail": ...}` as JSON; `descriptions`
    (keyed `e404=...`) replace the generic description of a code."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        description = descriptions.get(f"e{code}", ERROR_DESCRIPTIONS[code])
        out[code] = {"model": ErrorOut, "description": description}
    return out
