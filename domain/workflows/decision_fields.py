"""Decision fields: what an approval asks its decider besides approve/reject, and the values given.

An approval step (or a standalone approval) may declare `fields`, each
`{name, type: string|number|boolean|choice, label?, required?, options? (choice), default?, help?}`.

- `DecisionField`: one declared field (label defaults to the name; `options` only for a choice).
- `parse_fields(raw, where="fields", settings=None) -> list[DecisionField]`: a declaration checked whole,
  or `DefinitionInvalid` naming each bad path (`steps[1].fields[0].options`). Bounded by
  DECISION_FIELDS_MAX (how many) and DECISION_FIELD_MAX_LENGTH (a string's length, defaults included).
- `validate_values(fields, values, decision="approve", settings=None) -> dict`: the decision's typed
  values, one per declared field (given, else the default, else None); `FieldValuesInvalid` naming
  `fields.<name>`. Required fields apply to an approval only: a rejection needs none, but what it gives is
  still checked.
- `values_from_form(fields, form, decision="approve", settings=None) -> dict`: the same from an HTML form,
  whose inputs are named `form_name(field)` (`fields.<name>`, as the errors name them): a number parsed,
  an absent checkbox False, an empty input missing.
- `default_values(fields)`: the values a timeout's default decision records (the defaults, else None).
- `declared(approval) -> list[DecisionField]`: what an approval row (`HitlApproval.fields`) declares;
  its decided values are `HitlApproval.field_values` (None until decided or expired).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from domain.core.settings import Settings, get_settings
from domain.workflows.definition_errors import DefinitionInvalid

FieldType = Literal["string", "number", "boolean", "choice"]
FIELD_TYPES: tuple[FieldType, ...] = ("string", "number", "boolean", "choice")
NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
KEYS = frozenset({"name", "type", "label", "required", "options", "default", "help"})
MAX_LABEL, MAX_HELP, MAX_OPTIONS, MAX_OPTION = 200, 2000, 100, 200
FORM_PREFIX = "fields."
INT_MIN, INT_MAX = -(2**63), 2**63 - 1  # the widest integer the stores hold
_REFUSED_TEXT = re.compile("[\x00\ud800-\udfff]")  # neither store can hold a NUL or a lone surrogate
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_TRUE, _FALSE = frozenset({"on", "true", "1", "yes"}), frozenset({"off", "false", "0", "no"})


@dataclass(frozen=True)
class DecisionField:
    name: str
    type: FieldType
    label: str
    required: bool = False
    options: tuple[str, ...] = ()
    default: Any = None
    help: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The declaration as stored and shown: every key, `options` only for a choice."""
        out: dict[str, Any] = {"name": self.name, "type": self.type, "label": self.label, "required": self.required}
        if self.type == "choice":
            out["options"] = list(self.options)
        out["default"] = self.default
        out["help"] = self.help
        return out


class FieldValuesInvalid(ValueError):
    """A decision's values refused; `errors` name each (`{"field": "fields.<name>", "message": ...}`)."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__("invalid field(s): " + ", ".join(e["field"] for e in errors))
        self.errors = errors

    @property
    def field(self) -> str:
        return self.errors[0]["field"]

    @property
    def message(self) -> str:
        return self.errors[0]["message"]


def form_name(field: DecisionField) -> str:
    """The HTML form input's name for a field (and the path its errors name)."""
    return FORM_PREFIX + field.name


# -- declarations ----------------------------------------------------------------------------------------


def _text_problem(value: str, max_length: int) -> str | None:
    if len(value) > max_length:
        return f"at most {max_length} characters"
    found = _REFUSED_TEXT.search(value)
    if found is not None:
        return "must not contain a NUL character" if found[0] == "\x00" else "must not contain a lone surrogate"
    return None


def _optional_text(raw: dict[str, Any], key: str, max_length: int, path: str, errors: list[dict[str, str]]) -> Any:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        errors.append({"field": f"{path}.{key}", "message": "a non-empty string"})
        return None
    problem = _text_problem(value, max_length)
    if problem:
        errors.append({"field": f"{path}.{key}", "message": problem})
        return None
    return value


