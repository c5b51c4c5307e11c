"""Release builds: their rows (release_builds, repo_builds), their state machines, tags and the package
(archive, each repository's artifacts, SHA256SUMS and its OpenPGP signature).

Every status change of a release or a repository build goes through `transition()`, which checks the
move against the tables below and writes the audit row in the caller's transaction. Statuses never move
backwards: `succeeded` is final, and the only way out of `failed`/`skipped` is a new attempt (a
re-dispatch after backoff, or a resume of the same tag).
"""

from __future__ import annotations

import gzip
import hashlib
import re
import shutil
import statistics
import tarfile
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import select
from sqlalchemy.orm import Session

from domain.core import counters
from domain.core.models import AuditLog, BuildStatus, ReleaseBuild, RepoBuild

B = BuildStatus

RELEASE_TRANSITIONS: Mapping[BuildStatus, frozenset[BuildStatus]] = {
    B.PENDING: frozenset({B.RUNNING, B.FAILED}),
    B.RUNNING: frozenset({B.SUCCEEDED, B.FAILED}),
    B.FAILED: frozenset({B.RUNNING}),  # a resume of the same tag
    B.SUCCEEDED: frozenset(),
    B.SKIPPED: frozenset(),  # not a release status
}

REPO_BUILD_TRANSITIONS: Mapping[BuildStatus, frozenset[BuildStatus]] = {
    B.PENDING: frozenset({B.RUNNING, B.FAILED, B.SKIPPED}),
    B.RUNNING: frozenset({B.SUCCEEDED, B.FAILED}),
    B.FAILED: frozenset({B.RUNNING}),  # dispatched again after backoff, or on a resume
    B.SKIPPED: frozenset({B.RUNNING, B.FAILED}),  # a resume builds what a failed dependency skipped
    B.SUCCEEDED: frozenset(),  # only with artifacts and checksums recorded (see record_success)
}

ACTOR = "release_build"


class InvalidBuildTransition(Exception):
    code = "invalid_status_transition"

    def __init__(self, entity_type: str, entity_id: str, current: str, requested: str) -> None:
        super().__init__(f"{entity_type} {entity_id}: {current!r} cannot move to {requested!r}")
        self.current, self.requested = current, requested


class InvalidTag(ValueError):
    """A tag git would refuse as a ref name (`git check-ref-format refs/tags/<tag>`)."""


class UnsafePath(ValueError):
    """A file name that would resolve outside RELEASE_DIR."""


class ReleaseAlreadySucceeded(ValueError):
    pass


def allowed(row: ReleaseBuild | RepoBuild, to: BuildStatus) -> bool:
    table = RELEASE_TRANSITIONS if isinstance(row, ReleaseBuild) else REPO_BUILD_TRANSITIONS
    return to in table[BuildStatus(row.status)]


def transition(
    session: Session,
    row: ReleaseBuild | RepoBuild,
    to: BuildStatus,
    *,
    reason: str | None = None,
    action: str = "status_change",
    actor: str = ACTOR,
    **values: Any,
) -> bool:
    """Move `row` to `to` with its audit row; the same status is a no-op (False). Illegal moves raise."""
    previous = str(row.status)
    if previous == to.value:
        for key, value in values.items():
            setattr(row, key, value)
        return False
    if not allowed(row, to):
        raise InvalidBuildTransition(row.__tablename__, row.id, previous, to.value)
    now = datetime.now(UTC)
    row.status = to.value
    for key, value in values.items():
        setattr(row, key, value)
    row.updated_at = now
    session.add(
        AuditLog(
            tenant_id=None,
            entity_type=row.__tablename__,
            entity_id=row.id,
            action=action,
            actor_type="system",
            actor_id=actor,
            previous_status=previous,
            new_status=to.value,
            reason=reason,
            details={"repository": row.repository} if isinstance(row, RepoBuild) else {"tag": row.tag},
            created_at=now,
        )
    )
    if to in (B.SUCCEEDED, B.FAILED):
        outcome = {"outcome": to.value}
        if isinstance(row, RepoBuild):
            counters.count(session, "release_repository_builds", {"repository": row.repository, **outcome})
        else:
            counters.count(session, "releases", outcome)
            started = row.created_at.replace(tzinfo=row.created_at.tzinfo or UTC)
            counters.observe(session, "release_duration_seconds", (now - started).total_seconds())
    return True


