"""User-chosen names (models, datasets) are slugs; nothing else may become part of a path."""

from __future__ import annotations

import re

# 1-64 of a-z 0-9 . _ -, starting with a letter or digit, without '..' anywhere. The pattern is
# also the one the OpenAPI document declares (JSON Schema / ECMA 262 syntax, as Python reads it).
SLUG_PATTERN = r"^(?!.*\.\.)[a-z0-9][a-z0-9._-]{0,63}$"
_SLUG = re.compile(SLUG_PATTERN)
SHOWN_MAX = 80  # characters of a rejected name repeated in an error message


# Aliases (`production`) are slugs that are not all digits: a version reference is a number or
# an alias, never both.
ALIAS_PATTERN = r"^(?!.*\.\.)(?![0-9]+$)[a-z0-9][a-z0-9._-]{0,63}$"


def is_slug(name: object) -> bool:
    return isinstance(name, str) and bool(_SLUG.fullmatch(name)) and ".." not in name


def shown(value: str, limit: int = SHOWN_MAX) -> str:
    """`value` as an error message may repeat it: quoted with escapes (no control characters,
    no lone surrogates), and cut after `limit` characters."""
    cut = value[:limit]
    text = repr(cut)
    return text if len(value) <= limit else f"{text}... ({len(value)} characters)"


def check_slug(name: str, what: str) -> str:
    if not is_slug(name):
        given = shown(name) if isinstance(name, str) else type(name).__name__
        raise ValueError(
            f"{what} {given} is not a valid name: use 1-64 characters of a-z, 0-9, '.', '_' "
            "and '-', starting with a letter or digit, with no '..'"
        )
    return name


def is_alias(name: object) -> bool:
    return is_slug(name) and not name.isdigit()


def check_alias(name: str) -> str:
    """An alias name, else ValueError saying what one is."""
    if not is_alias(name):
        given = shown(name) if isinstance(name, str) else type(name).__name__
        raise ValueError(
            f"alias {given} is not a valid alias: use 1-64 characters of a-z, 0-9, '.', '_' "
            "and '-', starting with a letter or digit, with no '..', and not only digits (a "
            "number is a version)"
        )
    return name