def _parse_one(raw: Any, path: str, max_length: int, errors: list[dict[str, str]]) -> DecisionField | None:
    if not isinstance(raw, dict):
        errors.append({"field": path, "message": "a field is an object {name, type, ...}"})
        return None
    before = len(errors)
    errors.extend(
        {"field": f"{path}.{key}", "message": "unknown key (name, type, label, required, options, default, help)"}
        for key in sorted(set(raw) - KEYS, key=str)
    )
    name = raw.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        errors.append({"field": f"{path}.name", "message": "a name matching [A-Za-z_][A-Za-z0-9_]{0,63}"})
    type_ = raw.get("type")
    if type_ not in FIELD_TYPES:
        errors.append({"field": f"{path}.type", "message": "one of " + ", ".join(FIELD_TYPES)})
    label = _optional_text(raw, "label", MAX_LABEL, path, errors)
    help_ = _optional_text(raw, "help", MAX_HELP, path, errors)
    required = raw.get("required", False)
    if not isinstance(required, bool):
        errors.append({"field": f"{path}.required", "message": "true or false"})
    options: list[str] = []
    if type_ == "choice":
        options = _parse_options(raw.get("options"), f"{path}.options", errors)
    elif "options" in raw:
        errors.append({"field": f"{path}.options", "message": "only a choice field has options"})
    if len(errors) > before:
        return None
    field = DecisionField(
        name=cast(str, name),
        type=cast(FieldType, type_),
        label=label or cast(str, name),
        required=required,
        options=tuple(options),
        help=help_,
    )
    default = raw.get("default")
    if default is not None:
        problem = _value_problem(field, default, max_length)
        if problem:
            errors.append({"field": f"{path}.default", "message": problem})
            return None
        field = DecisionField(**{**field.__dict__, "default": default})
    return field


def _parse_options(raw: Any, path: str, errors: list[dict[str, str]]) -> list[str]:
    if not isinstance(raw, list) or not raw:
        errors.append({"field": path, "message": "a choice needs a non-empty list of options"})
        return []
    if len(raw) > MAX_OPTIONS:
        errors.append({"field": path, "message": f"at most {MAX_OPTIONS} options"})
        return []
    seen: set[str] = set()
    for i, option in enumerate(raw):
        problem = (
            "a non-empty string"
            if not isinstance(option, str) or not option.strip()
            else _text_problem(option, MAX_OPTION) or (f"duplicate option {option!r}" if option in seen else None)
        )
        if problem:
            errors.append({"field": f"{path}[{i}]", "message": problem})
        else:
            seen.add(option)
    return list(raw)


def parse_fields(raw: Any, where: str = "fields", settings: Settings | None = None) -> list[DecisionField]:
    """The declared fields in `raw` (None: none), or DefinitionInvalid naming every bad path under `where`."""
    if raw is None:
        return []
    settings = settings or get_settings()
    if not isinstance(raw, list):
        raise DefinitionInvalid([{"field": where, "message": "a list of fields"}])
    if len(raw) > settings.decision_fields_max:
        raise DefinitionInvalid(
            [{"field": where, "message": f"at most {settings.decision_fields_max} fields (DECISION_FIELDS_MAX)"}]
        )
    errors: list[dict[str, str]] = []
    fields: list[DecisionField] = []
    names: set[str] = set()
    for i, item in enumerate(raw):
        field = _parse_one(item, f"{where}[{i}]", settings.decision_field_max_length, errors)
        if field is None:
            continue
        if field.name in names:
            errors.append({"field": f"{where}[{i}].name", "message": f"duplicate field name {field.name!r}"})
        names.add(field.name)
        fields.append(field)
    if errors:
        raise DefinitionInvalid(errors)
    return fields


def from_json(stored: Sequence[Mapping[str, Any]] | None) -> list[DecisionField]:
    """Declarations as stored by `as_json` (checked when they were written)."""
    return [
        DecisionField(
            name=str(item["name"]),
            type=cast(FieldType, item["type"]),
            label=str(item.get("label") or item["name"]),
            required=bool(item.get("required", False)),
            options=tuple(item.get("options") or ()),
            default=item.get("default"),
            help=item.get("help"),
        )
        for item in stored or []
    ]


