"""Reading requests: JSON bodies (sent as JSON: 415 for another media type) kept to the request rules
(api/request_rules.py) and validated by a pydantic model, errors naming the field."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy import Engine
from starlette.requests import Request

from api.problems import Problem, validation_problem
from api.request_rules import parse_json

M = TypeVar("M", bound=BaseModel)


async def json_value(request: Request) -> Any:
    """The body's JSON value (None when empty), kept to the request rules."""
    raw = await request.body()
    if raw:
        _sent_as_json(request)
    return parse_json(raw, request.app.state.settings.request_json_max_depth)


def _sent_as_json(request: Request) -> None:
    """A body whose Content-Type names another media type than JSON is refused; none named is read as JSON."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media and media != "application/json" and not media.endswith("+json"):
        raise Problem(415, "unsupported_media_type", f"the body must be application/json, not {media}")


async def json_body(request: Request, model: type[M]) -> M:
    data = await json_value(request)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_problem(exc) from exc


def engine(request: Request) -> Engine:
    db: Engine = request.app.state.engine
    return db
