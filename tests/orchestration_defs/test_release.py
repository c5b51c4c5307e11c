"""Release builds over the sandbox's GitHub: order, failures, resume, idempotent publish, checksums."""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pysequoia
import pytest
from sqlalchemy import select

from domain.models import AuditLog, ReleaseBuild, RepoBuild
from domain.release_graph import load_graph
from domain.store import transaction
from orchestration_defs.release import release_build
from resources.dagster_resources import DatabaseResource, GitHubResource

ALL = load_graph().order


def _release(database_url, instance, tag="v1.0.0", **config):
    run_config = {
        "ops": {"start_release": {"config": {"tag": tag, "poll_initial_s": 0.05, "poll_max_s": 0.2, **config}}}
    }
    return release_build.execute_in_process(
        run_config=run_config,
        instance=instance,
        raise_on_error=False,
        resources={"database": DatabaseResource(url=database_url), "github": GitHubResource()},
    )


def _dispatches(sandbox) -> list[str]:
    return [c["path"].split("/")[4] for c in sandbox.calls("POST", r"/github/repos/.*/dispatches")]


def _repo_states(engine, tag) -> dict[str, tuple[str, int]]:
    with transaction(engine) as session:
        release = session.scalars(select(ReleaseBuild).where(ReleaseBuild.tag == tag)).one()
        rows = session.scalars(select(RepoBuild).where(RepoBuild.release_build_id == release.id)).all()
        return {r.repository: (r.status, r.attempts) for r in rows} | {"_release": (release.status, 0)}


def _release_error(engine, tag) -> str:
    with transaction(engine) as session:
        return session.scalars(select(ReleaseBuild.error).where(ReleaseBuild.tag == tag)).one()


def _audit(engine, tag) -> list[tuple[str, str, str]]:
    """(repository or "_release", previous, new) of every audited status move of the release's rows."""
    with transaction(engine) as session:
        release = session.scalars(select(ReleaseBuild).where(ReleaseBuild.tag == tag)).one()
        names = {
            r.id: r.repository
            for r in session.scalars(select(RepoBuild).where(RepoBuild.release_build_id == release.id))
        }
        names[release.id] = "_release"
        rows = session.scalars(
            select(AuditLog)
            .where(AuditLog.entity_id.in_(list(names)), AuditLog.new_status.is_not(None))
            .order_by(AuditLog.id)
        ).all()
        return [(names[r.entity_id], r.previous_status, r.new_status) for r in rows]


def _asset(sandbox, asset) -> bytes:
    return sandbox.http.get(asset["browser_download_url"].replace(sandbox.url, "")).content


def test_full_release_builds_in_order_and_publishes_checksums_that_verify(
    engine, database_url, sandbox, flow_env, instance, tmp_path
):
    sandbox.configure_github(default_duration_s=0.2)
    result = _release(database_url, instance)
    assert result.success
    order = _dispatches(sandbox)
    graph = load_graph()
    for repo in graph.order:
        for dep in graph.repositories[repo].depends_on:
            assert order.index(dep) < order.index(repo)
    states = _repo_states(engine, "v1.0.0")
    assert states.pop("_release") == ("succeeded", 0)
    assert set(states.values()) == {("succeeded", 1)} and set(states) == set(ALL)
    release = sandbox.http.get("/github/repos/bllvm/bllvm/releases/tags/v1.0.0").json()
    # The archive, and next to it each repository's artifacts: all covered by SHA256SUMS.
    assert sorted(a["name"] for a in release["assets"]) == sorted(
        ["SHA256SUMS", "release-v1.0.0.tar.gz", *(f"{repo}-build.zip" for repo in ALL)]
    )
    assert all(f"- {repo}: run" in release["body"] for repo in ALL)
    download = tmp_path / "download"
    download.mkdir()
    for asset in release["assets"]:
        (download / asset["name"]).write_bytes(_asset(sandbox, asset))
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=download, capture_output=True, text=True)
    assert check.returncode == 0 and "release-v1.0.0.tar.gz: OK" in check.stdout
    assert check.stdout.count(": OK") == len(ALL) + 1
    import tarfile

    with tarfile.open(download / "release-v1.0.0.tar.gz") as tar:
        members = sorted(tar.getnames())
    assert members == sorted(f"{repo}/{repo}-build.zip" for repo in ALL)


