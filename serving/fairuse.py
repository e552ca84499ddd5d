"""Fair use: each tenant's rate and concurrency limits (``fair_use`` in its policy), enforced
in the Ingress replica before anything is scored, so that one tenant's flood never takes the
encoder from the others.

Per tenant, one token bucket counted in items (``items_per_s`` refills it, ``burst_items`` is
its size) and one counter of requests in flight (``max_in_flight``). A request is admitted
when the bucket holds its items, or holds a full replica's share of the burst for a request
larger than that share (the bucket then goes into debt, so the sustained rate still holds);
otherwise it is refused with 429 and a ``Retry-After`` computed from the bucket. A request
larger than the tenant's whole burst can never pass and is refused with 413.

Each Ingress replica keeps its own buckets: with N replicas it enforces 1/N of every limit
(the rate and the burst divided by N, the in-flight bound divided by N and rounded up). Serve's
proxy spreads requests over the replicas (power of two choices on their queues), so the
replicas together enforce the tenant's limit to within that spread, without a shared counter
(a Ray actor or a database) on every request's path. ``configure`` takes an edited policy
(``Ingress.reconfigure``): limits follow it at once, and a bucket keeps what it holds.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from types import TracebackType

from bastion.core.http import ApiError
from bastion.core.policy import FairUse, PolicySet

__all__ = ["FairUseLimiter", "Admission"]


class _Tenant:
    """One tenant's bucket and in-flight count in this replica, with this replica's share of
    the limits."""

    __slots__ = ("name", "rate", "capacity", "burst", "max_in_flight", "tokens", "stamp",
                 "in_flight", "limits", "replicas")

    def __init__(self, name: str, now: float) -> None:
        self.name = name
        self.rate: float | None = None
        self.capacity = 0.0
        self.burst: float | None = None
        self.max_in_flight: int | None = None
        self.tokens = 0.0
        self.stamp = now
        self.in_flight = 0
        self.limits = FairUse()
        self.replicas = 1

    def set_limits(self, limits: FairUse, replicas: int, now: float) -> None:
        self.refill(now)
        fresh = self.rate is None
        self.limits, self.replicas = limits, replicas
        self.burst = limits.burst
        if limits.items_per_s is None or self.burst is None:
            self.rate, self.capacity = None, 0.0
        else:
            self.rate = limits.items_per_s / replicas
            self.capacity = self.burst / replicas
            # a new bucket starts full; an edited one keeps what it holds, up to its new size
            self.tokens = self.capacity if fresh else min(self.tokens, self.capacity)
        self.max_in_flight = (None if limits.max_in_flight is None
                              else math.ceil(limits.max_in_flight / replicas))

    def refill(self, now: float) -> None:
        if self.rate is not None:
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now


class Admission:
    """An admitted request: leaving the ``with`` block ends it (the tenant's in-flight count
    drops by one)."""

    __slots__ = ("_tenant", "_lock")

    def __init__(self, tenant: _Tenant | None, lock: threading.Lock) -> None:
        self._tenant, self._lock = tenant, lock

    def __enter__(self) -> Admission:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._tenant is not None:
            with self._lock:
                self._tenant.in_flight -= 1
            self._tenant = None


class FairUseLimiter:
    """Every tenant's fair-use state in one Ingress replica.

    Args:
        clock: monotonic seconds; a fake one in tests.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()  # reconfigure may run on another thread than requests
        self._tenants: dict[str, _Tenant] = {}

    def configure(self, policy: PolicySet, replicas: int = 1) -> None:
        """Take the limits of ``policy``, each divided among ``replicas`` ingress replicas."""
        if replicas < 1:
            raise ValueError(f"replicas must be at least 1, got {replicas}")
        now = self._clock()
        with self._lock:
            tenants: dict[str, _Tenant] = {}
            for name, tp in policy.tenants.items():
                limits = tp.fair_use
                if limits == FairUse() and name not in self._tenants:
                    continue  # no limits: nothing to keep
                state = self._tenants.get(name) or _Tenant(name, now)
                state.set_limits(limits, replicas, now)
                tenants[name] = state
            # a tenant dropped from the policy keeps no state; requests of its in flight end
            # on their own objects
            self._tenants = tenants

    def admit(self, tenant: str, items: int) -> Admission:
        """Admit a request of ``items`` items for ``tenant`` (authenticated), or refuse it.

        Raises:
            ApiError: 429 with ``Retry-After`` past the rate or the in-flight limit, 413 for a
                request larger than the tenant's burst.
        """
        with self._lock:
            state = self._tenants.get(tenant)
            if state is None:
                return Admission(None, self._lock)
            limits = state.limits
            where = f"tenants.{tenant}.fair_use"
            share = (f"; each of the {state.replicas} ingress replicas enforces 1/"
                     f"{state.replicas} of it" if state.replicas > 1 else "")
            if state.max_in_flight is not None and state.in_flight >= state.max_in_flight:
                raise ApiError(
                    429, f"tenant {tenant!r} is at its limit of {limits.max_in_flight} "
                         f"request(s) in flight ({where}.max_in_flight in the policy file"
                         f"{share}): wait for one to finish, or raise the limit",
                    headers={"Retry-After": "1"})
            if state.rate is not None and state.burst is not None:
                if items > state.burst:
                    raise ApiError(
                        413, f"{items} items in one request; tenant {tenant!r} may send at "
                             f"most {state.burst:g} at once ({where}.burst_items in the policy "
                             "file): split the batch, or raise burst_items")
                state.refill(self._clock())
                need = min(float(items), state.capacity)
                if state.tokens < need - 1e-9:  # float dust of the refill is no shortfall
                    wait = (need - state.tokens) / state.rate
                    retry = max(1, math.ceil(wait))
                    raise ApiError(
                        429, f"tenant {tenant!r} is over its rate limit of "
                             f"{limits.items_per_s:g} items/s, burst {state.burst:g} ({where}."
                             f"items_per_s and burst_items in the policy file{share}): retry "
                             f"after {retry} s, or raise the limit",
                        headers={"Retry-After": str(retry)})
                state.tokens -= items
            state.in_flight += 1
            return Admission(state, self._lock)

    def in_flight(self, tenant: str) -> int:
        """Requests of ``tenant`` in flight in this replica (0 without limits)."""
        state = self._tenants.get(tenant)
        return state.in_flight if state is not None else 0
