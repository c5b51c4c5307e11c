"""The error a refused workflow definition (or approval field declaration) raises, naming each field."""

from __future__ import annotations


class DefinitionInvalid(ValueError):
    """A definition refused; `errors` name each field (`steps[2].depends_on`, ...)."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__("invalid workflow definition: " + ", ".join(e["field"] for e in errors))
        self.errors = errors
