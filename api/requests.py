"""Reading requests: JSON bodies validated by a pydantic model, errors naming the field."""

from __future__ import annotations

import json
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy import Engine
from starlette.requests import Request

from api.problems import Problem, validation_problem

M = TypeVar("M", bound=BaseModel)


async def json_body(request: Request, model: type[M]) -> M:
    raw = await request.body()
    try:
        data = json.loads(raw) if raw else None
    except ValueError as exc:
        raise Problem(
            422,
            "validation_error",
            f"body is not valid JSON: {exc}",
            errors=[{"field": "body", "message": "invalid JSON"}],
        ) from exc
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_problem(exc) from exc


def engine(request: Request) -> Engine:
    db: Engine = request.app.state.engine
    return db
