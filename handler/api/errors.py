"""The one mapping from any exception to an error body: OpenAI's {"error": {message, type, param,
code}} for every route, and Anthropic's {"type": "error", "error": {type, message}} for the Messages
routes, made from the same status and message.

Our own `ServerError`s carry their status and fields; Litestar's HTTP exceptions (validation,
malformed JSON, unknown route, wrong method, body too large) keep their status with OpenAI's shape;
anything else is a 500 whose details go to the log, not to the client.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from typing import Any, Literal

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec

from handler.errors import ServerError, Unauthorized

log = logging.getLogger(__name__)

_TYPES = {401: "authentication_error", 403: "permission_error", 404: "invalid_request_error",
          429: "rate_limit_error"}
_MISSING_FIELD = re.compile(r"missing required field `([^`]+)`")
_CODES = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large", 429: "rate_limit_exceeded"}


class ErrorDetail(msgspec.Struct, kw_only=True):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(msgspec.Struct, kw_only=True):
    error: ErrorDetail


def _documented(description: str) -> ResponseSpec:
    return ResponseSpec(data_container=ErrorResponse, description=description, generate_examples=False)


# Every error any route can answer with, documented with OpenAI's body (instead of Litestar's own).
ERROR_RESPONSES = {
    400: _documented("Invalid request (malformed JSON, a field of the wrong type or value, prompt too long)"),
    401: _documented("Missing or wrong API key (when API_KEY is set)"),
    404: _documented("Unknown model"),
    409: _documented("Conflicting state (a model in use)"),
    413: _documented("Request body too large"),
    429: _documented("Too many requests waiting for the model (see Retry-After)"),
    500: _documented("Server error (a model failed to load)"),
    502: _documented("The model's object store failed (missing object, access denied, checksum mismatch)"),
    503: _documented("Busy, draining or object store unreachable (see Retry-After)"),
    507: _documented("Not enough disk space for the model"),
}


def error_body(exc: BaseException) -> tuple[int, ErrorResponse, dict[str, str]]:
    """(status, body, headers) for `exc`; usable inside a stream, where no response can be sent."""
    if isinstance(exc, ServerError):
        detail = ErrorDetail(message=exc.message, type=exc.error_type, param=exc.param, code=exc.code)
        return exc.status_code, ErrorResponse(error=detail), _headers(exc)
    if isinstance(exc, HTTPException):
        return exc.status_code, ErrorResponse(error=_http_detail(exc)), dict(exc.headers or {})
    if isinstance(exc, (RecursionError, UnicodeDecodeError)):  # the JSON decoder's, on hostile bodies
        problem = "is nested too deeply" if isinstance(exc, RecursionError) else "is not valid UTF-8"
        detail = ErrorDetail(message=f"The JSON body {problem}.", type="invalid_request_error", code="invalid_json")
        return 400, ErrorResponse(error=detail), {}
    log.exception("unhandled error", exc_info=exc)
    detail = ErrorDetail(message="The server had an error while processing your request.", type="server_error",
                         code="internal_error")
    return 500, ErrorResponse(error=detail), {}


def _headers(exc: ServerError) -> dict[str, str]:
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else {}
    if exc.retry_after_s is not None:
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
    return headers


def _http_detail(exc: HTTPException) -> ErrorDetail:
    status = exc.status_code
    error_type = _TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    message, param = exc.detail, None
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list) and exc.extra:
        first: Any = exc.extra[0]
        if isinstance(first, dict):
            message, param = _validation_message(first, message)
    elif status == 400 and "json" in message.lower() or message.startswith("Malformed"):
        message = f"We could not parse the JSON body of your request: {message}"
    code = "invalid_value" if isinstance(exc, ValidationException) else _CODES.get(status)
    return ErrorDetail(message=message, type=error_type, param=param, code=code)


def _validation_message(problem: dict[str, Any], fallback: str) -> tuple[str, str | None]:
    """Litestar names the failing field by path; "data" is the body itself, so name the missing field."""
    message, key = str(problem.get("message", fallback)), problem.get("key") or None
    if message == "'data'":  # Litestar's words for a request without a body
        return "The request needs a JSON object as its body.", None
    missing = _MISSING_FIELD.search(message)
    if key == "data":
        key = missing.group(1) if missing else None
    elif missing and key:
        key = f"{key}.{missing.group(1)}"
    return message + (f" (at '{key}')" if key else ""), key


def openai_error_handler(_request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorResponse]:
    status, body, headers = error_body(exc)
    return Response(content=body, status_code=status, headers=headers)


# Anthropic's error types, by status (its API answers 529 when overloaded; 503 here, with that type).
_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                    404: "not_found_error", 405: "invalid_request_error", 409: "invalid_request_error",
                    413: "request_too_large", 429: "rate_limit_error", 503: "overloaded_error", 504: "timeout_error"}


class AnthropicErrorDetail(msgspec.Struct, kw_only=True):
    type: str
    message: str


class AnthropicErrorResponse(msgspec.Struct, kw_only=True):
    error: AnthropicErrorDetail
    type: Literal["error"] = "error"


def _anthropic_documented(description: str) -> ResponseSpec:
    return ResponseSpec(data_container=AnthropicErrorResponse, description=description, generate_examples=False)


# The same errors, documented with Anthropic's body, for the Messages routes.
ANTHROPIC_ERROR_RESPONSES = {status: _anthropic_documented(spec.description or "")
                             for status, spec in ERROR_RESPONSES.items()}


def anthropic_error_body(exc: BaseException) -> tuple[int, AnthropicErrorResponse, dict[str, str]]:
    """(status, Anthropic's error body, headers) for `exc`: the OpenAI mapping's status and message."""
    status, body, headers = error_body(exc)
    kind = _ANTHROPIC_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
    return status, AnthropicErrorResponse(error=AnthropicErrorDetail(type=kind, message=body.error.message)), headers


def anthropic_error_handler(_request: Request[Any, Any, Any], exc: Exception) -> Response[AnthropicErrorResponse]:
    status, body, headers = anthropic_error_body(exc)
    return Response(content=body, status_code=status, headers=headers)


def shaped_by_path(anthropic_path: str) -> Callable[[Request[Any, Any, Any], Exception], Response[Any]]:
    """The app-wide error handler, for what no route's own handler saw (no route matched: 404, 405): the
    path still says which API the caller speaks, so under `anthropic_path` the body is Anthropic's."""

    def handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
        path = request.scope["path"]
        if path == anthropic_path or path.startswith(f"{anthropic_path}/"):
            return anthropic_error_handler(request, exc)
        return openai_error_handler(request, exc)

    return handler
