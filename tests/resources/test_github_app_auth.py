"""GitHub App authentication over real HTTP against the sandbox: app JWT, installation token, cache, 401."""

from __future__ import annotations

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from domain.core.errors import PermanentError
from domain.core.settings import Settings
from resources.github import AppInstallationAuth, GitHubClient, github_client
from resources.retry import RetryPolicy

APP_ID, INSTALLATION_ID = "31337", "4242"


def _pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@pytest.fixture(scope="module")
def app_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def app_sandbox(sandbox, app_key):
    public = app_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    sandbox.configure_github(
        default_duration_s=0.05,
        app={"app_id": APP_ID, "installation_id": INSTALLATION_ID, "public_key": public.decode()},
    )
    return sandbox


def _exchanges(sandbox) -> int:
    return sandbox.http.post("/_sandbox/github/config", json={}).json()["token_exchanges"]


def _client(sandbox, auth: AppInstallationAuth) -> GitHubClient:
    return GitHubClient(sandbox.github_url, auth=auth, retry=RetryPolicy(max_attempts=2, sleep=lambda _s: None))


def test_the_app_jwt_is_exchanged_once_and_the_token_reused(app_sandbox, app_key):
    auth = AppInstallationAuth(app_sandbox.github_url, APP_ID, _pem(app_key), INSTALLATION_ID)
    with _client(app_sandbox, auth) as gh:
        gh.dispatch_workflow("acme", "node", "build.yml", "main", {"correlation_id": "c-1"})
        assert len(gh.list_workflow_runs("acme", "node")) == 1
        gh.create_release("acme", "bllvm", tag="v1", name="v1", body="", prerelease=False)
    assert _exchanges(app_sandbox) == 1 == auth.exchanges
    [exchange] = app_sandbox.calls("POST", r"/github/app/installations/4242/access_tokens")
    assert exchange["status"] == 201
    claims = jwt.decode(auth.app_jwt(), app_key.public_key(), algorithms=["RS256"])
    assert claims["iss"] == APP_ID and 0 < claims["exp"] - claims["iat"] <= 600


def test_a_401_fetches_a_new_token_and_the_call_succeeds(app_sandbox, app_key):
    auth = AppInstallationAuth(app_sandbox.github_url, APP_ID, _pem(app_key), INSTALLATION_ID)
    with _client(app_sandbox, auth) as gh:
        gh.list_workflow_runs("acme", "node")
        app_sandbox.http.post("/_sandbox/github/revoke-tokens").raise_for_status()
        assert gh.list_workflow_runs("acme", "node") == []
    assert _exchanges(app_sandbox) == 2
    statuses = [c["status"] for c in app_sandbox.calls("GET", r"/github/repos/acme/node/actions/runs")]
    assert statuses == [200, 401, 200]


def test_a_token_is_replaced_shortly_before_it_expires(app_sandbox, app_key):
    now = [0.0]
    auth = AppInstallationAuth(app_sandbox.github_url, APP_ID, _pem(app_key), INSTALLATION_ID, clock=lambda: now[0])
    import time

    now[0] = time.time()
    with _client(app_sandbox, auth) as gh:
        gh.list_workflow_runs("acme", "node")
        now[0] += 3600 - auth.REFRESH_MARGIN_S - 10  # the sandbox's tokens live an hour: not yet
        gh.list_workflow_runs("acme", "node")
        assert auth.exchanges == 1
        now[0] += 20  # within the margin: replaced before GitHub would refuse it
        gh.list_workflow_runs("acme", "node")
    assert auth.exchanges == 2 == _exchanges(app_sandbox)


def test_a_wrong_app_key_or_a_plain_token_is_refused(app_sandbox):
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    auth = AppInstallationAuth(app_sandbox.github_url, APP_ID, _pem(other), INSTALLATION_ID)
    with _client(app_sandbox, auth) as gh, pytest.raises(PermanentError) as refused:
        gh.list_workflow_runs("acme", "node")
    assert refused.value.status == 401
    with GitHubClient(app_sandbox.github_url, "ghp_plain") as gh, pytest.raises(PermanentError) as plain:
        gh.list_workflow_runs("acme", "node")
    assert plain.value.status == 401


def test_settings_choose_the_app_over_the_token(app_sandbox, app_key, tmp_path):
    key_file = tmp_path / "app.pem"
    key_file.write_text(_pem(app_key))
    for private_key in (_pem(app_key), str(key_file)):  # PEM text, or the path to it
        settings = Settings(
            environment="test",
            github_api_url=app_sandbox.github_url,
            github_app_id=APP_ID,
            github_app_private_key=private_key,
            github_app_installation_id=INSTALLATION_ID,
        )
        with github_client(settings) as gh:
            assert gh.list_workflow_runs("acme", "node") == []


def test_a_plain_token_still_works_without_an_app(sandbox):
    settings = Settings(environment="test", github_api_url=sandbox.github_url, github_token="ghp_plain")
    with github_client(settings) as gh:
        assert gh.list_workflow_runs("acme", "node") == []
    [call] = sandbox.calls("GET")
    assert call["status"] == 200


def test_a_streamed_upload_refused_with_a_revoked_token_is_retried_with_a_new_one(app_sandbox, app_key, tmp_path):
    auth = AppInstallationAuth(app_sandbox.github_url, APP_ID, _pem(app_key), INSTALLATION_ID)
    payload = tmp_path / "SHA256SUMS"
    payload.write_text("abc  file\n")
    with _client(app_sandbox, auth) as gh:
        release = gh.create_release("acme", "bllvm", tag="v2", name="v2", body="", prerelease=False)
        app_sandbox.http.post("/_sandbox/github/revoke-tokens").raise_for_status()
        asset = gh.upload_release_asset(release["upload_url"], payload)
    assert asset["size"] == payload.stat().st_size
    assert [c["status"] for c in app_sandbox.calls("POST", r"/github/uploads/.*")] == [401, 201]
    assert _exchanges(app_sandbox) == 2
