"""One error tree for the whole platform.

Services and engines raise these; `galerne.api.errors` maps them to HTTP once, in la Plateforme's
documented body ``{"object": "error", "message", "type", "param", "code"}``. Each class fixes the
HTTP status, the error ``type`` and a default ``code``, so a raise site only says what went wrong and
how to fix it.

    GalerneError (500 server_error)
    ├── InvalidRequestError (400 invalid_request_error)
    │   ├── ContextLengthExceededError (400, code context_length_exceeded)
    │   ├── UnsupportedFeatureError (400, code unsupported_feature)
    │   ├── ContentPolicyError (400, code content_policy): a moderation policy blocked the input or the answer
    │   ├── InvalidPolicyError (400, code invalid_policy): a moderation policy name the catalogue does not define
    │   ├── EvalDataError (400, code invalid_eval_data): a benchmark file missing or in the wrong format
    │   └── DocumentError (400, code invalid_document): an uploaded document we cannot read text from
    │       ├── UnsupportedFileTypeError (400, code unsupported_file_type): not .txt/.md/.html/.pdf/.docx
    │       ├── FileTypeMismatchError (400, code file_type_mismatch): the bytes are not what the name says
    │       ├── EmptyDocumentError (400, code empty_document): no bytes, or no text at all
    │       ├── NoTextLayerError (400, code no_text_layer): a scanned PDF (images only); OCR it first
    │       ├── EncryptedDocumentError (400, code encrypted_document): a password-protected PDF
    │       └── CorruptDocumentError (400, code corrupt_document): the file does not parse or decode
    ├── RequestValidationFailed (422 invalid_request_error)
    ├── AuthenticationError (401 authentication_error)
    ├── PermissionDeniedError (403 permission_error)
    ├── NotFoundError (404 invalid_request_error)
    │   └── ModelNotFoundError (404, code model_not_found)
    ├── ConflictError (409 invalid_request_error)
    ├── PayloadTooLargeError (413 invalid_request_error)
    ├── RateLimitExceededError (429 rate_limit_error, Retry-After and x-ratelimit-* headers)
    │   └── BudgetExceededError (429, code budget_exceeded)
    ├── EngineOverloadedError (429 rate_limit_error, Retry-After)
    ├── ServiceUnavailableError (503 server_error, Retry-After; details go to the log, never to the client)
    │   ├── EngineUnavailableError (503, code engine_unavailable)
    │   ├── LimitStoreUnavailableError (503, code rate_limit_store_unavailable)
    │   ├── DatabaseUnavailableError (503, code database_unavailable)
    │   └── MeteringUnavailableError (503, code metering_unavailable): usage could not be recorded safely
    ├── GenerationFailedError (500 server_error, code generation_failed)
    ├── UpstreamError (502 server_error, code upstream_error): a remote model's upstream answered badly or not at all
    │   └── UpstreamTimeoutError (504, code upstream_timeout)
    ├── UpstreamRejectedError (the upstream's own 4xx status and message, passed on)
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

    def headers(self) -> dict[str, str]:
        """HTTP headers that go with this error (Retry-After, rate-limit state); none by default."""
        return {}


class InvalidRequestError(GalerneError):
    """The request is well-formed but asks for something we cannot do (la Plateforme answers 400)."""

    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class ContextLengthExceededError(InvalidRequestError):
    code = "context_length_exceeded"


class UnsupportedFeatureError(InvalidRequestError):
    code = "unsupported_feature"


class ContentPolicyError(InvalidRequestError):
    """A moderation policy blocked the request or its answer; the message names the categories, never the text."""

    code = "content_policy"


class InvalidPolicyError(InvalidRequestError):
    code = "invalid_policy"


class EvalDataError(InvalidRequestError):
    """A benchmark file that is missing or not in the format its task reads (`galerne eval run --data`)."""

    code = "invalid_eval_data"


class DocumentError(InvalidRequestError):
    """An uploaded document we cannot take text from; each subclass says why and how to fix it.

    A 400, not a 415: the upload itself (multipart) is a media type we accept; what is wrong is the file
    inside it, which is a semantic error like the others under `InvalidRequestError` (OpenAI answers an
    unsupported upload with a 400 too).
    """

    code = "invalid_document"


class UnsupportedFileTypeError(DocumentError):
    """A file extension we have no extractor for (.doc, .xlsx, .png, none at all)."""

    code = "unsupported_file_type"


class FileTypeMismatchError(DocumentError):
    """The bytes are not what the name says (a PDF named .txt, a zip without word/document.xml named .docx)."""

    code = "file_type_mismatch"


class EmptyDocumentError(DocumentError):
    """The file has no bytes, or no text at all once markup is dropped."""

    code = "empty_document"


class NoTextLayerError(DocumentError):
    """A PDF whose pages hold no text, only images or drawings: a scan, which needs OCR first."""

    code = "no_text_layer"


class EncryptedDocumentError(DocumentError):
    """A password-protected PDF that does not open with an empty password."""

    code = "encrypted_document"


class CorruptDocumentError(DocumentError):
    """The file does not parse (a broken PDF or zip) or its text does not decode."""

    code = "corrupt_document"


class RequestValidationFailed(GalerneError):
    """The body does not match the schema; the message names the offending field."""

    status = 422
    type = "invalid_request_error"
    code = "invalid_request_body"


class AuthenticationError(GalerneError):
    """No key, an unknown key, a wrong secret, or a revoked, expired or disabled key."""

    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDeniedError(GalerneError):
    """A valid key asking for something its project may not use (a model, the admin API)."""

    status = 403
    type = "permission_error"
    code = "permission_denied"


class NotFoundError(GalerneError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFoundError(NotFoundError):
    code = "model_not_found"


class ConflictError(GalerneError):
    status = 409
    type = "invalid_request_error"
    code = "already_exists"


class RateLimitExceededError(GalerneError):
    """A project's requests/minute, tokens/minute or concurrency limit is reached for now.

    `limit_headers` carries la Plateforme's `x-ratelimit-*` values as they stood when refused.
    `retry_after=None` says that retrying cannot help (the request can never fit): no `Retry-After` is sent,
    and `x-should-retry: false` stops the OpenAI SDK's automatic retries of 429s. `reason` names the limit
    that refused (`requests_per_minute`, `monthly_budget`, ...; the code when not given), for the console's
    count of refusals; it is not sent to the client.
    """

    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(
        self,
        message: str,
        *,
        retry_after: int | None = 1,
        limit_headers: dict[str, str] | None = None,
        code: str | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after
        self.limit_headers = limit_headers or {}
        self.reason = reason or self.code or "rate_limit_exceeded"

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {"x-should-retry": "false", **self.limit_headers}
        return {"Retry-After": str(self.retry_after), **self.limit_headers}


class BudgetExceededError(RateLimitExceededError):
    """The project spent its monthly token or money budget; it resets on the 1st (UTC)."""

    code = "budget_exceeded"


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

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class ServiceUnavailableError(GalerneError):
    """A part the platform needs is down for now; the client should retry after `retry_after` seconds.

    The message is for clients: it names the part, never its host, port or the driver's error text
    (those go to the log where the error is raised).
    """

    status = 503
    type = "server_error"
    code = "service_unavailable"
    default_retry_after = 5

    def __init__(self, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = self.default_retry_after if retry_after is None else retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class EngineUnavailableError(ServiceUnavailableError):
    code = "engine_unavailable"


class LimitStoreUnavailableError(ServiceUnavailableError):
    """The shared rate-limit store (Redis) cannot be reached: refuse rather than serve without limits."""

    code = "rate_limit_store_unavailable"


class DatabaseUnavailableError(ServiceUnavailableError):
    code = "database_unavailable"


class MeteringUnavailableError(ServiceUnavailableError):
    """New requests are paused because their usage could not be recorded safely: the database has been
    unreachable long enough for this server's backlog of unwritten records to reach its bound."""

    code = "metering_unavailable"
    default_retry_after = 30


class GenerationFailedError(GalerneError):
    """The engine failed while generating (not the client's fault)."""

    code = "generation_failed"


class UpstreamError(GalerneError):
    """A remote model's upstream gave no usable answer (refused connection, 5xx, a reply that does not parse).

    The client is told which model failed, never the upstream's address or words: those go to the log.
    """

    status = 502
    type = "server_error"
    code = "upstream_error"


class UpstreamTimeoutError(UpstreamError):
    status = 504
    code = "upstream_timeout"


class UpstreamRejectedError(GalerneError):
    """A remote model's upstream refused the request itself (a 4xx about the request, such as a 400 or a 429):
    the client gets the upstream's status and message, as if it had called the upstream directly.

    The status varies with the upstream's, so it is set per instance; a 429 passes on the upstream's
    Retry-After when it sent one.
    """

    type = "invalid_request_error"
    code = "upstream_rejected"

    def __init__(
        self,
        message: str,
        *,
        status: int,
        param: str | None = None,
        code: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message, param=param, code=code)
        self.status = status
        if status == 429:
            self.type = "rate_limit_error"
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}


class ConfigurationError(GalerneError):
    """A bad configuration or model file found at start-up; printed to the operator, never served."""

    code = "configuration_error"
