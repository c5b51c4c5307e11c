"""Authentication and tenancy for ops endpoints.

JWTs (PyJWT): HS256 with the configured secret by default; RS256 with a configured public key or a JWKS
URL in production. Required claims: `sub`, `exp`, `iat`, `tenants` (the tenant ids the user belongs to
or is delegated to) and `roles`; issuer and audience are checked. Customer API keys (`wrk_api_...`) are
refused on ops endpoints. The tenant always comes from the token (or from `X-Tenant-ID`, which must be
one of the token's tenants), never from the body or the query.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import jwt
from starlette.requests import Request

from api.problems import Problem
from domain.settings import Settings

OPS_ROLES = frozenset({"ops_admin", "ops_build", "ops_release", "admin"})
CUSTOMER_KEY_PREFIX = "wrk_api_"
BEARER_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="wrk-orchestration"'}


@dataclass(frozen=True)
class Principal:
    sub: str
    tenants: frozenset[str]
    roles: frozenset[str]
    claims: dict[str, Any] = field(compare=False, repr=False)

    @property
    def actor(self) -> str:
        return self.sub


def _unauthorized(detail: str) -> Problem:
    return Problem(401, "unauthorized", detail, headers=BEARER_CHALLENGE)


class Authenticator:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.algorithms = list(settings.jwt_algorithms)
        self._jwks = jwt.PyJWKClient(settings.jwt_jwks_url, cache_keys=True) if settings.jwt_jwks_url else None

    def _key(self, token: str) -> Any:
        header = jwt.get_unverified_header(token)
        algorithm = header.get("alg")
        if algorithm not in self.algorithms:
            raise jwt.InvalidAlgorithmError(f"algorithm {algorithm!r} is not accepted")
        if algorithm == "HS256":
            return self.settings.jwt_secret.get_secret_value()
        if self._jwks is not None:
            return self._jwks.get_signing_key_from_jwt(token).key
        if self.settings.jwt_public_key:
            return self.settings.jwt_public_key
        raise jwt.InvalidKeyError("no verification key configured")

    def authenticate(self, request: Request) -> Principal:
        authorization = request.headers.get("authorization", "")
        scheme, _, token = authorization.partition(" ")
        if request.headers.get("x-api-key", "").startswith(CUSTOMER_KEY_PREFIX) or token.startswith(
            CUSTOMER_KEY_PREFIX
        ):
            raise _unauthorized("customer API keys are not accepted on ops endpoints; use an ops session token")
        if not authorization:
            raise _unauthorized("missing bearer token")
        if scheme.lower() != "bearer" or not token:
            raise _unauthorized("malformed Authorization header; expected 'Bearer <token>'")
        try:
            claims = jwt.decode(
                token,
                self._key(token),
                algorithms=self.algorithms,
                audience=self.settings.jwt_audience,
                issuer=self.settings.jwt_issuer,
                options={"require": ["sub", "exp", "iat"]},
                leeway=30,
            )
        except jwt.ExpiredSignatureError as exc:
            raise _unauthorized("token expired") from exc
        except jwt.InvalidAudienceError as exc:
            raise _unauthorized("token audience is not accepted") from exc
        except jwt.InvalidIssuerError as exc:
            raise _unauthorized("token issuer is not accepted") from exc
        except jwt.InvalidSignatureError as exc:
            raise _unauthorized("token signature is invalid") from exc
        except jwt.InvalidAlgorithmError as exc:
            raise _unauthorized("token algorithm is not accepted") from exc
        except (jwt.PyJWTError, ValueError) as exc:
            raise _unauthorized(f"invalid token: {exc}") from exc
        tenants, roles = claims.get("tenants"), claims.get("roles")
        if not _string_list(tenants) or not _string_list(roles):
            raise _unauthorized("invalid token: 'tenants' and 'roles' must be lists of strings")
        return Principal(sub=str(claims["sub"]), tenants=frozenset(tenants), roles=frozenset(roles), claims=claims)


def _string_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def require(request: Request, roles: frozenset[str] = OPS_ROLES) -> Principal:
    """The caller, authenticated and holding one of `roles`; recorded for the access log."""
    authenticator: Authenticator = request.app.state.authenticator
    principal = authenticator.authenticate(request)
    request.state.actor = principal.sub
    if not principal.roles & roles:
        raise Problem(403, "forbidden", f"one of the roles {sorted(roles)} is required")
    return principal


def tenant_of(request: Request, principal: Principal) -> str:
    """The tenant a request acts in: `X-Tenant-ID` (one of the token's tenants) or the token's only one."""
    header = request.headers.get("x-tenant-id")
    if header:
        if header not in principal.tenants:
            raise Problem(403, "forbidden", "X-Tenant-ID is not one of your tenants")
        tenant = header
    elif len(principal.tenants) == 1:
        (tenant,) = principal.tenants
    else:
        raise Problem(400, "tenant_required", "your token has several tenants: send X-Tenant-ID")
    request.state.tenant_id = tenant
    return tenant


def tenant_scope(request: Request, principal: Principal) -> frozenset[str]:
    """The tenants a lookup by id may search: `X-Tenant-ID` when sent (one of the token's), else all of
    the token's. A row of any other tenant is simply not found."""
    header = request.headers.get("x-tenant-id")
    if header:
        if header not in principal.tenants:
            raise Problem(403, "forbidden", "X-Tenant-ID is not one of your tenants")
        request.state.tenant_id = header
        return frozenset({header})
    if len(principal.tenants) == 1:
        request.state.tenant_id = next(iter(principal.tenants))
    return principal.tenants
