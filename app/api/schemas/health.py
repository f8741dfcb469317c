"""Workers, liveness and readiness."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.api.schemas.common import UtcTime


class WorkerOut(BaseModel):
    """A live worker and what it trains on."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "celery@gpu-host-1",
                    "device": "cuda",
                    "device_count": 2,
                    "device_names": ["NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3"],
                    "started_at": "2026-12-01T10:00:00Z",
                    "heartbeat_at": "2026-12-01T10:05:00Z",
                }
            ]
        }
    )

    name: str
    device: Literal["cpu", "cuda"]
    device_count: int
    device_names: list[str]
    started_at: UtcTime
    heartbeat_at: UtcTime


class Health(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ok"}]})

    status: str


class Readiness(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"status": "ready", "store": "ok", "broker": "ok"}]}
    )

    status: str
    store: str
    broker: str
    artifacts: str = Field("ok", description="the artifact store (weights, datasets, checkpoints)")
