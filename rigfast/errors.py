"""The gateway's exception tree. Each error carries the HTTP status it maps to."""

from __future__ import annotations


class ConfigError(ValueError):
    """A setting has a value the gateway cannot run with (the gateway stops with exit code 2)."""


#: The exit code of a configuration error: the supervisor stops instead of restarting a worker.
CONFIG_EXIT_CODE = 2


class RigError(Exception):
    """Base class: an expected error with a status hint and a message for the client."""

    status = 500

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class BadRequest(RigError):
    status = 400


class Forbidden(RigError):
    status = 403


class NotFound(RigError):
    status = 404


class Gone(RigError):
    status = 410


class TooManyRequests(RigError):
    status = 429


class CloudEventError(BadRequest):
    """The submitted or consumed message is not a valid CloudEvent."""


class SubscriptionError(BadRequest):
    """Malformed subscriptions, or a constraint on a field with no extractor."""
