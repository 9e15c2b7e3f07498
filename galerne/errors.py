"""One error tree for the whole platform.

Services and engines raise these; `galerne.api.errors` maps them to HTTP once, in la Plateforme's
documented body ``{"object": "error", "message", "type", "param", "code"}``. Each class fixes the
HTTP status, the error ``type`` and a default ``code``, so a raise site only says what went wrong and
how to fix it.

    GalerneError (500 server_error)
    ├── InvalidRequestError (400 invalid_request_error)
    │   ├── ContextLengthExceededError (400, code context_length_exceeded)
    │   └── UnsupportedFeatureError (400, code unsupported_feature)
    ├── RequestValidationFailed (422 invalid_request_error)
    ├── ModelNotFoundError (404 invalid_request_error)
    ├── PayloadTooLargeError (413 invalid_request_error)
    ├── EngineOverloadedError (429 rate_limit_error, Retry-After)
    ├── EngineUnavailableError (503 server_error, Retry-After)
    └── ConfigurationError (raised at start-up; never reaches a client)
"""

from __future__ import annotations


class GalerneError(Exception):
    """Base of every error Galerne raises on purpose."""

    status: int = 500
    type: str = "server_error"
    code: str | None = "internal_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class InvalidRequestError(GalerneError):
    """The request is well-formed but asks for something we cannot do (la Plateforme answers 400)."""

    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class ContextLengthExceededError(InvalidRequestError):
    code = "context_length_exceeded"


class UnsupportedFeatureError(InvalidRequestError):
    code = "unsupported_feature"


class RequestValidationFailed(GalerneError):
    """The body does not match the schema; the message names the offending field."""

    status = 422
    type = "invalid_request_error"
    code = "invalid_request_body"


class ModelNotFoundError(GalerneError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class PayloadTooLargeError(GalerneError):
    status = 413
    type = "invalid_request_error"
    code = "payload_too_large"


class EngineOverloadedError(GalerneError):
    """The engine's queue is full; the client should retry after `retry_after` seconds."""

    status = 429
    type = "rate_limit_error"
    code = "engine_overloaded"

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class EngineUnavailableError(GalerneError):
    status = 503
    type = "server_error"
    code = "engine_unavailable"

    def __init__(self, message: str, *, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ConfigurationError(GalerneError):
    """A bad configuration or model file found at start-up; printed to the operator, never served."""

    code = "configuration_error"
