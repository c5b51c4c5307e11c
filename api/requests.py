"""Reading requests: JSON bodies kept to the request rules (api/request_rules.py) and validated by a
pydantic model, errors naming the field."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy import Engine
from starlette.requests import Request

from api.problems import validation_problem
from api.request_rules import parse_json

M = TypeVar("M", bound=BaseModel)


async def json_value(request: Request) -> Any:
    """The body's JSON value (None when empty), kept to the request rules."""
    return parse_json(await request.body(), request.app.state.settings.request_json_max_depth)


async def json_body(request: Request, model: type[M]) -> M:
    data = await json_value(request)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_problem(exc) from exc


def engine(request: Request) -> Engine:
    db: Engine = request.app.state.engine
    return db
