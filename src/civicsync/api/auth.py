"""Who may call what: API keys in ``Authorization: Bearer`` or ``X-API-Key``, and their scopes.

No key, or a malformed, unknown or revoked one: 401 with ``WWW-Authenticate``. A valid key without
the operation's scope: 403. The key is never logged; the access log shows its key_id only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from civicsync.api.context import ApiContext, context
from civicsync.api.errors import ApiError
from civicsync.api.keys import Principal, authenticate

bearer_scheme = HTTPBearer(auto_error=False, scheme_name="bearerKey", bearerFormat="csk_<key_id>_<secret>",
                           description="An API key made with `civicsync apikey create`.")
header_scheme = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="apiKeyHeader",
                             description="The same API key, for clients that cannot set Authorization.")

_CHALLENGE = 'Bearer realm="civicsync"'


def _unauthorized(message: str, invalid: bool) -> ApiError:
    challenge = f'{_CHALLENGE}, error="invalid_token"' if invalid else _CHALLENGE
    return ApiError(401, message, headers={"WWW-Authenticate": challenge})


def _principal(request: Request, ctx: ApiContext, credentials: HTTPAuthorizationCredentials | None,
               header_key: str | None) -> Principal | None:
    """The key's principal; None without a key; 401 for a malformed, unknown or revoked key."""
    key = credentials.credentials if credentials is not None else header_key
    if not key:
        return None
    with ctx.database("auth") as conn:
        principal = authenticate(conn, key.strip())
    if principal is None:
        raise _unauthorized("the API key is not valid (unknown, malformed or revoked)", invalid=True)
    request.state.key_id = principal.key_id  # for the access log; never the key itself
    return principal


def optional_principal(request: Request, ctx: Annotated[ApiContext, Depends(context)],
                       credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)],
                       header_key: Annotated[str | None, Security(header_scheme)]) -> Principal | None:
    """For routes open to all that show more to some keys: the principal, or None without a key."""
    return _principal(request, ctx, credentials, header_key)


def require_scope(scope: str) -> Callable[..., Principal]:
    """A dependency admitting requests whose key carries ``scope``; it returns the key's principal."""

    def check(request: Request, ctx: Annotated[ApiContext, Depends(context)],
              credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)],
              header_key: Annotated[str | None, Security(header_scheme)]) -> Principal:
        principal = _principal(request, ctx, credentials, header_key)
        if principal is None:
            raise _unauthorized("an API key is required (Authorization: Bearer KEY, or X-API-Key)", invalid=False)
        if scope not in principal.scopes:
            raise ApiError(403, f"this key lacks the scope {scope}")
        return principal

    check.__name__ = f"require_{scope.replace(':', '_')}"
    return check
