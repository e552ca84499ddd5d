"""Which tenant a request speaks for: its API key (``Authorization: Bearer`` or ``X-API-Key``),
looked up by SHA-256 in constant time. A key opens only its own tenant, and a refusal says
nothing about other tenants."""

from __future__ import annotations

from collections.abc import Collection, Mapping

from fastapi import Request

from bastion.core.http import ApiError, bearer_token
from bastion.core.keys import holder

__all__ = ["authenticate_tenant"]


def authenticate_tenant(request: Request, tenant: str, key_to_tenant: Mapping[str, str],
                        tenants: Collection[str]) -> str:
    """``tenant``, if the request's key is that tenant's and the tenant has a policy.

    Args:
        request: the request, for its headers.
        tenant: the tenant the body names.
        key_to_tenant: ``sha256(key) -> tenant`` of the loaded configuration.
        tenants: the tenants with a policy.

    Raises:
        ApiError: 401 for a missing key or one that is not ``tenant``'s, 404 for a tenant with
            a key but no policy.
    """
    key = bearer_token(request) or request.headers.get("x-api-key", "").strip()
    if not key:
        raise ApiError(401, "missing API key: send 'Authorization: Bearer <key>'")
    owner = holder(key_to_tenant, key)
    if owner is None or owner != tenant:
        raise ApiError(401, f"the API key is not valid for tenant {tenant!r}")
    if tenant not in tenants:
        raise ApiError(404, f"tenant {tenant!r} has no policy; add it to the policy file")
    return tenant
