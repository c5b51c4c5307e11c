"""The release and repository-build state machines, git ref-name tags, and safe file names."""

import shutil
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import select

from domain.core.models import AuditLog, BuildStatus, ReleaseBuild, RepoBuild
from domain.core.store import transaction
from domain.release import release as rel

B = BuildStatus


def _start(engine, tag="v1.0.0", repositories=("a", "b")) -> str:
    with transaction(engine) as session:
        return rel.start_release(session, tag, None, False, list(repositories), "run-1")


def _row(engine, release_id, repository) -> RepoBuild:
    with transaction(engine) as session:
        row = rel.repo_build(session, release_id, repository)
        session.expunge(row)
        return row


def test_every_status_is_in_both_tables_and_succeeded_is_final():
    for table in (rel.RELEASE_TRANSITIONS, rel.REPO_BUILD_TRANSITIONS):
        assert set(table) == set(BuildStatus)
        assert table[B.SUCCEEDED] == frozenset()
        assert B.PENDING not in {to for moves in table.values() for to in moves}  # never back to pending


def test_moves_are_audited_and_illegal_ones_refused(engine):
    release_id = _start(engine)
    with transaction(engine) as session:
        rel.begin_attempt(session, release_id, "a", attempt=1, correlation_id="c", github_run_id="11")
    with transaction(engine) as session:
        row = rel.repo_build(session, release_id, "a")
        with pytest.raises(rel.InvalidBuildTransition):
            rel.transition(session, row, B.PENDING)
        with pytest.raises(rel.InvalidBuildTransition):
            rel.transition(session, rel.repo_build(session, release_id, "b"), B.SUCCEEDED)
    with transaction(engine) as session:
        moves = session.execute(
            select(AuditLog.entity_type, AuditLog.previous_status, AuditLog.new_status).order_by(AuditLog.id)
        ).all()
    assert [tuple(m) for m in moves] == [
        ("release_builds", "pending", "running"),
        ("repo_builds", "pending", "running"),
    ]


def test_success_needs_artifacts_and_checksums(engine, tmp_path):
    release_id = _start(engine)
    with transaction(engine) as session:
        rel.begin_attempt(session, release_id, "a", attempt=1, correlation_id="c", github_run_id="11")
    with pytest.raises(ValueError, match="only with its artifacts"), transaction(engine) as session:
        rel.record_success(session, release_id, "a", conclusion="success", url=None, artifacts=[])
    assert _row(engine, release_id, "a").status == "running"
    artifact = tmp_path / "a-build.zip"
    artifact.write_bytes(b"zip")
    with transaction(engine) as session:
        rel.record_success(session, release_id, "a", conclusion="success", url=None, artifacts=[artifact])
    row = _row(engine, release_id, "a")
    assert rel.is_built(row) and row.checksums == {"a-build.zip": rel.sha256_file(artifact)}


def test_a_success_notice_does_not_mark_a_build_succeeded_and_late_notices_never_move_it_back(engine, tmp_path):
    release_id = _start(engine)
    with transaction(engine) as session:
        rel.begin_attempt(session, release_id, "a", attempt=1, correlation_id="corr-a", github_run_id="11")
    with transaction(engine) as session:
        outcome = rel.apply_run_event(session, github_run_id="11", status="completed", conclusion="success")
    row = _row(engine, release_id, "a")
    # Noted, but not succeeded: the artifacts are not collected yet, so a resume must not reuse it.
    assert outcome == "recorded" and row.status == "running" and row.conclusion == "success"
    assert not rel.is_built(row)
    artifact = tmp_path / "a.zip"
    artifact.write_bytes(b"zip")
    with transaction(engine) as session:
        rel.record_success(session, release_id, "a", conclusion="success", url=None, artifacts=[artifact])
    for status, conclusion in [("in_progress", None), ("queued", None), ("completed", "failure")]:
        with transaction(engine) as session:
            assert (
                rel.apply_run_event(session, correlation_id="corr-a", status=status, conclusion=conclusion) == "stale"
            )
        assert _row(engine, release_id, "a").status == "succeeded"


def test_a_failure_notice_fails_a_running_build_and_an_unknown_run_is_ignored(engine):
    release_id = _start(engine)
    with transaction(engine) as session:
        rel.begin_attempt(session, release_id, "a", attempt=1, correlation_id="corr-a", github_run_id="11")
    with transaction(engine) as session:
        assert (
            rel.apply_run_event(session, github_run_id="11", status="completed", conclusion="cancelled") == "recorded"
        )
        assert rel.apply_run_event(session, github_run_id="999", status="completed", conclusion="failure") == "ignored"
    row = _row(engine, release_id, "a")
    assert (row.status, row.conclusion) == ("failed", "cancelled")


