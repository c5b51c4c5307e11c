"""Endpoints declare their parameters, request and response models and the problems they can answer; the
routes table and /openapi.json come from the same declarations, so the document cannot drift from the
code."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.params import Header, Param
from api.problems import MEDIA_TYPE as PROBLEM_MEDIA_TYPE, ProblemBody
from api.request_rules import HEADER_PATTERN, HEADER_PRESENT_PATTERN, STORE_INT_MAX, STORE_INT_MIN, TEXT_PATTERN
from api.routing import SegmentRoute

Handler = Callable[[Request], Awaitable[Response]]

# What any request can be answered, whatever its route (api/request_rules.py): a body past the limit, a
# header or a query parameter the rules refuse.
COMMON_ERRORS: Mapping[int, Sequence[str]] = {413: ["payload_too_large"], 422: ["validation_error"]}
AUTH_ERRORS: Mapping[int, Sequence[str]] = {401: ["unauthorized"], 403: ["forbidden"]}
TENANT_ERRORS: Mapping[int, Sequence[str]] = {400: ["tenant_required"], 403: ["forbidden"]}
BODY_ERRORS: Mapping[int, Sequence[str]] = {415: ["unsupported_media_type"], 422: ["validation_error"]}
STORE_ERRORS: Mapping[int, Sequence[str]] = {503: ["store_unavailable"]}


@dataclass(frozen=True)
class Answer:
    """A documented answer besides an endpoint's main one: another success status, or a body that is not
    problem+json."""

    status: int
    description: str
    model: type[BaseModel] | None = None
    media_type: str = "application/json"


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    summary: str
    response: type[BaseModel] | None = None
    status: int = 200
    # The main answer's media type; a model describes it only when it is JSON.
    media_type: str = "application/json"
    request: type[BaseModel] | None = None
    # The request body's schema when no one model says it (a body that depends on a path parameter).
    request_schema: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    body_required: bool = True  # False: an empty body is the model's defaults
    auth: bool = True  # an ops bearer token is required
    tenant_header: bool = False  # takes X-Tenant-ID
    tenant_required: bool = False  # X-Tenant-ID must be sent (400 tenant_required without it)
    store: bool = True  # reads or writes the store (503 store_unavailable when it cannot be reached)
    # Problems this route answers beyond those of every request, its token, tenant and body.
    errors: Mapping[int, Sequence[str]] = field(default_factory=dict)
    answers: Sequence[Answer] = ()
    tags: Sequence[str] = ()
    headers: Sequence[Header] = ()
    path_params: Sequence[Param] = ()  # typed path parameters; any other is text of at least one character
    query: Sequence[Param] = ()


def routes(endpoints: Sequence[Endpoint]) -> list[Route]:
    """One route per path, holding every method the path takes, so a 405 names them all in `Allow`."""
    by_path: dict[str, dict[str, Handler]] = {}
    for ep in endpoints:
        by_path.setdefault(ep.path, {})[ep.method] = ep.handler
    return [SegmentRoute(path, _dispatch(handlers), methods=list(handlers)) for path, handlers in by_path.items()]


def _dispatch(handlers: dict[str, Handler]) -> Handler:
    if len(handlers) == 1:
        return next(iter(handlers.values()))

    async def by_method(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await handlers[method](request)

    return by_method


def model_schema(model: type[BaseModel], components: dict[str, Any]) -> dict[str, str]:
    """A reference to `model`'s schema, added to the document's components."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in schema.pop("$defs", {}).items():
        components[name] = definition
    components[model.__name__] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def problems(ep: Endpoint) -> dict[int, list[str]]:
    """Each problem status the endpoint can answer, with its codes."""
    found: dict[int, list[str]] = {}
    sources: list[Mapping[int, Sequence[str]]] = [COMMON_ERRORS, ep.errors]
    if ep.auth:
        sources.append(AUTH_ERRORS)
    if ep.tenant_header:
        sources.append(TENANT_ERRORS)
    if ep.request is not None or ep.request_schema is not None:
        sources.append(BODY_ERRORS)
    if ep.store:
        sources.append(STORE_ERRORS)
    for source in sources:
        for status, codes in source.items():
            found.setdefault(status, [])
            found[status] += [code for code in codes if code not in found[status]]
    return found


def _problem(codes: list[str], problem_ref: dict[str, str]) -> dict[str, Any]:
    return {
        "description": "Problem: " + ", ".join(codes),
        "content": {
            PROBLEM_MEDIA_TYPE: {
                "schema": {"allOf": [problem_ref, {"properties": {"code": {"enum": sorted(codes)}}}]},
            }
        },
    }


def _answer(description: str, media_type: str, schema: dict[str, Any] | None) -> dict[str, Any]:
    content: dict[str, Any] = {}
    if schema is not None:
        content["schema"] = schema
    return {"description": description, "content": {media_type: content}}


