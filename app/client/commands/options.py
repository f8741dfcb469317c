"""What every client command shares: --url, --api-key and -o (`client`), and options built
only when a command is used (`LazyOptionsCommand`)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from app.client.output import OUTPUT_OPTION


class LazyOptionsCommand(click.Command):
    """A command whose generated options are built when it is used (parsed or its help shown),
    not when `trainserve` starts: building them imports pydantic and the request model."""

    def __init__(self, *args: Any, make_params: Callable[[], list[click.Parameter]], **kw: Any):
        self._make_params = make_params
        self._all: list[click.Parameter] | None = None
        super().__init__(*args, **kw)

    @property
    def params(self) -> list[click.Parameter]:
        if self._all is None:  # one list object: click appends to it and pops from it
            self._all = self._make_params() + self._declared
        return self._all

    @params.setter
    def params(self, value: list[click.Parameter]) -> None:
        self._declared, self._all = list(value), None


def client(f: Callable) -> Callable:
    """--url, --api-key and -o for a command; `f` gets a connected ApiClient as `api`."""

    @click.option(
        "--url",
        envvar="TRAINSERVE_URL",
        help="the API (env TRAINSERVE_URL; default: this machine's `trainserve serve`)",
    )
    @click.option(
        "--api-key",
        envvar="TRAINSERVE_API_KEY",
        help="env TRAINSERVE_API_KEY; default: TRAINSERVE_API_KEYS' first, or <data dir>/api_key",
    )
    @OUTPUT_OPTION
    @functools.wraps(f)
    def wrapper(url: str | None, api_key: str | None, **kwargs: Any) -> Any:
        from app.client.connection import resolve
        from app.client.http import ApiClient

        api = ApiClient(resolve(url, api_key))
        try:
            return f(api=api, **kwargs)
        finally:
            api.close()

    return wrapper
