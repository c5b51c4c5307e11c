"""Authentication and tenancy for ops endpoints.

JWTs (PyJWT): HS256 with the configured secret by default; RS256 with a configured public key or a JWKS
URL in production. Required claims: `sub`, `exp`, `iat`, `tenants` (the tenant ids the user belongs to
or is delegated to) and `roles`; issuer and audience are checked. Customer API keys (`wrk_api_...`) are
refused on ops endpoints. The tenant always comes from the token (or from `X-Tenant-ID`, which must be
one of the token's tenants), never from the body or the query.

Roles are per tenant: a request acting in tenant T needs the role in T. A token's roles in T are its
`tenant_roles[T]` (claim `tenant_roles: {tenant_id: [roles]}`; entries for tenants outside `tenants`
are ignored), or, for a token that names exactly one tenant and has no `tenant_roles`, its `roles`.
A token that names several tenants without `tenant_roles` holds no role in any of them: its flat
`roles` cannot say where they apply. The flat `roles` are the platform roles (platform-wide things
that belong to no tenant: releases, tenant-less triggers).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeGuard

import jwt
from starlette.requests import Request

from api.problems import Problem
from domain.core.settings import Settings

OPS_ROLES = frozenset({"ops_admin", "ops_build", "ops_release", "admin"})
CUSTOMER_KEY_PREFIX = "wrk_api_"
BEARER_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="wrk-orchestration"'}


@dataclass(frozen=True)
class Principal:
    sub: str
    tenants: frozenset[str]
    roles: frozenset[str]  # platform roles (see the module's docstring)
    tenant_roles: Mapping[str, frozenset[str]] = field(default_factory=dict)
    claims: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def actor(self) -> str:
        return self.sub

    def roles_in(self, tenant: str) -> frozenset[str]:
        return self.tenant_roles.get(tenant, frozenset())

    def holds(self, roles: frozenset[str]) -> bool:
        """One of `roles` somewhere: platform-wide or in one of the tenants."""
        return bool(self.roles & roles) or any(held & roles for held in self.tenant_roles.values())


def principal_from_claims(claims: dict[str, Any]) -> Principal:
    """The principal of verified claims; ValueError when `tenants`, `roles` or `tenant_roles` are malformed."""
    tenants, roles, per_tenant = claims.get("tenants"), claims.get("roles"), claims.get("tenant_roles")
    if not _string_list(tenants) or not _string_list(roles):
        raise ValueError("'tenants' and 'roles' must be lists of strings")
    if per_tenant is not None:
        if not isinstance(per_tenant, dict) or not all(
            isinstance(t, str) and _string_list(r) for t, r in per_tenant.items()
        ):
            raise ValueError("'tenant_roles' must map tenant ids to lists of strings")
        tenant_roles = {t: frozenset(r) for t, r in per_tenant.items() if t in tenants}
    elif len(tenants) == 1:
        tenant_roles = {tenants[0]: frozenset(roles)}
    else:
        tenant_roles = {}
    return Principal(
        sub=str(claims["sub"]),
        tenants=frozenset(tenants),
        roles=frozenset(roles),
        tenant_roles=tenant_roles,
        claims=claims,
    )


def _unauthorized(detail: str) -> Problem:
    return Problem(401, "unauthorized", detail, headers=BEARER_CHALLENGE)


class VerifiedTokens:
    """Tokens already verified, with their principal, each for at most `ttl_s` and never past its own
    expiry: a service posting with one token pays the signature check once a minute, not per request.
    Least recently used tokens go first beyond `size`."""

    def __init__(self, ttl_s: float = 60.0, size: int = 1024) -> None:
        self.ttl_s, self.size = ttl_s, size
        self._entries: OrderedDict[str, tuple[float, Principal]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, token: str) -> Principal | None:
        with self._lock:
            entry = self._entries.get(token)
            if entry is None:
                return None
            if time.monotonic() >= entry[0]:
                del self._entries[token]
                return None
            self._entries.move_to_end(token)
            return entry[1]

    def put(self, token: str, principal: Principal) -> None:
        # The token stays good for `exp - now` more seconds (the wall clock: `exp` is a timestamp).
        left = float(principal.claims["exp"]) - time.time()
        if left <= 0:
            return
        with self._lock:
            self._entries[token] = (time.monotonic() + min(self.ttl_s, left), principal)
            self._entries.move_to_end(token)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)


class Authenticator:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.algorithms = list(settings.jwt_algorithms)
        # The key set is cached for 5 minutes (PyJWT's lifespan), the keys no longer than it: cache_keys
        # would keep a key withdrawn from the JWKS for the process's life.
        self._jwks = (
            jwt.PyJWKClient(settings.jwt_jwks_url, cache_keys=False, cache_jwk_set=True, lifespan=300)
            if settings.jwt_jwks_url
            else None
        )
        self.verified = VerifiedTokens()

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
        return self.verify(token)

    def verify(self, token: str) -> Principal:
        """The principal of a bearer token however it came (a header, or a WebSocket's subprotocol or
        query parameter, where browsers cannot send headers); Problem 401 saying why when it is refused."""
        if token.startswith(CUSTOMER_KEY_PREFIX):
            raise _unauthorized("customer API keys are not accepted on ops endpoints; use an ops session token")
        principal = self.verified.get(token)
        if principal is None:
            principal = self._verify(token)
            self.verified.put(token, principal)
        return principal

    def _verify(self, token: str) -> Principal:
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
        try:
            return principal_from_claims(claims)
        except ValueError as exc:
            raise _unauthorized(f"invalid token: {exc}") from exc


def _string_list(value: Any) -> TypeGuard[list[str]]:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def require(request: Request, roles: frozenset[str] = OPS_ROLES) -> Principal:
    """The caller, authenticated and holding one of `roles` somewhere; recorded for the access log.
    `tenant_of` and `tenant_scope` then check the roles in the tenant the request acts in."""
    authenticator: Authenticator = request.app.state.authenticator
    principal = authenticator.authenticate(request)
    request.state.actor = principal.sub
    request.state.required_roles = roles
    if not principal.holds(roles):
        raise Problem(403, "forbidden", f"one of the roles {sorted(roles)} is required")
    return principal


def require_platform(request: Request, roles: frozenset[str]) -> Principal:
    """The caller, holding one of `roles` as a platform role: for things of no tenant (releases)."""
    principal = require(request, roles)
    if not principal.roles & roles:
        raise Problem(403, "forbidden", f"one of the platform roles {sorted(roles)} is required")
    return principal


def _required(request: Request) -> frozenset[str]:
    required: frozenset[str] = getattr(request.state, "required_roles", OPS_ROLES)
    return required


def _acting_in(request: Request, principal: Principal, tenant: str) -> str:
    """`tenant` (from `X-Tenant-ID` or the token), refused unless the caller holds a required role there."""
    if tenant not in principal.tenants:
        raise Problem(403, "forbidden", "X-Tenant-ID is not one of your tenants")
    required = _required(request)
    if not principal.roles_in(tenant) & required:
        raise Problem(403, "forbidden", f"one of the roles {sorted(required)} is required in tenant {tenant}")
    request.state.tenant_id = tenant
    return tenant


def tenant_of(request: Request, principal: Principal) -> str:
    """The tenant a request acts in: `X-Tenant-ID` (one of the token's tenants) or the token's only one;
    the caller must hold a required role in it."""
    header = request.headers.get("x-tenant-id")
    if header:
        return _acting_in(request, principal, header)
    if len(principal.tenants) == 1:
        return _acting_in(request, principal, next(iter(principal.tenants)))
    raise Problem(400, "tenant_required", "your token has several tenants: send X-Tenant-ID")


def tenant_scope(request: Request, principal: Principal) -> frozenset[str]:
    """The tenants a lookup by id may search: `X-Tenant-ID` when sent (one of the token's, with a
    required role there), else every tenant of the token where the caller holds a required role. A row
    of any other tenant is simply not found."""
    header = request.headers.get("x-tenant-id")
    if header:
        return frozenset({_acting_in(request, principal, header)})
    required = _required(request)
    scope = frozenset(t for t in principal.tenants if principal.roles_in(t) & required)
    if len(principal.tenants) == 1:
        request.state.tenant_id = next(iter(principal.tenants))
    return scope


def tenant_from_header(request: Request, principal: Principal) -> str:
    """The tenant of the workflow and HITL APIs, which always name it: `X-Tenant-ID` is required (400
    naming the header when missing), must be one of the token's tenants and the caller must hold a
    required role there (403). Rows of other tenants are then simply not found (404)."""
    header = request.headers.get("x-tenant-id", "").strip()
    if not header:
        raise Problem(
            400,
            "tenant_required",
            "the X-Tenant-ID header is required",
            errors=[{"field": "X-Tenant-ID", "message": "header required"}],
        )
    return _acting_in(request, principal, header)
