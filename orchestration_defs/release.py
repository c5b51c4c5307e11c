"""Release builds as a Dagster job generated from the release graph: one op per repository wired in
dependency order (independent branches run at the same time), then package and publish.

Each repository op dispatches the repository's build workflow, finds its run, polls it with backoff
until it completes, dispatches again on failure (after the one retry policy's backoff) up to a limit,
and downloads the run's artifacts (streamed to disk). A repository whose build already succeeded for
this release, with its artifacts and checksums recorded (a re-execution from failure, or a release
re-run for the same tag), is not dispatched again. A repository not selected in the run config is
skipped. Every failure (a run that keeps failing, a poll timeout, a GitHub error, package, publish)
ends the release `failed` with the reason; a failed repository's dependents end `skipped`.
"""

import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import field_validator

from domain.core.errors import NotFound, ValidationRejected
from domain.core.models import BuildStatus
from domain.core.settings import get_settings
from domain.core.store import transaction
from domain.release import release as rel
from domain.release.release_graph import ReleaseGraph, Repository, load_graph
from orchestration_defs.executors import executor_for
from resources.dagster_resources import DatabaseResource, GitHubResource
from resources.github import GitHubClient

SUCCESS = "success"
# What the release job's step fork server imports once: the code location (and Dagster with it).
STEP_PRELOAD = ["orchestration_defs.definitions"]


class ReleaseConfig(dg.Config):
    tag: str
    name: str | None = None
    prerelease: bool = False
    repositories: list[str] | None = None  # None: all of the graph
    max_build_attempts: int = 2  # dispatches per repository before the release fails
    build_timeout_s: float = 3600.0
    poll_initial_s: float = 1.0
    poll_max_s: float = 15.0

    @field_validator("tag")
    @classmethod
    def _git_ref_name(cls, tag: str) -> str:
        return rel.validate_tag(tag)


def _op_name(repository: str) -> str:
    return "build_" + repository.replace("-", "_").replace(".", "_")


def _release_dir(tag: str) -> Path:
    return rel.release_dir(Path(get_settings().release_dir), tag)


def _find_run(gh: GitHubClient, repo: Repository, correlation_id: str, deadline: float) -> dict[str, Any]:
    """The run whose name carries our correlation id (servers without return_run_details)."""
    event = "repository_dispatch" if repo.dispatch == "repository_dispatch" else "workflow_dispatch"
    while time.monotonic() < deadline:
        for run in gh.list_workflow_runs(repo.owner, repo.name, event=event, per_page=30):
            if correlation_id in (run.get("display_title") or "") or correlation_id in (run.get("name") or ""):
                return run
        time.sleep(1.0)
    raise dg.Failure(f"{repo.name}: no run found for correlation id {correlation_id}")


def _dispatch(gh: GitHubClient, repo: Repository, config: ReleaseConfig, correlation_id: str) -> int:
    deadline = time.monotonic() + 120
    inputs = {"correlation_id": correlation_id, "release_tag": config.tag}
    if repo.dispatch == "repository_dispatch":
        gh.repository_dispatch(repo.owner, repo.name, "release-build", inputs)
        return int(_find_run(gh, repo, correlation_id, deadline)["id"])
    try:
        details = gh.dispatch_workflow(repo.owner, repo.name, repo.workflow, repo.ref, inputs)
        if details and details.get("workflow_run_id"):
            return int(details["workflow_run_id"])
    except ValidationRejected:
        # An older server refuses return_run_details: dispatch plainly and find the run by its name.
        gh.dispatch_workflow(repo.owner, repo.name, repo.workflow, repo.ref, inputs, return_run_details=False)
    return int(_find_run(gh, repo, correlation_id, deadline)["id"])