# -- tags and file names -----------------------------------------------------------------------------

_REF_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")


def check_ref_format(refname: str) -> str | None:
    """Why git would refuse `refname` (the rules of `git check-ref-format`), or None when it is legal."""
    if refname == "@":  # a whole ref name, never one under refs/tags/
        return "is the single character '@'"
    if refname.startswith("/") or refname.endswith("/"):
        return "begins or ends with '/'"
    if refname.endswith("."):
        return "ends with '.'"
    if ".." in refname:
        return "contains '..'"
    if "@{" in refname:
        return "contains '@{'"
    bad = _REF_FORBIDDEN.search(refname)
    if bad:
        return f"contains the forbidden character {bad.group()!r}"
    for component in refname.split("/"):
        if not component:
            return "contains '//'"
        if component.startswith("."):
            return "has a component beginning with '.'"
        if component.endswith(".lock"):
            return "has a component ending with '.lock'"
    return None


def validate_tag(tag: str) -> str:
    """The tag, when git accepts `refs/tags/<tag>` (and `git tag` accepts it: no leading '-')."""
    if not tag:
        raise InvalidTag("a tag is required")
    if len(tag) > 200:
        raise InvalidTag("a tag is at most 200 characters")
    if tag.startswith("-"):
        raise InvalidTag(f"tag {tag!r} begins with '-'")
    problem = check_ref_format(f"refs/tags/{tag}")
    if problem:
        raise InvalidTag(f"tag {tag!r} is not a valid git ref name: it {problem}")
    return tag


def tag_dir_name(tag: str) -> str:
    """A one-component directory name for the tag, injective (`app/v2` and `app-v2` differ)."""
    return quote(validate_tag(tag), safe="")


def asset_stem(tag: str) -> str:
    """The tag as it appears in asset file names (`release-app-v2.0.0.tar.gz`)."""
    return validate_tag(tag).replace("/", "-")


_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._+-]")


def safe_file_name(name: str) -> str:
    """A file name from outside data (an artifact's name): no separators, no leading dot, never empty."""
    cleaned = _UNSAFE_NAME.sub("_", name).lstrip(".")
    if not cleaned:
        raise UnsafePath(f"{name!r} gives no usable file name")
    return cleaned


def inside(base: Path, path: Path) -> Path:
    """`path`, checked to resolve under `base`."""
    resolved, root = path.resolve(), base.resolve()
    if not resolved.is_relative_to(root) or resolved == root:
        raise UnsafePath(f"{path} is outside {root}")
    return path


def release_dir(base: Path, tag: str) -> Path:
    return inside(base, base / tag_dir_name(tag))


# -- rows ----------------------------------------------------------------------------------------------


def start_release(
    session: Session, tag: str, name: str | None, prerelease: bool, repositories: list[str], run_id: str
) -> str:
    """The release's row (reused when the tag was started before: a resumed release) and one row per
    repository; returns the release id. A succeeded release is not reopened: a run for it only checks
    and repairs what was published."""
    validate_tag(tag)
    release = session.scalars(select(ReleaseBuild).where(ReleaseBuild.tag == tag).with_for_update()).one_or_none()
    if release is None:
        release = ReleaseBuild(
            tag=tag, name=name or tag, prerelease=prerelease, repositories=repositories, status=B.PENDING.value
        )
        session.add(release)
        session.flush()
    existing = set(session.scalars(select(RepoBuild.repository).where(RepoBuild.release_build_id == release.id)))
    if release.status == B.SUCCEEDED.value:
        missing = sorted(set(repositories) - existing)
        if missing:
            raise ReleaseAlreadySucceeded(f"release {tag} already succeeded without {', '.join(missing)}")
        release.dagster_run_id = run_id
        return release.id
    action = "resume" if release.status == B.FAILED.value else "start"
    transition(session, release, B.RUNNING, action=action, dagster_run_id=run_id, error=None)
    release.dagster_run_id = run_id  # a run taking over a running release (the previous one died)
    release.repositories = sorted(set(release.repositories or []) | set(repositories))
    for repository in repositories:
        if repository not in existing:
            session.add(RepoBuild(release_build_id=release.id, repository=repository, status=B.PENDING.value))
    session.flush()
    return release.id


