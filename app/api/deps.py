"""Request-scoped dependencies as Annotated aliases (FastAPI full-stack template style).

They are `async def`: each is a few attribute reads, and FastAPI runs a plain `def` dependency
in a worker thread (a thread round trip per dependency per request)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.api.auth import KeyRefused, owner_of_authorization
from app.api.model_cache import ModelCache
from app.core.services import Services
from app.core.settings import Settings
from app.core.store import JobStore

bearer = HTTPBearer(
    auto_error=False,
    description="An API key from TRAINSERVE_API_KEYS, or the one generated into <data dir>/api_key",
)


async def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_settings(services: ServicesDep) -> Settings:
    return services.settings


async def get_store(services: ServicesDep) -> JobStore:
    return services.store


async def get_model_cache(request: Request) -> ModelCache:
    return request.app.state.model_cache


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[JobStore, Depends(get_store)]
CacheDep = Annotated[ModelCache, Depends(get_model_cache)]


async def require_key(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> str:
    """The owner (a short hash) of the request's API key; 401 when it is missing or wrong.

    (app.api.main's middleware has already refused a /v1 request without a valid key before its
    body was read; this dependency declares the scheme in the OpenAPI document and gives the
    owner.)"""
    header = f"Bearer {credentials.credentials}" if credentials is not None else None
    try:
        return owner_of_authorization(header, request.app.state.api_keys)
    except KeyRefused as refused:
        raise unauthorized(refused) from None


def unauthorized(refused: KeyRefused) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        refused.detail,
        headers={"WWW-Authenticate": refused.challenge},
    )


KeyDep = Annotated[str, Depends(require_key)]
