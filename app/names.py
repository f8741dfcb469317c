"""User-chosen names (models, datasets) are slugs; nothing else may become part of a path."""

from __future__ import annotations

import re

SLUG_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
_SLUG = re.compile(SLUG_PATTERN)


def is_slug(name: str) -> bool:
    return bool(_SLUG.fullmatch(name)) and ".." not in name


def check_slug(name: str, what: str) -> str:
    if not isinstance(name, str) or not is_slug(name):
        raise ValueError(
            f"{what} {name!r} is not a valid name: use 1-64 characters of a-z, 0-9, '.', '_' "
            "and '-', starting with a letter or digit, with no '..'"
        )
    return name
