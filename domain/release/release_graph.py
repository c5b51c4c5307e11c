"""The release graph: repositories, how each is built, and the order they build in.

Loaded from YAML and validated at load: an unknown dependency, a self-dependency or a cycle is refused
with an error that names it (a cycle by its path). The plan is the topological order in parallel
groups: every repository of a group depends only on repositories of earlier groups.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

DEFAULT_GRAPH = Path(__file__).resolve().parents[2] / "orchestration_defs" / "release_graph.yaml"


class InvalidGraph(ValueError):
    pass


class Repository(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    owner: str
    workflow: str
    ref: str = "main"
    dispatch: Literal["workflow_dispatch", "repository_dispatch"] = "workflow_dispatch"
    artifacts: tuple[str, ...] = ()
    depends_on: tuple[str, ...] = Field(default=())


@dataclass(frozen=True)
class ReleaseGraph:
    repositories: Mapping[str, Repository]
    groups: tuple[tuple[str, ...], ...]  # parallel groups, in build order
    publish_to: str = "bllvm/bllvm"  # owner/repo of the GitHub release

    @property
    def order(self) -> list[str]:
        return [name for group in self.groups for name in group]

    def subset(self, names: list[str]) -> ReleaseGraph:
        """The graph restricted to `names` and everything they depend on."""
        wanted: set[str] = set()
        stack = list(names)
        while stack:
            name = stack.pop()
            if name not in self.repositories:
                raise InvalidGraph(f"unknown repository {name!r}")
            if name not in wanted:
                wanted.add(name)
                stack.extend(self.repositories[name].depends_on)
        graph = build_graph({n: r for n, r in self.repositories.items() if n in wanted})
        return ReleaseGraph(graph.repositories, graph.groups, self.publish_to)

    def dependents(self, name: str) -> list[str]:
        """Every repository that depends on `name`, directly or through others, in build order."""
        found: set[str] = set()
        for other in self.order:
            if name in self.repositories[other].depends_on or found & set(self.repositories[other].depends_on):
                found.add(other)
        return [n for n in self.order if n in found]

    def critical_path(self, duration: Mapping[str, float]) -> float:
        finish: dict[str, float] = {}
        for name in self.order:
            deps = self.repositories[name].depends_on
            finish[name] = max((finish[d] for d in deps), default=0.0) + duration[name]
        return max(finish.values(), default=0.0)


def build_graph(repositories: Mapping[str, Repository]) -> ReleaseGraph:
    for repo in repositories.values():
        for dep in repo.depends_on:
            if dep == repo.name:
                raise InvalidGraph(f"{repo.name} depends on itself")
            if dep not in repositories:
                raise InvalidGraph(f"{repo.name} depends on unknown repository {dep!r}")
    cycle = _find_cycle(repositories)
    if cycle:
        raise InvalidGraph("dependency cycle: " + " -> ".join(cycle))
    remaining = {name: set(repo.depends_on) for name, repo in repositories.items()}
    groups: list[tuple[str, ...]] = []
    done: set[str] = set()
    while remaining:
        ready = sorted(name for name, deps in remaining.items() if deps <= done)
        groups.append(tuple(ready))
        done.update(ready)
        for name in ready:
            del remaining[name]
    return ReleaseGraph(dict(repositories), tuple(groups))


def _find_cycle(repositories: Mapping[str, Repository]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        path.append(name)
        for dep in repositories[name].depends_on:
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        path.pop()
        state[name] = 2
        return None

    for name in sorted(repositories):
        if name not in state:
            found = visit(name)
            if found:
                return found
    return None


def parse_graph(document: Any) -> ReleaseGraph:
    if not isinstance(document, dict) or not isinstance(document.get("repositories"), dict):
        raise InvalidGraph("the graph needs a 'repositories' mapping")
    defaults = document.get("defaults") or {}
    repositories: dict[str, Repository] = {}
    for name, spec in document["repositories"].items():
        try:
            repositories[name] = Repository.model_validate({**defaults, **(spec or {}), "name": name})
        except ValidationError as exc:
            fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors())
            raise InvalidGraph(f"repository {name!r}: invalid {fields}") from exc
    graph = build_graph(repositories)
    publish_to = str(document.get("publish_to") or graph.publish_to)
    if publish_to.count("/") != 1:
        raise InvalidGraph(f"publish_to must be 'owner/repo', not {publish_to!r}")
    return ReleaseGraph(graph.repositories, graph.groups, publish_to)


def load_graph(path: Path | None = None) -> ReleaseGraph:
    return parse_graph(yaml.safe_load((path or DEFAULT_GRAPH).read_text()))