def declared(approval: Any) -> list[DecisionField]:
    """The fields an approval row declares."""
    return from_json(getattr(approval, "fields", None))


# -- values ----------------------------------------------------------------------------------------------


def _value_problem(field: DecisionField, value: Any, max_length: int) -> str | None:
    """Why `value` is not one of this field's values, or None."""
    if field.type == "string":
        return "a string" if not isinstance(value, str) else _text_problem(value, max_length)
    if field.type == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "a number"
        if isinstance(value, float) and not math.isfinite(value):
            return "a finite number"
        if isinstance(value, int) and not INT_MIN <= value <= INT_MAX:
            return "an integer within 64 bits"
        return None
    if field.type == "boolean":
        return None if isinstance(value, bool) else "true or false"
    if not isinstance(value, str) or value not in field.options:
        return "one of " + ", ".join(repr(o) for o in field.options)
    return None


def _missing(value: Any) -> bool:
    return value is None or value == ""


def validate_values(
    fields: Sequence[DecisionField],
    values: Mapping[str, Any] | None,
    decision: str = "approve",
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Every declared field's value (given, else its default, else None), or FieldValuesInvalid naming
    `fields.<name>`: a value of the wrong type, an undeclared name, a required field missing on approve."""
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise FieldValuesInvalid([{"field": "fields", "message": "an object of field values"}])
    max_length = (settings or get_settings()).decision_field_max_length
    by_name = {f.name: f for f in fields}
    errors = [
        {"field": f"{FORM_PREFIX}{name}", "message": "not a declared field of this approval"}
        for name in values
        if name not in by_name
    ]
    out: dict[str, Any] = {}
    for field in fields:
        value = values.get(field.name)
        if _missing(value):
            value = field.default
        if _missing(value):
            if field.required and decision == "approve":
                errors.append({"field": form_name(field), "message": "required to approve"})
            out[field.name] = None
            continue
        problem = _value_problem(field, value, max_length)
        if problem:
            errors.append({"field": form_name(field), "message": problem})
        out[field.name] = value
    if errors:
        raise FieldValuesInvalid(errors)
    return out


def default_values(fields: Sequence[DecisionField]) -> dict[str, Any]:
    """What a decision nobody made records (a timeout's): each field's default, else None."""
    return {f.name: f.default for f in fields}


def _number(text: str) -> int | float | None:
    text = text.strip()
    if not _NUMBER.fullmatch(text):
        return None
    if re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    number = float(text)
    return number if math.isfinite(number) else None


def values_from_form(
    fields: Sequence[DecisionField],
    form: Mapping[str, str],
    decision: str = "approve",
    settings: Settings | None = None,
) -> dict[str, Any]:
    """The values of an HTML form's `fields.<name>` inputs, typed, then checked as validate_values does:
    an empty input is missing; a number is parsed (`3`, `-2.5`, `1e3`); a checkbox is True when sent as
    `on`/`true`/`1`/`yes`, False when absent or `off`/`false`/`0`/`no`."""
    errors: list[dict[str, str]] = []
    values: dict[str, Any] = {}
    by_name = {f.name: f for f in fields}
    for key in form:
        if key.startswith(FORM_PREFIX) and key[len(FORM_PREFIX) :] not in by_name:
            errors.append({"field": key, "message": "not a declared field of this approval"})
    for field in fields:
        raw = form.get(form_name(field))
        if field.type == "boolean":
            flag = (raw or "").strip().lower()
            if flag in _TRUE or flag in _FALSE or not flag:
                values[field.name] = flag in _TRUE
            else:
                errors.append({"field": form_name(field), "message": "a checkbox: on or off"})
            continue
        if raw is None or raw == "":
            continue
        if field.type == "number":
            number = _number(raw)
            if number is None:
                errors.append({"field": form_name(field), "message": "a number"})
            else:
                values[field.name] = number
        else:
            values[field.name] = raw
    try:
        typed = validate_values(fields, values, decision, settings)
    except FieldValuesInvalid as exc:
        errors.extend(e for e in exc.errors if e["field"] not in {x["field"] for x in errors})
    if errors:
        raise FieldValuesInvalid(errors)
    return typed
