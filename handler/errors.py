"""The typed error tree every layer raises.

Errors are raised where they happen with what the client needs to know (status, OpenAI `type`,
`code`, `param`, and facts such as `retry_after_s`); `handler.api.errors` alone turns any of them into
an OpenAI error body, a status code and headers. Nothing here imports the web framework or knows
HTTP headers, so the engine and the store can raise these freely.
"""

from __future__ import annotations


class ServerError(Exception):
    """Base of every error this server reports to a client."""

    status_code = 500
    error_type = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None,
                 retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.retry_after_s = retry_after_s  # when trying again may succeed


class InvalidRequest(ServerError):
    status_code = 400
    error_type = "invalid_request_error"


class ContextLengthExceeded(InvalidRequest):
    code = "context_length_exceeded"


class Unauthorized(ServerError):
    status_code = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class NotFound(ServerError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"

    def __init__(self, name: str, *, param: str | None = "model") -> None:
        super().__init__(f"The model '{name}' does not exist or you do not have access to it.", param=param)


class Conflict(ServerError):
    status_code = 409
    error_type = "invalid_request_error"
    code = "conflict"


class Overloaded(ServerError):
    """Too many requests are already waiting for this model."""

    status_code = 429
    error_type = "rate_limit_error"
    code = "queue_full"


class ModelLoadFailed(ServerError):
    """The model file exists but llama.cpp could not load it (corrupt, too large, bad options)."""

    status_code = 500
    code = "model_load_failed"


class ModelTooLarge(ModelLoadFailed):
    """The model cannot fit in the memory budget even alone."""

    code = "model_too_large"


class ServiceUnavailable(ServerError):
    status_code = 503
    error_type = "server_error"
    code = "service_unavailable"


class ModelSourceError(ServerError):
    """The model's object store answered, but not with the model (missing object, access denied,
    bytes that fail their checksum): a bad gateway from the client's point of view."""

    status_code = 502
    error_type = "server_error"
    code = "model_source_error"


class InsufficientStorage(ServerError):
    status_code = 507
    error_type = "server_error"
    code = "insufficient_storage"
