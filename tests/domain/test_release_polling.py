"""How closely a running build is watched: the backoff, and closer looks around the time the
repository's recent builds took (domain/release/release.py usual_build_seconds, poll_wait). poll_wait is pure
arithmetic on the seconds it is given: these tests read no clock and time nothing."""

from datetime import timedelta

from sqlalchemy import update

from domain.core.models import RepoBuild
from domain.core.store import transaction
from domain.release import release as rel


def _built(engine, tmp_path, tag: str, repository: str, seconds: float, attempt: int = 1) -> None:
    """A release of one repository whose build succeeded after `seconds` (dispatch -> recorded)."""
    artifact = tmp_path / f"{tag}-{repository}.zip"
    artifact.write_bytes(b"zip")
    with transaction(engine) as session:
        release_id = rel.start_release(session, tag, None, False, [repository], "run-1")
        rel.begin_attempt(session, release_id, repository, attempt=attempt, correlation_id="c", github_run_id="1")
        rel.record_success(session, release_id, repository, conclusion="success", url=None, artifacts=[artifact])
        row = rel.repo_build(session, release_id, repository)
        started_at = row.finished_at - timedelta(seconds=seconds)
        session.execute(update(RepoBuild).where(RepoBuild.id == row.id).values(started_at=started_at))


def test_the_usual_duration_is_the_median_of_the_recent_first_attempt_successes(engine, tmp_path):
    with transaction(engine) as session:
        assert rel.usual_build_seconds(session, "api") is None  # a first build: no history
    for n, seconds in enumerate([300.0, 200.0, 400.0]):
        _built(engine, tmp_path, f"v1.0.{n}", "api", seconds)
    _built(engine, tmp_path, "v1.0.9", "api", 5000.0, attempt=2)  # a retried build says nothing of the usual
    _built(engine, tmp_path, "v1.1.0", "web", 10.0)  # another repository
    with transaction(engine) as session:
        assert rel.usual_build_seconds(session, "api") == 300.0
        assert rel.usual_build_seconds(session, "web") == 10.0


def test_polls_back_off_and_look_closely_around_the_usual_end():
    # No history: the backoff as it is.
    assert rel.poll_wait(elapsed_s=50, backoff_s=15, usual_s=None, fine_s=1) == 15
    # Before 85 % of the usual 100 s: the backoff, but no wait runs past the 85 % mark.
    assert rel.poll_wait(elapsed_s=10, backoff_s=15, usual_s=100, fine_s=1) == 15
    assert rel.poll_wait(elapsed_s=80, backoff_s=15, usual_s=100, fine_s=1) == 5
    # From 85 % to 150 %: every fine_s, so an on-time end is seen within fine_s.
    assert rel.poll_wait(elapsed_s=85, backoff_s=15, usual_s=100, fine_s=1) == 1
    assert rel.poll_wait(elapsed_s=149, backoff_s=15, usual_s=100, fine_s=1) == 1
    # A build far past its usual time: the backoff again.
    assert rel.poll_wait(elapsed_s=150, backoff_s=15, usual_s=100, fine_s=1) == 15
