"""What several schemas share: UTC timestamps, model names."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, Field

from app.core.names import SLUG_PATTERN, check_slug


def _utc(moment: datetime) -> datetime:
    """SQLite returns naive datetimes: they are UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


UtcTime = Annotated[datetime, AfterValidator(_utc)]
ModelName = Annotated[
    str,
    Field(
        description="a slug: 1-64 of a-z 0-9 . _ -, starting with a letter or digit, no '..'",
        json_schema_extra={"pattern": SLUG_PATTERN},
    ),
    AfterValidator(lambda v: check_slug(v, "model_name")),
]