def _poll(
    gh: GitHubClient, repo: Repository, run_id: int, config: ReleaseConfig, usual_s: float | None
) -> dict[str, Any]:
    """Until the run completes: backoff, and closer looks around the time the repository's builds usually
    end (rel.poll_wait; `usual_s` from its recent builds, None for a first build)."""
    started = time.monotonic()
    deadline = started + config.build_timeout_s
    # Around the usual end: every poll_initial_s, or a hundredth of the usual duration for long builds.
    fine = max(config.poll_initial_s, (usual_s or 0.0) / 100)
    backoff = config.poll_initial_s
    while True:
        run = gh.get_workflow_run(repo.owner, repo.name, run_id)
        if run.get("status") == "completed":
            return run
        wait = rel.poll_wait(time.monotonic() - started, backoff, usual_s, fine)
        if time.monotonic() + wait > deadline:
            raise dg.Failure(f"{repo.name}: run {run_id} did not complete within {config.build_timeout_s:.0f} s")
        time.sleep(wait)
        backoff = min(config.poll_max_s, backoff * 1.5)


def _reuse(gh: GitHubClient, repo: Repository, tag: str, row: Any) -> list[Path]:
    """A succeeded build's artifacts: on disk with their recorded checksums, downloaded again from the
    recorded run when the working folder was pruned. Never rebuilt: `succeeded` is final."""
    paths = [Path(str(p)) for p in row.artifacts or []]
    if not (paths and all(p.exists() for p in paths)) and row.github_run_id:
        paths = _download(gh, repo, int(row.github_run_id), tag)
    checksums = dict(row.checksums or {})
    if not paths or any(checksums.get(p.name) != rel.sha256_file(p) for p in paths):
        raise dg.Failure(f"{repo.name}: succeeded, but its artifacts do not match the recorded checksums")
    return paths


def repository_op(repo: Repository, graph: ReleaseGraph) -> dg.OpDefinition:
    @dg.op(
        name=_op_name(repo.name),
        ins={"plan": dg.In(dict), "after": dg.In(dg.Nothing)},
        description=f"Build {repo.owner}/{repo.name} ({repo.workflow}) and collect its artifacts.",
    )
    def build_repository(
        context: dg.OpExecutionContext, plan: dict[str, Any], database: DatabaseResource, github: GitHubResource
    ) -> dict[str, Any]:
        config = ReleaseConfig(**plan["config"])
        release_id = plan["release_id"]
        if repo.name not in plan["repositories"]:
            return {"repository": repo.name, "artifacts": []}
        with transaction(database.engine) as session:
            row = rel.repo_build(session, release_id, repo.name)
            session.expunge(row)
            # How long this repository's builds usually take: only a build to watch needs it.
            usual_s = None if row.status == BuildStatus.SUCCEEDED.value else rel.usual_build_seconds(session, repo.name)
        gh = github.client
        try:
            if row.status == BuildStatus.SUCCEEDED.value:
                paths = _reuse(gh, repo, config.tag, row)
                context.log.info(f"{repo.name} already built for this release (run {row.github_run_id}); skipped")
                return {"repository": repo.name, "artifacts": [str(p) for p in paths]}
            return _build(context, gh, repo, config, database, release_id, usual_s)
        except Exception as exc:
            reason = str(exc) if isinstance(exc, dg.Failure) else f"{type(exc).__name__}: {exc}"
            dependents = [d for d in graph.dependents(repo.name) if d in plan["repositories"]]
            with transaction(database.engine) as session:
                rel.fail_repository(session, release_id, repo.name, reason, dependents)
            raise dg.Failure(f"{repo.name}: {reason}", allow_retries=False) from exc

    return build_repository