def repo_build(session: Session, release_id: str, repository: str) -> RepoBuild:
    return session.scalars(
        select(RepoBuild)
        .where(RepoBuild.release_build_id == release_id, RepoBuild.repository == repository)
        .with_for_update()
    ).one()


def usual_build_seconds(session: Session, repository: str, recent: int = 5) -> float | None:
    """How long this repository's builds take lately: the median, over its last `recent` builds that
    succeeded at their first attempt, of dispatch -> success recorded. None without such a build."""
    rows = session.execute(
        select(RepoBuild.started_at, RepoBuild.finished_at)
        .where(
            RepoBuild.repository == repository,
            RepoBuild.status == B.SUCCEEDED.value,
            RepoBuild.attempts == 1,
            RepoBuild.started_at.is_not(None),
            RepoBuild.finished_at.is_not(None),
        )
        .order_by(RepoBuild.finished_at.desc())
        .limit(recent)
    ).all()
    durations = [(finished - started).total_seconds() for started, finished in rows]
    return statistics.median(durations) if durations else None


def poll_wait(elapsed_s: float, backoff_s: float, usual_s: float | None, fine_s: float) -> float:
    """The wait before the next look at a running build. The backoff (poll_initial_s growing to
    poll_max_s); but around the time this repository's builds usually end, from 85 % to 150 % of their
    usual duration, every `fine_s`: a build that ends as usual is seen within `fine_s` of its end, not up
    to poll_max_s later, for a few more polls of GitHub."""
    if usual_s is None:
        return backoff_s
    watch_from, watch_to = 0.85 * usual_s, 1.5 * usual_s
    if elapsed_s < watch_from:
        return min(backoff_s, watch_from - elapsed_s)
    if elapsed_s < watch_to:
        return fine_s
    return backoff_s


def is_built(row: RepoBuild) -> bool:
    """Succeeded, with every artifact and its checksum recorded: what a resume may reuse."""
    artifacts = list(row.artifacts or [])
    checksums = dict(row.checksums or {})
    return (
        row.status == B.SUCCEEDED.value and bool(artifacts) and all(Path(str(p)).name in checksums for p in artifacts)
    )


def begin_attempt(
    session: Session, release_id: str, repository: str, *, attempt: int, correlation_id: str, github_run_id: str
) -> None:
    row = repo_build(session, release_id, repository)
    now = datetime.now(UTC)
    values: dict[str, Any] = {
        "attempts": attempt,
        "correlation_id": correlation_id,
        "github_run_id": github_run_id,
        "error": None,
        "conclusion": None,
        "started_at": row.started_at or now,
        "updated_at": now,
    }
    transition(session, row, B.RUNNING, action="dispatch", reason=f"attempt {attempt}", **values)


def note(session: Session, release_id: str, repository: str, action: str, details: dict[str, Any]) -> None:
    """An audit row for a repository build event that is not a status change (a re-dispatch's wait)."""
    row = repo_build(session, release_id, repository)
    session.add(
        AuditLog(
            tenant_id=None,
            entity_type=row.__tablename__,
            entity_id=row.id,
            action=action,
            actor_type="system",
            actor_id=ACTOR,
            details={"repository": repository, **details},
            created_at=datetime.now(UTC),
        )
    )


def record_attempt_failure(
    session: Session, release_id: str, repository: str, *, conclusion: str | None, url: str | None, error: str
) -> None:
    """A run that did not succeed; the row stays as it is until the op dispatches again or gives up."""
    row = repo_build(session, release_id, repository)
    row.conclusion, row.github_run_url, row.error, row.updated_at = conclusion, url, error, datetime.now(UTC)


