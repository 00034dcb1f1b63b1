"""The contracts of the platforms that run the container, each used only where its platform calls it:

- SageMaker: the container runs with `serve` as its argument on port 8080 (the image's `serve`
  command), is polled on `GET /ping` and called on `POST /invocations` with an OpenAI chat,
  completion or embedding body; `model` may be left out when one model of that kind is declared.
- RunPod load-balancing workers: `GET /ping` on `PORT_HEALTH` (see `health_port`).
- Vertex AI: `AIP_HTTP_PORT`, `AIP_HEALTH_ROUTE` and `AIP_PREDICT_ROUTE`, whose body is Vertex's
  envelope `{"instances": [...], "parameters": {...}}` (each instance one of the bodies above, the
  parameters added to each) answered with `{"predictions": [...]}`.

Every invocation goes through the routes' own answers: same checks, queue, metrics and errors."""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from litestar import Request, Response, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import JSONBody
from litestar.response import Stream

from handler.api.calls import ModelCalls
from handler.api.dependencies import CallsDep, CatalogDep, LifecycleDep, SettingsDep, WarmUpDep
from handler.api.errors import ERROR_RESPONSES
from handler.api.protocols.chat import ChatCompletionRequest
from handler.api.protocols.completions import CompletionRequest
from handler.api.routes.chat import chat_answer
from handler.api.routes.completions import completion_answer
from handler.api.routes.embeddings import EmbeddingRequest, embedding_answer
from handler.errors import InvalidRequest
from handler.lifecycle import Lifecycle
from handler.settings import Settings
from handler.store.catalog import ModelCatalog
from handler.warmup import WarmUp

MAX_INSTANCES = 64
Body = dict[str, Any]


def readiness(warmup: WarmUp, lifecycle: Lifecycle) -> Literal["loading", "ready", "failed"]:
    """The warm set's state as platforms' health checks see it."""
    if lifecycle.draining or any(warmup.error(spec) for spec in warmup.specs):
        return "failed"
    return "ready" if warmup.ready else "loading"


def _kind(body: Body) -> Literal["chat", "completion", "embedding"]:
    if "messages" in body:
        return "chat"
    if "prompt" in body:
        return "completion"
    if "input" in body:
        return "embedding"
    raise InvalidRequest("an invocation is an OpenAI chat (messages), completion (prompt) or embedding (input) body",
                         param="body")


def _with_model(body: Body, catalog: ModelCatalog, kind: str) -> Body:
    if "model" in body:
        return body
    wanted = "embedding" if kind == "embedding" else "chat"
    candidates = [spec.name for spec in catalog.declared if spec.kind == wanted]
    if len(candidates) != 1:
        raise InvalidRequest(f"model is required: {len(candidates)} {kind} models are declared", param="model")
    return {**body, "model": candidates[0]}


async def invoke(body: Any, request: Request[Any, Any, Any], calls: ModelCalls, catalog: ModelCatalog,
                 settings: Settings, *, stream_allowed: bool = True) -> Response[Any] | Stream:
    """One invocation body answered by the route it belongs to."""
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object", param="body")
    kind = _kind(body)
    body = _with_model(body, catalog, kind)
    if not stream_allowed and body.get("stream"):
        raise InvalidRequest("streaming is not available here", param="stream")
    try:
        if kind == "chat":
            return await chat_answer(msgspec.convert(body, ChatCompletionRequest), request, calls, settings,
                                     route="invocations")
        if kind == "completion":
            return await completion_answer(msgspec.convert(body, CompletionRequest), request, calls, settings,
                                           route="invocations")
        return await embedding_answer(msgspec.convert(body, EmbeddingRequest), request, calls, route="invocations")
    except msgspec.ValidationError as exc:
        raise InvalidRequest(str(exc), param="body") from None


@get("/ping", tags=["platforms"], opt={"public": True},
     summary="SageMaker's health check: 200 once the warm set is loaded, else 503")
async def ping(warmup: WarmUpDep, lifecycle: LifecycleDep) -> Response[dict[str, str]]:
    state = readiness(warmup, lifecycle)
    return Response({"status": state}, status_code=200 if state == "ready" else 503)


@post("/invocations", tags=["platforms"], status_code=200, responses=ERROR_RESPONSES,
      summary="SageMaker's inference route: an OpenAI chat, completion or embedding body")
async def invocations(data: JSONBody[Any], request: Request[Any, Any, Any], calls: CallsDep, catalog: CatalogDep,
                      settings: SettingsDep) -> Response[Any] | Stream:
    return await invoke(data, request, calls, catalog, settings)


def vertex_routes(settings: Settings) -> list[HTTPRouteHandler]:
    """Vertex AI's health and predict routes, at the paths its environment names."""
    routes: list[HTTPRouteHandler] = []
    if settings.vertex_health_route and settings.vertex_health_route not in ("/health", "/health/ready", "/ready"):
        @get(settings.vertex_health_route, tags=["platforms"], opt={"public": True}, include_in_schema=False)
        async def vertex_health(warmup: WarmUpDep, lifecycle: LifecycleDep) -> Response[dict[str, str]]:
            state = readiness(warmup, lifecycle)
            return Response({"status": state}, status_code=200 if state == "ready" else 503)

        routes.append(vertex_health)
    if settings.vertex_predict_route:
        @post(settings.vertex_predict_route, tags=["platforms"], status_code=200, responses=ERROR_RESPONSES,
              include_in_schema=False)
        async def vertex_predict(data: JSONBody[Any], request: Request[Any, Any, Any], calls: CallsDep,
                                 catalog: CatalogDep, settings: SettingsDep) -> dict[str, Any]:
            return {"predictions": [msgspec.to_builtins(response.content) for response in
                                    [await invoke(instance, request, calls, catalog, settings, stream_allowed=False)
                                     for instance in _instances(data)]]}

        routes.append(vertex_predict)
    return routes


def _instances(data: Any) -> list[Body]:
    if not isinstance(data, dict) or not isinstance(data.get("instances"), list) or not data["instances"]:
        raise InvalidRequest('the body must be {"instances": [...], "parameters": {...}}', param="instances")
    if len(data["instances"]) > MAX_INSTANCES:
        raise InvalidRequest(f"at most {MAX_INSTANCES} instances per request", param="instances")
    parameters = data.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidRequest("parameters must be an object", param="parameters")
    return [{**instance, **parameters} if isinstance(instance, dict) else instance for instance in data["instances"]]
