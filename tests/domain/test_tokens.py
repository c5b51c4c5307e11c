"""`wrk-orch token`: useless tokens are refused; per-tenant roles are written down."""

from __future__ import annotations

import jwt
import pytest

from domain.cli import main
from domain.settings import Settings
from domain.tokens import InvalidTokenRequest, mint_dev_token


def _claims(token: str) -> dict:
    settings = Settings(environment="development")
    return jwt.decode(
        token,
        settings.jwt_secret.get_secret_value(),
        algorithms=["HS256"],
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
    )


@pytest.mark.parametrize(
    "args",
    [
        ["--tenant", "", "--roles", "ops_admin"],
        ["--tenant", ",", "--roles", "ops_admin"],
        ["--roles", "ops_admin"],
        ["--tenant", "t1", "--roles", "ops_admin", "--ttl", "-60"],
        ["--tenant", "t1", "--roles", "ops_admin", "--ttl", "0"],
        ["--tenant-roles", "=ops_admin"],
    ],
)
def test_cli_refuses_a_token_without_tenant_or_with_a_lifetime_that_is_not_positive(args, capsys):
    assert main(["token", *args]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("wrk-orch token: ")


def test_mint_refuses_no_tenant_and_negative_ttl():
    settings = Settings(environment="development")
    with pytest.raises(InvalidTokenRequest, match="tenant"):
        mint_dev_token(settings, tenants=[], roles=["ops_admin"])
    with pytest.raises(InvalidTokenRequest, match="positive"):
        mint_dev_token(settings, tenants=["t1"], roles=["ops_admin"], ttl_seconds=-1)


def test_cli_writes_roles_per_tenant(capsys):
    assert main(["token", "--tenant", "t1", "--roles", "ops_admin", "--tenant-roles", "t2=client", "--sub", "u"]) == 0
    claims = _claims(capsys.readouterr().out.strip())
    assert claims["tenants"] == ["t1", "t2"] and claims["roles"] == ["ops_admin"]
    assert claims["tenant_roles"] == {"t1": ["ops_admin"], "t2": ["client"]}