def _parameters(ep: Endpoint) -> list[dict[str, Any]]:
    typed = {param.name: param for param in ep.path_params}
    params = []
    for name in path_param_names(ep.path):
        param = typed.get(name)
        schema = param.schema() if param else {"type": "string", "minLength": 1, "pattern": TEXT_PATTERN}
        params.append({"name": name, "in": "path", "required": True, "schema": schema})
    if ep.tenant_header:
        tenant_pattern = HEADER_PRESENT_PATTERN if ep.tenant_required else HEADER_PATTERN
        params.append(
            {
                "name": "X-Tenant-ID",
                "in": "header",
                "required": ep.tenant_required,
                "description": "The tenant the request acts in (one of the token's); blank is as if not sent",
                "schema": {"type": "string", "pattern": tenant_pattern},
            }
        )
    for header in ep.headers:
        described = {"name": header.name, "in": "header", "required": header.required, "schema": header.schema()}
        if header.description:
            described["description"] = header.description
        params.append(described)
    for param in ep.query:
        described = {"name": param.name, "in": "query", "required": False, "schema": param.schema()}
        if param.description:
            described["description"] = param.description
        params.append(described)
    return params


def build_openapi(endpoints: Sequence[Endpoint], title: str, version: str) -> dict[str, Any]:
    components: dict[str, Any] = {}
    problem_ref = model_schema(ProblemBody, components)
    paths: dict[str, Any] = {}
    for ep in endpoints:
        operation: dict[str, Any] = {
            "summary": ep.summary,
            "operationId": ep.handler.__name__,
            "tags": list(ep.tags),
            "responses": {},
        }
        params = _parameters(ep)
        if params:
            operation["parameters"] = params
        if ep.request is not None or ep.request_schema is not None:
            body = ep.request_schema(components) if ep.request_schema else model_schema(ep.request, components)  # type: ignore[arg-type]
            operation["requestBody"] = {"required": ep.body_required, "content": {"application/json": {"schema": body}}}
        main = model_schema(ep.response, components) if ep.response is not None else None
        operation["responses"][str(ep.status)] = _answer("Success", ep.media_type, main)
        for answer in ep.answers:
            schema = model_schema(answer.model, components) if answer.model is not None else None
            described = _answer(answer.description, answer.media_type, schema)
            if str(answer.status) in operation["responses"]:  # the same status in another media type
                operation["responses"][str(answer.status)]["content"] |= described["content"]
            else:
                operation["responses"][str(answer.status)] = described
        for status, codes in sorted(problems(ep).items()):
            if str(status) not in operation["responses"]:
                operation["responses"][str(status)] = _problem(codes, problem_ref)
        if ep.auth:
            operation["security"] = [{"bearer": []}]
        paths.setdefault(openapi_path(ep.path), {})[ep.method.lower()] = operation
    components = {name: _kept_to_rules(schema) for name, schema in components.items()}
    components[JSON_VALUE] = _json_value()
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }


JSON_VALUE = "JsonValue"
_JSON_VALUE_REF = {"$ref": f"#/components/schemas/{JSON_VALUE}"}
# Keywords that say what a schema holds; a schema with none of them takes any JSON value.
_SHAPING = {"type", "$ref", "anyOf", "oneOf", "allOf", "enum", "const", "properties", "items", "not"}
_NESTED_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")


def _json_value() -> dict[str, Any]:
    """Any JSON value the store can hold (api/request_rules.py): text without NUL, numbers within 64-bit
    integers' range. One schema of several types (each keyword applies to its own type), not a choice
    among schemas, so a value is never both valid and invalid by different branches."""
    return {
        "description": "Any JSON value the store can hold: text without NUL, numbers within 64-bit integers",
        "type": ["string", "number", "boolean", "null", "array", "object"],
        "pattern": TEXT_PATTERN,
        "minimum": STORE_INT_MIN,
        "maximum": STORE_INT_MAX,
        "items": _JSON_VALUE_REF,
        "additionalProperties": _JSON_VALUE_REF,
        "propertyNames": {"type": "string", "pattern": TEXT_PATTERN},
    }


def _kept_to_rules(schema: Any) -> Any:
    """`schema` narrowed to what the request rules let through, which every body keeps whatever its
    model says: text has no NUL, integers fit 64 bits, a free value is a JsonValue."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if not _SHAPING & out.keys():
        return out | _JSON_VALUE_REF
    kind = out.get("type")
    if kind == "string" and not {"pattern", "format", "enum", "const"} & out.keys():
        out["pattern"] = TEXT_PATTERN
    if kind in ("integer", "number"):
        out["minimum"] = max(out.get("minimum", STORE_INT_MIN), STORE_INT_MIN)
        out["maximum"] = min(out.get("maximum", STORE_INT_MAX), STORE_INT_MAX)
    if "properties" in out:
        out["properties"] = {name: _kept_to_rules(value) for name, value in out["properties"].items()}
    if kind == "object" and out.get("additionalProperties", True) is not False:
        extra = out.get("additionalProperties", True)
        out["additionalProperties"] = _JSON_VALUE_REF if extra is True else _kept_to_rules(extra)
        out["propertyNames"] = {"type": "string", "pattern": TEXT_PATTERN}
    if "items" in out:
        out["items"] = _kept_to_rules(out["items"])
    for key in _NESTED_LISTS:
        if key in out:
            out[key] = [_kept_to_rules(value) for value in out[key]]
    return out


def path_param_names(path: str) -> list[str]:
    return [part[1:-1].split(":")[0] for part in path.split("/") if part.startswith("{")]


def openapi_path(path: str) -> str:
    return "/".join("{" + p[1:-1].split(":")[0] + "}" if p.startswith("{") else p for p in path.split("/"))