def _build(
    context: dg.OpExecutionContext,
    gh: GitHubClient,
    repo: Repository,
    config: ReleaseConfig,
    database: DatabaseResource,
    release_id: str,
    usual_s: float | None,
) -> dict[str, Any]:
    """Dispatch, find, poll, collect; a failed run is dispatched again after the one policy's backoff."""
    last = "no attempt"
    for attempt in range(1, config.max_build_attempts + 1):
        if attempt > 1:
            wait = gh.retry.backoff(attempt - 1)
            context.log.info(f"{repo.name}: dispatching again in {wait:.2f} s (attempt {attempt})")
            with transaction(database.engine) as session:
                rel.note(session, release_id, repo.name, "redispatch_backoff", {"wait_s": wait, "attempt": attempt})
            gh.retry.sleep(wait)
        correlation_id = uuid.uuid4().hex
        run_id = _dispatch(gh, repo, config, correlation_id)
        with transaction(database.engine) as session:
            rel.begin_attempt(
                session,
                release_id,
                repo.name,
                attempt=attempt,
                correlation_id=correlation_id,
                github_run_id=str(run_id),
            )
        run = _poll(gh, repo, run_id, config, usual_s)
        conclusion = run.get("conclusion")
        if conclusion == SUCCESS:
            paths = _download(gh, repo, run_id, config.tag)
            with transaction(database.engine) as session:
                rel.record_success(
                    session, release_id, repo.name, conclusion=conclusion, url=run.get("html_url"), artifacts=paths
                )
            context.add_output_metadata(
                {"run": dg.MetadataValue.url(run.get("html_url") or ""), "attempts": attempt, "artifacts": len(paths)}
            )
            return {"repository": repo.name, "artifacts": [str(p) for p in paths]}
        # failure, cancelled, timed_out, or a conclusion we do not know: all failures
        last = f"run {run_id} concluded {conclusion!r}"
        context.log.warning(f"{repo.name}: {last} (attempt {attempt})")
        with transaction(database.engine) as session:
            rel.record_attempt_failure(
                session, release_id, repo.name, conclusion=conclusion, url=run.get("html_url"), error=last
            )
    raise dg.Failure(f"failed after {config.max_build_attempts} build attempts ({last})")


def _download(gh: GitHubClient, repo: Repository, run_id: int, tag: str) -> list[Path]:
    workdir = _release_dir(tag)
    target = rel.inside(workdir, workdir / "artifacts" / rel.safe_file_name(repo.name))
    shutil.rmtree(target, ignore_errors=True)
    paths = []
    for artifact in gh.list_run_artifacts(repo.owner, repo.name, run_id):
        if repo.artifacts and artifact["name"] not in repo.artifacts:
            continue
        destination = rel.inside(target, target / f"{rel.safe_file_name(artifact['name'])}.zip")
        paths.append(gh.download_artifact(repo.owner, repo.name, artifact["id"], destination))
    return paths


def start_release_op(graph: ReleaseGraph) -> dg.OpDefinition:
    @dg.op(
        name="start_release",
        description="The release's rows: created, or reused when the tag was started before. Its config is "
        "the release's (tag, prerelease, repositories, attempts, time limit); the other steps read it here.",
    )
    def start_release(
        context: dg.OpExecutionContext, config: ReleaseConfig, database: DatabaseResource
    ) -> dict[str, Any]:
        selected = graph.subset(config.repositories).order if config.repositories else graph.order
        try:
            with transaction(database.engine) as session:
                release_id = rel.start_release(
                    session, config.tag, config.name, config.prerelease, selected, context.run_id
                )
        except (rel.ReleaseAlreadySucceeded, rel.InvalidTag) as exc:
            raise dg.Failure(str(exc), allow_retries=False) from exc
        context.instance.add_run_tags(context.run_id, {"wrk/release_tag": config.tag})
        context.add_output_metadata({"tag": config.tag, "repositories": ", ".join(selected)})
        return {
            "release_id": release_id,
            "repositories": selected,
            "config": config.model_dump(),
            "publish_to": graph.publish_to,
        }

    return start_release


@dg.op(
    description="One archive of all artifacts, each repository's artifacts, SHA256SUMS over all of them, "
    "and its OpenPGP signature SHA256SUMS.asc when RELEASE_GPG_KEY is set."
)
def package(
    context: dg.OpExecutionContext, plan: dict[str, Any], artifacts: list[dict[str, Any]], database: DatabaseResource
) -> dict[str, str]:
    config = ReleaseConfig(**plan["config"])
    built = {a["repository"]: [Path(p) for p in a["artifacts"]] for a in artifacts if a["artifacts"]}
    try:
        settings = get_settings()
        files = rel.package(_release_dir(config.tag), config.tag, built)
        if settings.release_gpg_key:
            passphrase = settings.release_gpg_passphrase
            files["signature"] = rel.sign(
                files["sha256sums"],
                Path(settings.release_gpg_key),
                passphrase.get_secret_value() if passphrase else None,
            )
    except Exception as exc:
        with transaction(database.engine) as session:
            rel.fail_release(session, plan["release_id"], f"package: {type(exc).__name__}: {exc}")
        raise dg.Failure(f"package: {exc}", allow_retries=False) from exc
    context.add_output_metadata(
        {"archive_sha256": rel.sha256_file(files["archive"]), "artifacts": sum(len(p) for p in built.values())}
    )
    return {name: str(path) for name, path in files.items()}


