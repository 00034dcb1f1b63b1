"""What the OpenAPI document says beyond what Litestar derives from the routes, added through a
public extension point (the JSON render plugin that serves `/schema/openapi.json`, which the Swagger
and ReDoc pages read too), when the document is first asked for: building it costs a quarter of a
second that a cold start should not pay.

- Request bodies are described by msgspec's own JSON Schema: it states every bound the decoder
  enforces (Litestar's rendering drops some, such as a minimum of 0), so documented = enforced.
- Routes that answer either JSON or Server-Sent Events say so (one response spec per status code
  cannot carry two media types).
"""

from __future__ import annotations

import copy
from typing import Any

import msgspec
from litestar import Request
from litestar.openapi.plugins import JsonRenderPlugin

EVENT_STREAM_ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/responses", "/models/{name}/pull")


def complete_document(document: dict[str, Any], request_types: list[type]) -> dict[str, Any]:
    """A copy of Litestar's `document` with our request schemas and event-stream responses."""
    completed = copy.deepcopy(document)
    _, components = msgspec.json.schema_components(request_types, ref_template="#/components/schemas/{name}")
    completed.setdefault("components", {}).setdefault("schemas", {}).update(_without_null_defaults(components))
    for path in EVENT_STREAM_ROUTES:
        ok = completed["paths"][path]["post"]["responses"]["200"]
        ok.setdefault("content", {})["text/event-stream"] = {"schema": {"type": "string"}}
        ok["description"] = (f"{ok.get('description', '')}; with streaming, Server-Sent Events of JSON chunks "
                             "ending in `data: [DONE]`")
    return completed


def _without_null_defaults(schema: Any) -> Any:
    """msgspec states `"default": null` for every optional field; the document leaves those out, as
    Litestar does (an absent field and a null one mean the same to this API)."""
    if isinstance(schema, dict):
        return {key: _without_null_defaults(value) for key, value in schema.items()
                if not (key == "default" and value is None)}
    if isinstance(schema, list):
        return [_without_null_defaults(value) for value in schema]
    return schema


class CompletedJsonRenderPlugin(JsonRenderPlugin):
    """Serves the completed document (made once, on the first request for it)."""

    def __init__(self, request_types: list[type]) -> None:
        super().__init__()
        self._request_types = request_types
        self._completed: dict[str, Any] | None = None

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        if self._completed is None:
            self._completed = complete_document(openapi_schema, self._request_types)
        return self.render_json(request, self._completed)
