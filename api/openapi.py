"""Endpoints declare their request and response models; the routes table and /openapi.json come from
the same declarations, so the document cannot drift from the code."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.problems import ProblemBody
from api.routing import SegmentRoute

Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    summary: str
    response: type[BaseModel] | None = None
    status: int = 200
    request: type[BaseModel] | None = None
    auth: bool = True  # an ops bearer token is required
    tenant_header: bool = False  # takes X-Tenant-ID
    errors: Sequence[int] = ()
    tags: Sequence[str] = ()
    headers: Sequence[str] = field(default=())
    query: Sequence[str] = field(default=())  # optional query parameters (strings)

    def route(self) -> Route:
        return SegmentRoute(self.path, self.handler, methods=[self.method])


def _schema(model: type[BaseModel], components: dict[str, Any]) -> dict[str, str]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in schema.pop("$defs", {}).items():
        components[name] = definition
    components[model.__name__] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def build_openapi(endpoints: Sequence[Endpoint], title: str, version: str) -> dict[str, Any]:
    components: dict[str, Any] = {}
    problem_ref = _schema(ProblemBody, components)
    paths: dict[str, Any] = {}
    for ep in endpoints:
        operation: dict[str, Any] = {
            "summary": ep.summary,
            "operationId": ep.handler.__name__,
            "tags": list(ep.tags),
            "responses": {},
        }
        params = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _path_params(ep.path)
        ]
        if ep.tenant_header:
            params.append({"name": "X-Tenant-ID", "in": "header", "required": False, "schema": {"type": "string"}})
        for header in ep.headers:
            params.append({"name": header, "in": "header", "required": False, "schema": {"type": "string"}})
        for name in ep.query:
            params.append({"name": name, "in": "query", "required": False, "schema": {"type": "string"}})
        if params:
            operation["parameters"] = params
        if ep.request is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _schema(ep.request, components)}},
            }
        ok: dict[str, Any] = {"description": "Success"}
        if ep.response is not None:
            ok["content"] = {"application/json": {"schema": _schema(ep.response, components)}}
        operation["responses"][str(ep.status)] = ok
        codes = set(ep.errors) | ({401, 403} if ep.auth else set()) | ({413, 422} if ep.request else set())
        for code in sorted(codes):
            operation["responses"][str(code)] = {
                "description": "Problem",
                "content": {"application/problem+json": {"schema": problem_ref}},
            }
        if ep.auth:
            operation["security"] = [{"bearer": []}]
        paths.setdefault(_openapi_path(ep.path), {})[ep.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }


def _path_params(path: str) -> list[str]:
    return [part[1:-1].split(":")[0] for part in path.split("/") if part.startswith("{")]


def _openapi_path(path: str) -> str:
    return "/".join("{" + p[1:-1].split(":")[0] + "}" if p.startswith("{") else p for p in path.split("/"))
