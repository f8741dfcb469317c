"""Domain errors, each with the HTTP status it maps to (translated in one handler in main.py)."""

from __future__ import annotations


class ServiceError(Exception):
    status_code = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(ServiceError):
    status_code = 404


class Conflict(ServiceError):
    status_code = 409


class TooLarge(ServiceError):
    status_code = 413


class Invalid(ServiceError):
    status_code = 422


class Unavailable(ServiceError):
    status_code = 503


class NoSpace(ServiceError):
    """The artifact store's volume is full (507 Insufficient Storage)."""

    status_code = 507


class LeaseLost(Exception):
    """A worker's claim on a job was taken over (fencing token changed); it must stop writing."""
