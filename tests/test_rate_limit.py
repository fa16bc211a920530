"""TokenBucket driven by explicit times: burst, refill, cap, and fractional tokens."""

from __future__ import annotations

import pytest

from contracts.input_events import EVENT_BURST, EVENTS_PER_SECOND
from contracts.token_bucket import TokenBucket


@pytest.mark.parametrize(
    ("rate", "burst", "times", "expected"),
    [
        pytest.param(10, 3, [0, 0, 0, 0], [True, True, True, False], id="burst-then-refuse"),
        pytest.param(10, 3, [0, 0, 0, 0, 0.1, 0.1], [True] * 3 + [False, True, False], id="refill"),
        pytest.param(10, 2, [0, 0, 100, 100, 100], [True, True, True, True, False], id="cap"),
        pytest.param(2, 1, [0, 0.25, 0.5, 0.5], [True, False, True, False], id="fractional"),
        pytest.param(10, 0, [0, 1, 2], [False, False, False], id="no-burst"),
        pytest.param(1, 1, [5, 5.5, 6, 6.9, 7], [True, False, True, False, True], id="one-per-s"),
    ],
)
def test_allow_sequence(
    rate: float, burst: float, times: list[float], expected: list[bool]
) -> None:
    bucket = TokenBucket(rate, burst, now=times[0])
    assert [bucket.allow(now) for now in times] == expected


def test_input_policy_allows_its_burst_then_its_rate() -> None:
    bucket = TokenBucket(EVENTS_PER_SECOND, EVENT_BURST, now=0.0)
    assert all(bucket.allow(0.0) for _ in range(EVENT_BURST))
    assert not bucket.allow(0.0)
    allowed = sum(bucket.allow(n / 1000) for n in range(1, 1001))  # a 1 kHz flood for 1 s
    assert allowed == EVENTS_PER_SECOND
