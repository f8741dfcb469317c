"""Where the client connects: --url / TRAINSERVE_URL and --api-key / TRAINSERVE_API_KEY, else
the embedded default's own address (TRAINSERVE_HOST, TRAINSERVE_PORT) and the key it keeps in
`<data dir>/api_key`, so on the machine that runs `trainserve serve` nothing needs setting."""

from __future__ import annotations

from dataclasses import dataclass

from app.client.errors import CliError

ANY_ADDRESS = {"0.0.0.0", "::", ""}


@dataclass(frozen=True)
class Connection:
    url: str
    api_key: str | None


def resolve(url: str | None, api_key: str | None) -> Connection:
    if url and api_key:
        return Connection(url.rstrip("/"), api_key)
    from pydantic import ValidationError

    from app.core.settings import Settings

    try:
        settings = Settings()
    except ValidationError as exc:
        raise CliError(f"invalid TRAINSERVE_* settings:\n{exc}") from None
    if not url:
        host = "127.0.0.1" if settings.host in ANY_ADDRESS else settings.host
        host = f"[{host}]" if ":" in host else host
        url = f"http://{host}:{settings.port}"
    if not api_key:
        api_key = _local_key(settings)
    return Connection(url.rstrip("/"), api_key)


def _local_key(settings) -> str | None:
    """The first of TRAINSERVE_API_KEYS, else the key the local service generated."""
    if settings.keys:
        return settings.keys[0]
    try:
        return settings.api_key_file.read_text().strip().splitlines()[0].strip() or None
    except (OSError, IndexError):
        return None
