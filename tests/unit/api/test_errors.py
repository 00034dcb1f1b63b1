"""Every error leaves as OpenAI's body with the right status."""

from litestar.exceptions import HTTPException, NotFoundException, ValidationException

from handler.api.errors import error_body
from handler.errors import ContextLengthExceeded, ModelNotFound, ServiceUnavailable, Unauthorized


def _as_dict(exc):
    status, body, headers = error_body(exc)
    return status, {"message": body.error.message, "type": body.error.type, "param": body.error.param,
                    "code": body.error.code}, headers


def test_model_not_found():
    status, error, _ = _as_dict(ModelNotFound("nope"))
    assert status == 404
    assert error == {"message": "The model 'nope' does not exist or you do not have access to it.",
                     "type": "invalid_request_error", "param": "model", "code": "model_not_found"}


def test_context_length():
    status, error, _ = _as_dict(ContextLengthExceeded("too long", param="messages"))
    assert (status, error["code"], error["param"]) == (400, "context_length_exceeded", "messages")


def test_retry_after_becomes_the_header():
    _, _, headers = _as_dict(ServiceUnavailable("busy", retry_after_s=3))
    assert headers == {"Retry-After": "3"}
    _, _, headers = _as_dict(ServiceUnavailable("busy", retry_after_s=0.2))
    assert headers == {"Retry-After": "1"}  # whole seconds, never 0
    assert _as_dict(ServiceUnavailable("busy"))[2] == {}


def test_unauthorized_asks_for_a_bearer_token():
    _, _, headers = _as_dict(Unauthorized("no key"))
    assert headers == {"WWW-Authenticate": "Bearer"}


def test_validation_error_names_the_field():
    exc = ValidationException(detail="Validation failed", extra=[{"message": "Expected `float`, got `str`",
                                                                  "key": "temperature", "source": "body"}])
    status, error, _ = _as_dict(exc)
    assert (status, error["param"], error["type"]) == (400, "temperature", "invalid_request_error")
    assert "Expected `float`" in error["message"]


def test_framework_errors_keep_their_status():
    assert _as_dict(NotFoundException())[0] == 404
    assert _as_dict(HTTPException(status_code=405, detail="Method Not Allowed"))[1]["code"] == "method_not_allowed"
    assert _as_dict(HTTPException(status_code=413, detail="too big"))[1]["code"] == "request_too_large"


def test_unexpected_errors_hide_their_details():
    status, error, _ = _as_dict(RuntimeError("secret path /root/x"))
    assert status == 500 and "secret" not in error["message"]
