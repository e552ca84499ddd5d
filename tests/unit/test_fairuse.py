"""Fair use: the per-tenant token bucket and in-flight bound (serving.fairuse) on a fake clock,
and their place in the policy (core.policy.FairUse)."""

from __future__ import annotations

from typing import Any

import pytest

from bastion.core.errors import PolicyError
from bastion.core.http import ApiError
from bastion.core.policy import PolicySet, parse_policy
from bastion.serving.fairuse import FairUseLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def policy(**fair_use: Any) -> PolicySet:
    cats = {"hate": {"block_threshold": 0.9}}
    return parse_policy({"tenants": {"flood": {"categories": cats, "fair_use": fair_use},
                                     "calm": {"categories": cats}}})


def limiter(clock: Clock, replicas: int = 1, **fair_use: Any) -> FairUseLimiter:
    lim = FairUseLimiter(clock)
    lim.configure(policy(**fair_use), replicas)
    return lim


def refused(lim: FairUseLimiter, tenant: str, items: int) -> ApiError:
    with pytest.raises(ApiError) as info:
        lim.admit(tenant, items)
    return info.value


def test_the_burst_passes_then_429_with_retry_after_from_the_bucket() -> None:
    clock = Clock()
    lim = limiter(clock, items_per_s=10, burst_items=20)
    for _ in range(4):
        with lim.admit("flood", 5):
            pass
    err = refused(lim, "flood", 5)
    assert err.status == 429 and err.headers == {"Retry-After": "1"}  # 5 items at 10/s: 0.5 s
    assert "rate limit of 10 items/s, burst 20" in err.message
    assert "tenants.flood.fair_use.items_per_s" in err.message and "raise the limit" in err.message
    err = refused(lim, "flood", 20)
    assert err.headers == {"Retry-After": "2"}  # 20 items at 10/s
    clock.now += 0.5
    with lim.admit("flood", 5):
        pass


def test_a_refused_request_takes_nothing_from_the_bucket() -> None:
    clock = Clock()
    lim = limiter(clock, items_per_s=10, burst_items=10)
    with lim.admit("flood", 10):
        pass
    for _ in range(50):
        refused(lim, "flood", 1)
    clock.now += 0.1
    with lim.admit("flood", 1):
        pass


def test_the_sustained_rate_holds_over_time() -> None:
    clock = Clock()
    lim = limiter(clock, items_per_s=100, burst_items=10)
    admitted = 0
    for _ in range(10_000):  # 10 s of a client asking every millisecond
        clock.now += 0.001
        try:
            with lim.admit("flood", 1):
                admitted += 1
        except ApiError:
            pass
    assert 1000 <= admitted <= 1010  # 10 s x 100/s, plus the burst


def test_other_tenants_are_never_limited_by_a_flood() -> None:
    clock = Clock()
    lim = limiter(clock, items_per_s=1, burst_items=1, max_in_flight=1)
    held = lim.admit("flood", 1)
    refused(lim, "flood", 1)
    for _ in range(100):
        with lim.admit("calm", 256):
            pass
    held.__exit__(None, None, None)


def test_in_flight_bound_and_release_on_exit_even_on_error() -> None:
    lim = limiter(Clock(), max_in_flight=2)
    a, b = lim.admit("flood", 1), lim.admit("flood", 1)
    err = refused(lim, "flood", 1)
    assert err.status == 429 and err.headers == {"Retry-After": "1"}
    assert "at its limit of 2 request(s) in flight" in err.message
    assert "max_in_flight" in err.message
    a.__exit__(None, None, None)
    with pytest.raises(RuntimeError), lim.admit("flood", 1):
        raise RuntimeError("scoring failed")
    assert lim.in_flight("flood") == 1
    b.__exit__(None, None, None)
    assert lim.in_flight("flood") == 0


def test_a_request_larger_than_the_burst_is_413_not_429() -> None:
    lim = limiter(Clock(), items_per_s=10, burst_items=20)
    err = refused(lim, "flood", 21)
    assert err.status == 413 and "at most 20 at once" in err.message
    assert "burst_items" in err.message and "split the batch" in err.message


def test_replicas_divide_the_limits_and_a_large_request_still_passes() -> None:
    clock = Clock()
    lim = limiter(clock, replicas=4, items_per_s=40, burst_items=40, max_in_flight=6)
    # one replica's share: 10 items/s, a bucket of 10, ceil(6 / 4) = 2 in flight
    with lim.admit("flood", 30):  # larger than the share, within the tenant's burst: admitted
        pass
    err = refused(lim, "flood", 1)  # ... in debt: 20 items below empty, at 10 items/s
    assert err.headers == {"Retry-After": "3"} and "1/4 of it" in err.message
    clock.now += 3
    a, b = lim.admit("flood", 1), lim.admit("flood", 1)
    assert refused(lim, "flood", 1).message.startswith("tenant 'flood' is at its limit of 6")
    for h in (a, b):
        h.__exit__(None, None, None)


def test_an_edited_policy_applies_at_once_and_the_bucket_keeps_its_level() -> None:
    clock = Clock()
    lim = limiter(clock, items_per_s=10, burst_items=10)
    with lim.admit("flood", 10):
        pass
    refused(lim, "flood", 1)
    lim.configure(policy(items_per_s=1000, burst_items=1000))
    refused(lim, "flood", 1)  # still empty: an edit is not a refill
    clock.now += 0.01
    with lim.admit("flood", 10):
        pass
    lim.configure(policy())  # limits removed: nothing is refused any more
    for _ in range(100):
        with lim.admit("flood", 256):
            pass
    lim.configure(policy(max_in_flight=1))
    with lim.admit("flood", 1):
        assert refused(lim, "flood", 1).status == 429


def test_the_default_burst_is_two_seconds_of_the_rate() -> None:
    lim = limiter(Clock(), items_per_s=2.5)
    with lim.admit("flood", 5):
        pass
    assert refused(lim, "flood", 6).status == 413


def test_policy_fair_use_is_validated_and_off_by_default() -> None:
    assert parse_policy({"tenants": {"a": {"categories": {"x": {"block_threshold": 0.5}}}}}
                        ).tenants["a"].fair_use.items_per_s is None
    with pytest.raises(PolicyError, match="burst_items is the size of the items_per_s bucket"):
        policy(burst_items=10)
    with pytest.raises(PolicyError, match=r"fair_use\.items_per_s: Input should be greater"):
        policy(items_per_s=0)
    with pytest.raises(PolicyError, match=r"fair_use\.max_inflight: .*unknown key"):
        policy(max_inflight=3)


def test_limits_do_not_change_the_policy_version() -> None:
    assert (policy().tenant_version("flood")
            == policy(items_per_s=5, max_in_flight=2).tenant_version("flood"))


def test_replicas_must_be_positive() -> None:
    with pytest.raises(ValueError, match="replicas must be at least 1"):
        FairUseLimiter().configure(policy(), 0)