def record_success(
    session: Session,
    release_id: str,
    repository: str,
    *,
    conclusion: str | None,
    url: str | None,
    artifacts: list[Path],
) -> dict[str, str]:
    """running -> succeeded, only with the artifacts on disk and their checksums recorded."""
    if not artifacts:
        raise ValueError(f"{repository}: a build counts as succeeded only with its artifacts collected")
    checksums = {p.name: sha256_file(p) for p in artifacts}
    row = repo_build(session, release_id, repository)
    now = datetime.now(UTC)
    transition(
        session,
        row,
        B.SUCCEEDED,
        action="collected",
        conclusion=conclusion,
        github_run_url=url,
        artifacts=[str(p) for p in artifacts],
        checksums=checksums,
        error=None,
        finished_at=now,
    )
    return checksums


def fail_repository(session: Session, release_id: str, repository: str, reason: str, dependents: Iterable[str]) -> None:
    """The repository `failed` with the reason, every dependent not built `skipped`, the release `failed`."""
    row = repo_build(session, release_id, repository)
    if row.status != B.SUCCEEDED.value:
        transition(session, row, B.FAILED, reason=reason, error=reason, finished_at=datetime.now(UTC))
    for name in dependents:
        dependent = session.scalars(
            select(RepoBuild).where(RepoBuild.release_build_id == release_id, RepoBuild.repository == name)
        ).one_or_none()
        # A dependent that failed on an earlier attempt keeps its own reason.
        if dependent is not None and dependent.status == B.PENDING.value:
            transition(session, dependent, B.SKIPPED, reason=f"{repository} failed", error=f"{repository} failed")
    fail_release(session, release_id, f"{repository}: {reason}")


def fail_release(session: Session, release_id: str, reason: str) -> None:
    release = session.get(ReleaseBuild, release_id, with_for_update=True)
    assert release is not None
    if release.status in (B.PENDING.value, B.RUNNING.value):
        transition(session, release, B.FAILED, reason=reason, error=reason)


def fail_run(session: Session, dagster_run_id: str, reason: str) -> str | None:
    """A release run that ended without finishing its release (killed, crashed, canceled): the release
    `failed`, its running builds `failed`, its pending ones `skipped`. Returns the release id it ended."""
    release = session.scalars(
        select(ReleaseBuild).where(ReleaseBuild.dagster_run_id == dagster_run_id).with_for_update()
    ).one_or_none()
    if release is None or release.status not in (B.PENDING.value, B.RUNNING.value):
        return None
    rows = session.scalars(select(RepoBuild).where(RepoBuild.release_build_id == release.id).with_for_update())
    for row in rows:
        if row.status == B.RUNNING.value:
            transition(session, row, B.FAILED, action="run_ended", reason=reason, error=reason)
        elif row.status == B.PENDING.value:
            transition(session, row, B.SKIPPED, action="run_ended", reason=reason, error=reason)
    transition(session, release, B.FAILED, action="run_ended", reason=reason, error=reason)
    return release.id


def finish_release(session: Session, release_id: str, **values: Any) -> None:
    release = session.get(ReleaseBuild, release_id, with_for_update=True)
    assert release is not None
    transition(session, release, B.SUCCEEDED, action="published", error=None, **values)


def apply_run_event(
    session: Session,
    *,
    status: str | None,
    conclusion: str | None,
    github_run_id: str | None = None,
    correlation_id: str | None = None,
    url: str | None = None,
) -> str:
    """A `workflow_run` or `repository_dispatch` notice about a repository's run. Returns what it did.

    Success is only noted (the op collects the artifacts, then moves the build to `succeeded`); a failed
    run fails a running build; a late `queued`/`in_progress` never moves a build backwards."""
    query = select(RepoBuild).with_for_update()
    if github_run_id:
        query = query.where(RepoBuild.github_run_id == str(github_run_id))
    elif correlation_id:
        query = query.where(RepoBuild.correlation_id == correlation_id)
    else:
        return "ignored"
    rows = session.scalars(query).all()
    if not rows:
        return "ignored"
    outcome = "recorded"
    for row in rows:
        if row.status in (B.SUCCEEDED.value, B.SKIPPED.value):
            outcome = "stale"
            continue
        if status == "completed":
            row.conclusion = conclusion
            if url:
                row.github_run_url = url
            if conclusion != "success" and row.status == B.RUNNING.value:
                reason = f"run {row.github_run_id} concluded {conclusion!r}"
                transition(session, row, B.FAILED, action="run_event", reason=reason, error=reason)
        elif status in ("queued", "in_progress", "requested", "waiting", "pending"):
            if row.status == B.PENDING.value:
                transition(session, row, B.RUNNING, action="run_event")
            else:
                outcome = "stale"
    return outcome


