"""`wrk-orch release`: the release graph's plan (local), and releases through the API: start one, follow
its per-repository progress, list them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.text import Text

from cli.http import Api, ApiError, ApiUrl, Json, Tenant, Token, segment
from cli.output import (
    EXIT_FAILED,
    EXIT_NOT_FOUND,
    EXIT_USAGE,
    age,
    fail,
    fields,
    present_page,
    print_json,
    show,
    table,
    when,
)
from cli.watch import Interval, watch
from domain.release.release_graph import InvalidGraph, load_graph

app = typer.Typer(
    help="Release builds: plan, start, follow and list them.",
    epilog="Examples:\n\n  wrk-orch release run v1.4.0 --watch\n\n  wrk-orch release status v1.4.0\n\n"
    "  wrk-orch release list",
    no_args_is_help=True,
)

ENDED = {"succeeded", "failed"}


@app.command(
    epilog="Examples:\n\n  wrk-orch release plan\n\n  wrk-orch release plan --repositories bllvm-node",
)
def plan(
    graph: Annotated[
        Path | None, typer.Option(help="a graph YAML file (default: the shipped orchestration_defs/release_graph.yaml)")
    ] = None,
    repositories: Annotated[
        str | None, typer.Option(help="only these repositories (comma-separated) and their dependencies")
    ] = None,
) -> None:
    """The release graph's build order and parallel groups (JSON; reads no store, calls no API)."""
    try:
        loaded = load_graph(graph)
        if repositories:
            loaded = loaded.subset(repositories.split(","))
    except InvalidGraph as exc:
        raise fail(f"invalid release graph: {exc}", EXIT_USAGE) from None
    print(
        json.dumps(
            {
                "order": loaded.order,
                "groups": [list(group) for group in loaded.groups],
                "repositories": {
                    n: {"owner": r.owner, "workflow": r.workflow, "depends_on": list(r.depends_on)}
                    for n, r in loaded.repositories.items()
                },
            },
            indent=2,
        )
    )


def find(api: Api, tag: str) -> dict[str, Any] | None:
    """The release of `tag` with its repository builds, or None when there is none (yet)."""
    found = api.get("/v1/releases", tag=tag, limit=1)["releases"]
    return api.get(f"/v1/releases/{segment(found[0]['id'])}") if found else None


def built(release: dict[str, Any]) -> str:
    builds = release.get("builds") or []
    done = sum(1 for b in builds if b["status"] == "succeeded")
    return f"{done}/{len(builds) or len(release.get('repositories') or [])}"


def view(release: dict[str, Any]) -> Group:
    head = fields(
        f"Release {release['tag']}",
        [
            ("status", release["status"]),
            ("built", built(release)),
            ("name", release["name"]),
            ("prerelease", release["prerelease"]),
            ("started", when(release["created_at"])),
            ("updated", when(release["updated_at"])),
            ("published", release.get("github_release_url")),
            ("sha256", release.get("archive_sha256")),
            ("error", release.get("error")),
        ],
    )
    builds = table(
        None,
        ["Repository", "Status", "Attempts", "Conclusion", "Run", "Error"],
        [
            (b["repository"], b["status"], b["attempts"], b["conclusion"], b["github_run_url"], b["error"])
            for b in release.get("builds") or []
        ],
    )
    return Group(head, Text(""), builds)


def line(release: dict[str, Any]) -> str:
    repos = ", ".join(f"{b['repository']}={b['status']}" for b in release.get("builds") or [])
    return f"{release['tag']}: {release['status']} ({built(release)} built) {repos}".rstrip()


def follow(api: Api, tag: str, interval: float, trigger_id: int | None = None, quiet: bool = False) -> dict[str, Any]:
    """Watch the release of `tag` until it ends. Until its run creates it, the queued trigger is followed
    instead (a dead trigger ends the watch: the release never started)."""
    pending = {"tag": tag, "status": "queued", "builds": [], "repositories": []}

    def fetch() -> dict[str, Any]:
        release = find(api, tag)
        if release is not None:
            return release
        if trigger_id is None:
            raise ApiError(EXIT_NOT_FOUND, f"release {tag} not found")
        trigger = api.get(f"/v1/queue/{trigger_id}")
        if trigger["state"] == "dead":
            return pending | {"status": "failed", "error": f"its trigger is dead: {trigger['last_error']}"}
        return pending | {"status": f"queued ({trigger['state']})"}

    def render(release: dict[str, Any]) -> Any:
        return view(release) if "id" in release else Text(line(release))

    return watch(fetch, render, line, lambda r: r["status"] in ENDED, interval, quiet)


