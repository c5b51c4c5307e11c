"""Workflow definitions: what a request may say, checked whole before anything is written.

A definition is a list of steps forming a DAG (`depends_on` names earlier or later steps; a cycle or an
unknown name is refused naming it). Step bodies are plain JSON in which `{"$ref": "<JSON pointer>"}`
objects are replaced, at run time, by the value the pointer names in `{"input": ..., "steps": {name:
{"output": ...}}}` (RFC 6901; no code is ever evaluated). A pointer may only name the execution input or
the output of a step the step depends on, directly or not, so the value exists when the step runs.

An approval step may declare decision fields (`fields`, see decision_fields.py); its output then holds
their values under `fields`, so a later step reads one as `/steps/<approval step>/output/fields/<name>`
(a pointer into an approval step's `fields` must name one it declares).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal
from urllib.parse import unquote

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from domain.core.settings import Settings
from domain.workflows import decision_fields
from domain.workflows.definition_errors import DefinitionInvalid as DefinitionInvalid

SERVICES = (
    "integration_manager",
    "risk_analytics",
    "ml_service",
    "forecasting",
    "recommendations",
    "adaptive_learning",
)
EVENT_TYPES = ("shard.updated", "integration.opportunity.updated")
STEP_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
MAX_DECODINGS = 4  # a step path percent-encoded more often than this is refused, not decoded further


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=STEP_NAME_PATTERN)
    depends_on: list[str] = Field(default_factory=list)


class ServiceCallStep(_Step):
    kind: Literal["service_call"]
    service: Literal[
        "integration_manager", "risk_analytics", "ml_service", "forecasting", "recommendations", "adaptive_learning"
    ]
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    path: str = Field(pattern=r"^/[^\s]*$", max_length=1000)
    body: Any = None
    timeout_s: float = Field(default=30.0, gt=0, le=600)

    @field_validator("path")
    @classmethod
    def _under_its_service(cls, path: str) -> str:
        problem = path_problem(path)
        if problem:
            raise ValueError(problem)
        return path


def path_problem(path: str) -> str | None:
    """Why a service_call step's path could leave its service's base URL, or None. The path is appended
    to the base URL; a dot segment (`..`, also percent-encoded, however often), a backslash (read as `/` by
    some servers) or a leading `//` (a scheme-relative URL: another host) could lead elsewhere. Checked
    when a definition is written and again before each call (a definition stored before this rule)."""
    if not path.startswith("/") or path.startswith("//"):
        return "must be a path under the service's URL: starts with one '/', not a URL of its own"
    decoded = path.split("?", 1)[0].split("#", 1)[0]
    for _ in range(MAX_DECODINGS):
        decoded, before = unquote(decoded), decoded
        if "\\" in decoded:
            return "must not contain a backslash, percent-encoded or not"
        if decoded.startswith("//") or any(segment in (".", "..") for segment in decoded.split("/")):
            return "must not contain a dot segment ('.' or '..', percent-encoded or not) or start with '//'"
        if decoded == before:
            return None
    return "percent-encoded too many times"


class ApprovalStep(_Step):
    kind: Literal["approval"]
    assignees: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(min_length=1)
    message: str = Field(min_length=1, max_length=4000)
    timeout: timedelta  # ISO 8601 duration ("PT30M", "P1D")
    on_timeout: Literal["approve", "reject", "fail"] = "reject"
    on_reject: Literal["stop", "continue"] = "stop"
    # Decision fields as declared; checked (and normalised) by decision_fields.parse_fields in parse().
    fields: list[Any] = Field(default_factory=list)

    @field_validator("timeout")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be a positive ISO 8601 duration")
        return value


class PublishStep(_Step):
    kind: Literal["publish"]
    queue: str = Field(min_length=1, max_length=200)
    type: str = Field(default="workflow.step.published", min_length=1, max_length=100)
    body: Any = None


Step = Annotated[ServiceCallStep | ApprovalStep | PublishStep, Field(discriminator="kind")]


class WorkflowSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=4000)
    trigger_on: list[Literal["shard.updated", "integration.opportunity.updated"]] = Field(default_factory=list)
    active: bool = True
    steps: list[Step] = Field(min_length=1, max_length=200)


def _field(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for i, part in enumerate(loc):
        if isinstance(part, int):
            parts[-1:] = [f"{parts[-1]}[{part}]"] if parts else [f"[{part}]"]
        elif (
            i > 0
            and loc[i - 1] is not None
            and isinstance(loc[i - 1], int)
            and part in ("service_call", "approval", "publish")
        ):
            continue  # pydantic's discriminator tag in the location: not a field the client wrote
        else:
            parts.append(str(part))
    return ".".join(parts) or "body"


def parse(body: Any, settings: Settings | None = None) -> WorkflowSpec:
    """The definition in `body`, or DefinitionInvalid naming every bad field."""
    try:
        spec = WorkflowSpec.model_validate(body)
    except ValidationError as exc:
        raise DefinitionInvalid(
            [{"field": _field(tuple(e["loc"])), "message": e["msg"]} for e in exc.errors()]
        ) from None
    errors: list[dict[str, str]] = []
    for i, step in enumerate(spec.steps):
        if isinstance(step, ApprovalStep):
            try:
                declared = decision_fields.parse_fields(step.fields, f"steps[{i}].fields", settings)
            except DefinitionInvalid as exc:
                errors.extend(exc.errors)
            else:
                step.fields = [f.as_json() for f in declared]
    if errors:
        raise DefinitionInvalid(errors)
    errors = check_graph(spec)
    if errors:
        raise DefinitionInvalid(errors)
    return spec


def check_graph(spec: WorkflowSpec) -> list[dict[str, str]]:
    errors: list[dict[str, str]] = []
    index: dict[str, int] = {}
    for i, step in enumerate(spec.steps):
        if step.name in index:
            errors.append({"field": f"steps[{i}].name", "message": f"duplicate step name {step.name!r}"})
        else:
            index[step.name] = i
    for i, step in enumerate(spec.steps):
        for dep in step.depends_on:
            if dep not in index:
                errors.append({"field": f"steps[{i}].depends_on", "message": f"unknown step {dep!r}"})
            elif dep == step.name:
                errors.append({"field": f"steps[{i}].depends_on", "message": f"step {dep!r} depends on itself"})
    if errors:
        return errors
    cycle = find_cycle({s.name: list(s.depends_on) for s in spec.steps})
    if cycle:
        first = index[cycle[0]]
        return [{"field": f"steps[{first}].depends_on", "message": "cycle: " + " -> ".join(cycle)}]
    graph = {s.name: list(s.depends_on) for s in spec.steps}
    fields_of = {s.name: {str(f["name"]) for f in s.fields} for s in spec.steps if isinstance(s, ApprovalStep)}
    for i, step in enumerate(spec.steps):
        if isinstance(step, (ServiceCallStep, PublishStep)):
            upstream = ancestors(graph, step.name)
            for where, pointer in refs(step.body, "body"):
                problem = check_ref(pointer, upstream, fields_of)
                if problem:
                    errors.append({"field": f"steps[{i}].{where}", "message": problem})
    return errors


def find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """A cycle as a path (`a -> b -> a`), or None: depth-first search with colours."""
    colour: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = 1
        stack.append(node)
        for dep in graph.get(node, []):
            if colour.get(dep) == 1:
                return [*stack[stack.index(dep) :], dep]
            if dep not in colour:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        colour[node] = 2
        return None

    for node in graph:
        if node not in colour:
            found = visit(node)
            if found:
                return found
    return None


def ancestors(graph: dict[str, list[str]], name: str) -> set[str]:
    seen: set[str] = set()
    todo = list(graph.get(name, []))
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(graph.get(node, []))
    return seen


def refs(value: Any, where: str) -> list[tuple[str, Any]]:
    """Every `{"$ref": ...}` in a body, with where it is."""
    found: list[tuple[str, Any]] = []
    if isinstance(value, dict):
        if "$ref" in value:
            found.append((where, value["$ref"]))
        else:
            for key, item in value.items():
                found.extend(refs(item, f"{where}.{key}"))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found.extend(refs(item, f"{where}[{i}]"))
    return found


def pointer_tokens(pointer: str) -> list[str]:
    """RFC 6901 reference tokens; ValueError for a malformed pointer."""
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise ValueError("a JSON pointer starts with '/'")
    tokens = pointer[1:].split("/")
    for token in tokens:
        rest = token.replace("~0", "").replace("~1", "")
        if "~" in rest:
            raise ValueError("'~' must be followed by 0 or 1")
    return [t.replace("~1", "/").replace("~0", "~") for t in tokens]


def check_ref(pointer: Any, upstream: set[str], fields_of: dict[str, set[str]] | None = None) -> str | None:
    """Why a `$ref` cannot name a value when its step runs, or None. `fields_of`: each approval step's
    declared field names (a pointer into its output's `fields` must name one)."""
    if not isinstance(pointer, str):
        return "$ref must be a JSON pointer string"
    try:
        tokens = pointer_tokens(pointer)
    except ValueError as exc:
        return f"bad JSON pointer {pointer!r}: {exc}"
    if not tokens or tokens[0] not in ("input", "steps"):
        return f"bad JSON pointer {pointer!r}: must start with /input or /steps/<step>/output"
    if tokens[0] == "steps":
        if len(tokens) < 3 or tokens[2] != "output":
            return f"bad JSON pointer {pointer!r}: a step is referred to as /steps/<step>/output"
        if tokens[1] not in upstream:
            return f"bad JSON pointer {pointer!r}: step {tokens[1]!r} is not one this step depends on"
        declared = (fields_of or {}).get(tokens[1])
        if declared is not None and len(tokens) > 4 and tokens[3] == "fields" and tokens[4] not in declared:
            names = ", ".join(sorted(declared)) or "none"
            return (
                f"bad JSON pointer {pointer!r}: approval step {tokens[1]!r} declares no field {tokens[4]!r} "
                f"(it declares: {names})"
            )
    return None


class Unresolved(LookupError):
    pass


def resolve_pointer(document: Any, pointer: str) -> Any:
    value = document
    for token in pointer_tokens(pointer):
        if isinstance(value, dict) and token in value:
            value = value[token]
        elif isinstance(value, list) and token.isdigit() and int(token) < len(value):
            value = value[int(token)]
        else:
            raise Unresolved(f"{pointer} names nothing")
    return value


def render(template: Any, document: Any) -> Any:
    """A body with each `{"$ref": pointer}` replaced by the value the pointer names in `document`."""
    if isinstance(template, dict):
        if "$ref" in template:
            return resolve_pointer(document, str(template["$ref"]))
        return {key: render(item, document) for key, item in template.items()}
    if isinstance(template, list):
        return [render(item, document) for item in template]
    return template


def step_config(step: ServiceCallStep | ApprovalStep | PublishStep) -> dict[str, Any]:
    """The kind's fields as stored (JSON: the timeout as seconds and its ISO text)."""
    data = step.model_dump(mode="json", exclude={"name", "kind", "depends_on"})
    if isinstance(step, ApprovalStep):
        data["timeout_s"] = step.timeout.total_seconds()
    return data