def release_notes(session: Session, release_id: str) -> str:
    rows = session.scalars(
        select(RepoBuild).where(RepoBuild.release_build_id == release_id).order_by(RepoBuild.repository)
    ).all()
    lines = ["Built repositories:", ""]
    lines += [
        f"- {r.repository}: run {r.github_run_id} {r.github_run_url or ''}".rstrip()
        for r in rows
        if r.status == B.SUCCEEDED.value
    ]
    return "\n".join(lines) + "\n"


# -- the package -----------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def asset_name(repository: str, artifact: Path) -> str:
    """A repository artifact's release asset name: prefixed by the repository unless it already is."""
    name = safe_file_name(artifact.name)
    return name if name.startswith(repository) else f"{repository}-{name}"


def package(workdir: Path, tag: str, artifacts: Mapping[str, list[Path]]) -> dict[str, Path]:
    """One archive of every artifact (organised by repository), each repository's artifacts as assets of
    their own, and SHA256SUMS (`sha256sum -c` format) covering all of them. Refuses an empty release."""
    if not any(artifacts.values()):
        raise ValueError("no artifacts to package: a release is never published empty")
    out = inside(workdir, workdir / "dist")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    archive = out / f"release-{asset_stem(tag)}.tar.gz"
    root = workdir / "artifacts"
    files: dict[str, Path] = {"archive": archive}
    # Reproducible: the same artifacts give the same bytes, so a re-run's publish sees the same checksum.
    with gzip.GzipFile(archive, "wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for path in sorted(p for paths in artifacts.values() for p in paths):
            info = tar.gettarinfo(str(path), arcname=str(inside(root, path).relative_to(root)))
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            with path.open("rb") as handle:
                tar.addfile(info, handle)
    for repository in sorted(artifacts):
        for path in sorted(artifacts[repository]):
            name = asset_name(repository, path)
            if name in {p.name for p in files.values()}:
                raise ValueError(f"two artifacts would be published as {name}")
            files[f"artifact:{name}"] = inside(out, out / name)
            shutil.copyfile(path, files[f"artifact:{name}"])
    sums = out / "SHA256SUMS"
    sums.write_text("".join(f"{sha256_file(p)}  {p.name}\n" for p in sorted(files.values())))
    files["sha256sums"] = sums
    return files


def sign(sums: Path, key_path: Path, passphrase: str | None = None) -> Path:
    """An OpenPGP detached, ASCII-armored signature of SHA256SUMS in SHA256SUMS.asc (what `gpg --verify
    SHA256SUMS.asc SHA256SUMS` checks). The key is an armored or binary OpenPGP secret key."""
    import pysequoia  # only when signing

    key = pysequoia.Tsk.from_bytes(key_path.read_bytes())
    signature = sums.with_name(sums.name + ".asc")
    try:
        signer = key.signer(passphrase) if passphrase else key.signer()
    except Exception as exc:  # Sequoia's error carries a backtrace: keep its first line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = "" if passphrase else " (an encrypted key needs RELEASE_GPG_PASSPHRASE)"
        raise ValueError(f"RELEASE_GPG_KEY cannot sign: {first}{hint}") from None
    signature.write_bytes(pysequoia.sign(signer, sums.read_bytes(), mode=pysequoia.SignatureMode.DETACHED))
    return signature