@dg.op(description="Create (or reuse) the GitHub release and upload the archive, artifacts, SHA256SUMS, signature.")
def publish(
    context: dg.OpExecutionContext,
    plan: dict[str, Any],
    files: dict[str, str],
    database: DatabaseResource,
    github: GitHubResource,
) -> str:
    config, release_id = ReleaseConfig(**plan["config"]), plan["release_id"]
    try:
        release, uploaded, skipped = _publish(config, release_id, plan["publish_to"], files, database, github)
    except Exception as exc:
        with transaction(database.engine) as session:
            rel.fail_release(session, release_id, f"publish: {type(exc).__name__}: {exc}")
        raise dg.Failure(f"publish: {exc}", allow_retries=False) from exc
    with transaction(database.engine) as session:
        rel.finish_release(
            session,
            release_id,
            github_release_id=str(release["id"]),
            github_release_url=release.get("html_url"),
            archive_sha256=rel.sha256_file(Path(files["archive"])),
        )
    context.add_output_metadata(
        {"release": dg.MetadataValue.url(release.get("html_url") or ""), "uploaded": uploaded, "skipped": skipped}
    )
    return str(release["id"])


def _publish(
    config: ReleaseConfig,
    release_id: str,
    publish_to: str,
    files: dict[str, str],
    database: DatabaseResource,
    github: GitHubResource,
) -> tuple[dict[str, Any], int, int]:
    owner, repo = publish_to.split("/")
    gh = github.client
    try:
        release = gh.get_release_by_tag(owner, repo, config.tag)
    except NotFound:
        with transaction(database.engine) as session:
            notes = rel.release_notes(session, release_id)
        release = gh.create_release(
            owner, repo, tag=config.tag, name=config.name or config.tag, body=notes, prerelease=config.prerelease
        )
    existing = {a["name"]: a for a in gh.list_release_assets(owner, repo, release["id"])}
    uploaded = skipped = 0
    for path in sorted(Path(p) for p in files.values()):
        digest = "sha256:" + rel.sha256_file(path)
        asset = existing.get(path.name)
        if asset is not None and asset.get("digest") == digest and asset.get("state") == "uploaded":
            skipped += 1
            continue
        if asset is not None:  # a broken or different upload: replace it in this same attempt
            gh.delete_release_asset(owner, repo, asset["id"])
        gh.upload_release_asset(release["upload_url"], path)
        uploaded += 1
    return release, uploaded, skipped


def build_release_job(graph: ReleaseGraph, name: str = "release_build") -> dg.JobDefinition:
    ops = {repo_name: repository_op(repo, graph) for repo_name, repo in graph.repositories.items()}
    # Several steps at once, each its own process forked from one fork server per run, which imports
    # the code location once (STEP_PRELOAD), so a step's worker does not import it again
    # (docs/performance.md: forkserver against spawn). Named: a configured forkserver with no
    # preload_modules preloads nothing of ours.
    # EXECUTOR=celery: each step on a Celery worker instead, on the `releases` queue (executors.py).
    executor = executor_for(
        "releases",
        dg.multiprocess_executor.configured(
            {"max_concurrent": 8, "start_method": {"forkserver": {"preload_modules": STEP_PRELOAD}}}
        ),
    )

    start_release = start_release_op(graph)

    @dg.job(
        name=name,
        executor_def=executor,
        tags={"wrk/flow": "release"},
        description="Build the release graph's repositories in dependency order, package, publish.",
    )
    def release_job() -> None:
        plan = start_release()
        outputs: dict[str, Any] = {}
        for repo_name in graph.order:
            deps = [outputs[d] for d in graph.repositories[repo_name].depends_on]
            outputs[repo_name] = ops[repo_name](plan=plan, after=deps) if deps else ops[repo_name](plan=plan)
        files = package(plan, [outputs[n] for n in graph.order])
        publish(plan, files)

    return release_job


release_build = build_release_job(load_graph())