def _finish(release: dict[str, Any]) -> None:
    if release["status"] == "failed":
        raise fail(f"release {release['tag']} failed: {release.get('error') or 'see its repositories'}", EXIT_FAILED)


@app.command(
    epilog="Examples:\n\n  wrk-orch release run v1.4.0 --watch\n\n"
    "  wrk-orch release run v1.4.0-rc.1 --prerelease --repository bllvm-node --json",
)
def run(
    tag: Annotated[str, typer.Argument(help="the git tag to release")],
    name: Annotated[str | None, typer.Option(help="the release's name (default: the tag)")] = None,
    prerelease: Annotated[bool, typer.Option("--prerelease", help="publish it as a prerelease")] = False,
    repository: Annotated[
        list[str] | None, typer.Option("--repository", help="only this repository and its dependencies (repeatable)")
    ] = None,
    watch_it: Annotated[bool, typer.Option("--watch", help="follow it until it ends (exit 1 when it fails)")] = False,
    interval: Interval = 2.0,
    json_out: Json = False,
    api_url: ApiUrl = None,
    token: Token = None,
    tenant: Tenant = None,
) -> None:
    """Start (or resume) a release build of TAG: queued as a GitHub release webhook queues it."""
    api = Api.of(api_url, token, tenant)
    body: dict[str, Any] = {"tag": tag, "prerelease": prerelease}
    if name:
        body["name"] = name
    if repository:
        body["repositories"] = repository
    queued = api.post("/v1/releases", body)
    if json_out and not watch_it:
        print_json(queued)
        return
    if not json_out:
        trigger = f" (trigger {queued['trigger_id']})" if queued.get("trigger_id") is not None else ""
        show(f"release {tag}: {queued['status'].replace('_', ' ')}{trigger}")
    if watch_it:
        release = follow(api, tag, interval, queued.get("trigger_id"), json_out)
        if json_out:
            print_json(release)
        _finish(release)


@app.command(
    epilog="Examples:\n\n  wrk-orch release status v1.4.0\n\n  wrk-orch release status v1.4.0 --watch --interval 5\n\n"
    "  wrk-orch release status v1.4.0 --json | jq .builds",
)
def status(
    tag: Annotated[str, typer.Argument(help="the release's tag")],
    watch_it: Annotated[
        bool, typer.Option("--watch", help="per-repository progress until the release ends (exit 1 when it fails)")
    ] = False,
    interval: Interval = 2.0,
    json_out: Json = False,
    api_url: ApiUrl = None,
    token: Token = None,
    tenant: Tenant = None,
) -> None:
    """A release and each repository's build. Exit 0 when published or still going, 1 when it failed."""
    api = Api.of(api_url, token, tenant)
    if watch_it:
        release = follow(api, tag, interval, quiet=json_out)
    else:
        found = find(api, tag)
        if found is None:
            raise ApiError(EXIT_NOT_FOUND, f"release {tag} not found")
        release = found
    if json_out:
        print_json(release)
    elif not watch_it:
        show(view(release))
    _finish(release)


@app.command("list", epilog="Examples:\n\n  wrk-orch release list\n\n  wrk-orch release list --limit 5 --json")
def list_releases(
    limit: Annotated[int, typer.Option(min=1, max=200, help="how many, newest first")] = 20,
    json_out: Json = False,
    api_url: ApiUrl = None,
    token: Token = None,
    tenant: Tenant = None,
) -> None:
    """The latest releases, newest first."""
    answer = Api.of(api_url, token, tenant).get("/v1/releases", limit=limit)
    columns = ["Tag", "Status", "Repositories", "Started", "Age", "Published"]
    present_page(answer, columns, _row, json_out, items="releases")


def _row(r: dict[str, Any]) -> tuple[Any, ...]:
    return (
        r["tag"],
        r["status"],
        len(r["repositories"] or []),
        when(r["created_at"]),
        age(r["created_at"]),
        r["github_release_url"],
    )