def test_a_failing_build_is_retried_then_fails_the_release_and_its_dependents_never_start(
    engine, database_url, sandbox, flow_env, instance
):
    sandbox.configure_github(
        default_duration_s=0.1, repos={"bllvm-node": {"conclusions": ["failure", "timed_out", "success"]}}
    )
    result = _release(database_url, instance, tag="v2.0.0")
    assert not result.success
    states = _repo_states(engine, "v2.0.0")
    assert states["bllvm-node"] == ("failed", 2)
    assert states["_release"] == ("failed", 0)
    # Its dependents end skipped (they never started), not pending or running forever.
    assert {name: states[name] for name in ("bllvm-sdk", "bllvm", "governance-app")} == {
        "bllvm-sdk": ("skipped", 0),
        "bllvm": ("skipped", 0),
        "governance-app": ("skipped", 0),
    }
    assert _release_error(engine, "v2.0.0").startswith("bllvm-node: failed after 2 build attempts")
    dispatched = _dispatches(sandbox)
    assert dispatched.count("bllvm-node") == 2
    assert not {"bllvm-sdk", "bllvm", "governance-app"} & set(dispatched)
    assert states["commons"][0] == "succeeded"  # an independent branch still built
    moves = _audit(engine, "v2.0.0")
    assert ("bllvm-node", "running", "failed") in moves and ("bllvm-sdk", "pending", "skipped") in moves

    # Resume: the same tag again builds only what did not succeed; nothing built is dispatched again.
    before = len(dispatched)
    again = _release(database_url, instance, tag="v2.0.0")
    assert again.success
    resumed = _dispatches(sandbox)[before:]
    assert sorted(resumed) == sorted(["bllvm-node", "bllvm-sdk", "bllvm", "governance-app"])


def test_publish_is_idempotent_and_replaces_a_broken_asset(engine, database_url, sandbox, flow_env, instance):
    sandbox.configure_github(default_duration_s=0.05)
    assert _release(database_url, instance, tag="v3.0.0").success
    release = sandbox.http.get("/github/repos/bllvm/bllvm/releases/tags/v3.0.0").json()
    sums = next(a for a in release["assets"] if a["name"] == "SHA256SUMS")
    # Break one asset: replace it by a truncated upload with the same name.
    sandbox.http.delete(f"/github/repos/bllvm/bllvm/releases/assets/{sums['id']}")
    sandbox.http.post(release["upload_url"].split("{")[0], params={"name": "SHA256SUMS"}, content=b"truncat")
    uploads_before = len(sandbox.calls("POST", r"/github/uploads/.*"))
    assert _release(database_url, instance, tag="v3.0.0").success
    calls = sandbox.calls(path=r"/github/(uploads/)?repos/bllvm/bllvm/releases.*")
    assert len([c for c in calls if c["method"] == "POST" and "uploads" in c["path"]]) == uploads_before + 1
    assert len([c for c in calls if c["method"] == "POST" and c["path"].endswith("/releases")]) == 1  # reused
    assets = sandbox.http.get("/github/repos/bllvm/bllvm/releases/tags/v3.0.0").json()["assets"]
    fixed = next(a for a in assets if a["name"] == "SHA256SUMS")
    assert _asset(sandbox, fixed).endswith(b"  release-v3.0.0.tar.gz\n")


def test_dispatch_falls_back_to_the_correlation_id_when_run_details_are_refused(
    engine, database_url, sandbox, flow_env, instance
):
    sandbox.configure_github(default_duration_s=0.05, supports_return_run_details=False)
    assert _release(database_url, instance, tag="v4.0.0", repositories=["commons"]).success
    assert _repo_states(engine, "v4.0.0")["commons"] == ("succeeded", 1)


def _gpg_verify(tmp_path, public_key: bytes, sums: bytes, signature: bytes) -> subprocess.CompletedProcess:
    (tmp_path / "pub.asc").write_bytes(public_key)
    (tmp_path / "SHA256SUMS").write_bytes(sums)
    (tmp_path / "SHA256SUMS.asc").write_bytes(signature)
    # A short GNUPGHOME: gpg's agent sockets live there, and a Unix socket path may not pass 107 bytes
    # (pytest's per-worker tmp paths do).
    with tempfile.TemporaryDirectory(prefix="gpg", dir="/tmp") as home:
        env = {**os.environ, "GNUPGHOME": home}
        imported = subprocess.run(
            ["gpg", "--batch", "--import", str(tmp_path / "pub.asc")], env=env, capture_output=True, text=True
        )
        assert imported.returncode == 0, imported.stderr
        verified = subprocess.run(
            ["gpg", "--batch", "--verify", str(tmp_path / "SHA256SUMS.asc"), str(tmp_path / "SHA256SUMS")],
            env=env,
            capture_output=True,
            text=True,
        )
        subprocess.run(["gpgconf", "--kill", "all"], env=env, capture_output=True)
        return verified


