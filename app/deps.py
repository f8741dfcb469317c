"""Request-scoped dependencies as Annotated aliases (FastAPI full-stack template style)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.auth import match_key, owner_of
from app.inference import ModelCache
from app.services import Services
from app.settings import Settings
from app.store import JobStore

bearer = HTTPBearer(
    auto_error=False,
    description="An API key from TRAINSERVE_API_KEYS, or the one generated into <data dir>/api_key",
)


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_settings(services: ServicesDep) -> Settings:
    return services.settings


def get_store(services: ServicesDep) -> JobStore:
    return services.store


def get_model_cache(request: Request) -> ModelCache:
    return request.app.state.model_cache


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[JobStore, Depends(get_store)]
CacheDep = Annotated[ModelCache, Depends(get_model_cache)]


def require_key(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> str:
    """The owner (a short hash) of the request's API key; 401 when it is missing or wrong."""
    if credentials is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing API key: send the header 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    key = match_key(credentials.credentials, request.app.state.api_keys)
    if key is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "invalid API key: use one of TRAINSERVE_API_KEYS or the key in <data dir>/api_key",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    return owner_of(key)


KeyDep = Annotated[str, Depends(require_key)]