def test_fail_repository_skips_dependents_and_fails_the_release(engine):
    release_id = _start(engine, repositories=("a", "b", "c"))
    with transaction(engine) as session:
        rel.begin_attempt(session, release_id, "a", attempt=1, correlation_id="c", github_run_id="11")
        rel.fail_repository(session, release_id, "a", "run 11 concluded 'failure'", ["b"])
    with transaction(engine) as session:
        states = {r.repository: r.status for r in session.scalars(select(RepoBuild))}
        release = session.get(ReleaseBuild, release_id)
        assert release is not None
        assert (release.status, release.error) == ("failed", "a: run 11 concluded 'failure'")
    assert states == {"a": "failed", "b": "skipped", "c": "pending"}
    # A resume reopens the release; skipped and failed builds may run again.
    _start(engine, repositories=("a", "b", "c"))
    with transaction(engine) as session:
        rel.begin_attempt(session, release_id, "b", attempt=1, correlation_id="d", github_run_id="12")
        assert session.get(ReleaseBuild, release_id).status == "running"  # type: ignore[union-attr]


def test_a_succeeded_release_is_not_reopened(engine, tmp_path):
    release_id = _start(engine, repositories=("a",))
    artifact = tmp_path / "a.zip"
    artifact.write_bytes(b"zip")
    with transaction(engine) as session:
        rel.begin_attempt(session, release_id, "a", attempt=1, correlation_id="c", github_run_id="11")
        rel.record_success(session, release_id, "a", conclusion="success", url=None, artifacts=[artifact])
        rel.finish_release(session, release_id)
    assert _start(engine, repositories=("a",)) == release_id
    with transaction(engine) as session:
        assert session.get(ReleaseBuild, release_id).status == "succeeded"  # type: ignore[union-attr]
    with pytest.raises(rel.ReleaseAlreadySucceeded):
        _start(engine, repositories=("a", "b"))


def test_an_empty_release_is_never_packaged(tmp_path):
    with pytest.raises(ValueError, match="never published empty"):
        rel.package(tmp_path, "v1.0.0", {"a": []})


LEGAL = ["v1.0.0", "app/v2.0.0", "release-2024.01", "v1.0.0-rc.1+build.5", "feature/x/y", "@v1", "a@b", "@"]
ILLEGAL = [
    "../../etc",
    "v1..0",
    "/v1",
    "v1/",
    "a//b",
    "v1.",
    ".v1",
    "app/.hidden",
    "v1.lock",
    "app/v1.lock/x",
    "a b",
    "a~1",
    "a^1",
    "a:b",
    "a?b",
    "a*b",
    "a[b",
    "a\\b",
    "a@{1}",
    "-rf",  # check-ref-format accepts it, `git tag` does not
    "tab\there",
    "del\x7f",
    "",
]


@pytest.mark.parametrize("tag", LEGAL)
def test_git_accepts_these_tags(tag):
    assert rel.validate_tag(tag) == tag


@pytest.mark.parametrize("tag", ILLEGAL)
def test_git_refuses_these_tags(tag):
    with pytest.raises(rel.InvalidTag):
        rel.validate_tag(tag)


@pytest.mark.skipif(shutil.which("git") is None, reason="compares with git itself")
@pytest.mark.parametrize("tag", [t for t in LEGAL + ILLEGAL if t and not t.startswith("-")])
def test_the_rules_agree_with_git_check_ref_format(tag):
    git = subprocess.run(["git", "check-ref-format", f"refs/tags/{tag}"], capture_output=True)
    assert (git.returncode == 0) == (rel.check_ref_format(f"refs/tags/{tag}") is None)


def test_file_names_stay_under_the_release_dir(tmp_path):
    assert rel.release_dir(tmp_path, "app/v2.0.0") == tmp_path / "app%2Fv2.0.0"
    assert rel.asset_stem("app/v2.0.0") == "app-v2.0.0"
    assert rel.safe_file_name("../../x y") == "_.._x_y"
    with pytest.raises(rel.InvalidTag):
        rel.release_dir(tmp_path, "../../etc")
    with pytest.raises(rel.UnsafePath):
        rel.inside(tmp_path, tmp_path / ".." / "etc")
    (tmp_path / "link").symlink_to(Path("/etc"))
    with pytest.raises(rel.UnsafePath):
        rel.inside(tmp_path, tmp_path / "link" / "passwd")