def test_sha256sums_carry_an_openpgp_signature_that_gpg_verifies(
    engine, database_url, sandbox, flow_env, instance, tmp_path, monkeypatch
):
    from domain.settings import get_settings

    key = pysequoia.Tsk.generate("Release signing <release@wrk.test>")
    (tmp_path / "release-key.asc").write_text(str(key))
    monkeypatch.setenv("RELEASE_GPG_KEY", str(tmp_path / "release-key.asc"))
    get_settings.cache_clear()
    sandbox.configure_github(default_duration_s=0.05)
    assert _release(database_url, instance, tag="v5.0.0", repositories=["commons"]).success
    assets = {a["name"]: a for a in sandbox.http.get("/github/repos/bllvm/bllvm/releases/tags/v5.0.0").json()["assets"]}
    assert set(assets) == {"SHA256SUMS", "SHA256SUMS.asc", "release-v5.0.0.tar.gz", "commons-build.zip"}
    sums, signature = _asset(sandbox, assets["SHA256SUMS"]), _asset(sandbox, assets["SHA256SUMS.asc"])
    assert signature.startswith(b"-----BEGIN PGP SIGNATURE-----")
    # Verified without gpg (the same library), and with gpg when the machine has it.
    public = key.extract_certificate()
    checked = pysequoia.verify(bytes=sums, store=lambda _ids: [public], signature=pysequoia.Sig.from_bytes(signature))
    assert [s.certificate for s in checked.valid_sigs] == [public.fingerprint]
    with pytest.raises(Exception):  # noqa: B017  a changed SHA256SUMS does not verify
        pysequoia.verify(bytes=sums + b"x", store=lambda _ids: [public], signature=pysequoia.Sig.from_bytes(signature))
    if shutil.which("gpg"):
        verified = _gpg_verify(tmp_path, str(public).encode(), sums, signature)
        assert verified.returncode == 0 and "Good signature" in verified.stderr, verified.stderr
        (tmp_path / "tampered").mkdir()
        tampered = _gpg_verify(tmp_path / "tampered", str(public).encode(), sums + b"x", signature)
        assert tampered.returncode != 0


FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def test_a_passphrase_protected_key_signs_and_a_missing_passphrase_fails_the_release(
    engine, database_url, sandbox, flow_env, instance, tmp_path, monkeypatch
):
    """tests/fixtures/release-test-key.asc: a throwaway ed25519 key made with gpg, passphrase `s3cret`."""
    from domain.settings import get_settings

    monkeypatch.setenv("RELEASE_GPG_KEY", str(FIXTURES / "release-test-key.asc"))
    get_settings.cache_clear()
    sandbox.configure_github(default_duration_s=0.05)
    assert not _release(database_url, instance, tag="v5.1.0", repositories=["commons"]).success
    assert "needs RELEASE_GPG_PASSPHRASE" in _release_error(engine, "v5.1.0")

    monkeypatch.setenv("RELEASE_GPG_PASSPHRASE", "s3cret")
    get_settings.cache_clear()
    assert _release(database_url, instance, tag="v5.1.0", repositories=["commons"]).success
    assets = {a["name"]: a for a in sandbox.http.get("/github/repos/bllvm/bllvm/releases/tags/v5.1.0").json()["assets"]}
    sums, signature = _asset(sandbox, assets["SHA256SUMS"]), _asset(sandbox, assets["SHA256SUMS.asc"])
    public_key = (FIXTURES / "release-test-key.pub.asc").read_bytes()
    public = pysequoia.Cert.from_bytes(public_key)
    checked = pysequoia.verify(bytes=sums, store=lambda _ids: [public], signature=pysequoia.Sig.from_bytes(signature))
    assert [s.certificate for s in checked.valid_sigs] == [public.fingerprint]
    if shutil.which("gpg"):
        verified = _gpg_verify(tmp_path, public_key, sums, signature)
        assert verified.returncode == 0 and "Good signature" in verified.stderr, verified.stderr


def test_releases_are_readable_over_the_api_and_workflow_run_events_update_them(
    engine, database_url, sandbox, flow_env, instance
):
    import hashlib
    import hmac
    import json

    from starlette.testclient import TestClient

    from api.app import create_app
    from domain.settings import get_settings
    from tests.api.conftest import bearer, make_token

    sandbox.configure_github(default_duration_s=0.05)
    assert _release(database_url, instance, tag="v6.0.0", repositories=["commons"]).success
    settings = get_settings()
    with TestClient(create_app(settings, engine)) as client:
        token = bearer(make_token(settings, tenants=["any"], roles=["ops_release"]))
        [listed] = client.get("/v1/releases", headers=token).json()["releases"]
        detail = client.get(f"/v1/releases/{listed['id']}", headers=token).json()
        assert detail["tag"] == "v6.0.0" and detail["status"] == "succeeded"
        [build] = detail["builds"]
        assert build["repository"] == "commons" and build["status"] == "succeeded" and build["checksums"]
        assert (
            client.get(
                "/v1/releases", headers=bearer(make_token(settings, tenants=["t"], roles=["ops_build"]))
            ).status_code
            == 403
        )
        # Late deliveries about a build that succeeded never move it backwards.
        for delivery, status, conclusion in [("wr-1", "in_progress", None), ("wr-2", "completed", "failure")]:
            event = {
                "action": "completed",
                "workflow_run": {"id": int(build["github_run_id"]), "status": status, "conclusion": conclusion},
            }
            body = json.dumps(event).encode()
            secret = settings.github_webhook_secret.get_secret_value().encode()
            signature = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
            answer = client.post(
                "/webhooks/github",
                content=body,
                headers={
                    "X-GitHub-Event": "workflow_run",
                    "X-GitHub-Delivery": delivery,
                    "X-Hub-Signature-256": signature,
                },
            )
            assert answer.json()["status"] == "stale"
        [after] = client.get(f"/v1/releases/{listed['id']}", headers=token).json()["builds"]
        assert (after["status"], after["conclusion"]) == ("succeeded", "success")
