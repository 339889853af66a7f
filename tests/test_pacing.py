"""The poll clock: where it places checks for jobs of very different lengths."""

from __future__ import annotations

import pytest

from batchgen.pacing import MAX_DELAY, MIN_DELAY, MIN_FLOOR, PollClock


def learned_clock(turnarounds: list[float]) -> PollClock:
    """A clock that saw these submit → finish times, with nothing left to submit."""
    clock = PollClock(draining=True)
    for seconds in turnarounds:
        clock.observe(seconds)
    return clock


def test_before_anything_is_learned_checks_keep_the_floor_of_a_tenth_of_a_second() -> None:
    clock = PollClock()
    assert clock.floor == MIN_DELAY
    assert clock.next_delay(state="in_queue", age=0.0, checks=0, probe=True) == MIN_DELAY


@pytest.mark.parametrize(
    ("typical", "floor"),
    [(60.0, MIN_DELAY), (1.0, MIN_DELAY), (0.2, 0.02), (0.002, MIN_FLOOR), (0.0, MIN_FLOOR)],
)
def test_the_floor_is_a_tenth_of_the_typical_turnaround_within_its_bounds(
    typical: float, floor: float
) -> None:
    clock = learned_clock([typical] * 10)
    assert clock.floor == pytest.approx(floor)
    # a job just submitted is first checked where jobs like it finish, or at the floor
    first = clock.next_delay(state="in_queue", age=0.0, checks=0)
    assert first == pytest.approx(min(MAX_DELAY, max(typical, floor)))


def test_a_job_older_than_any_seen_is_checked_no_more_often_than_the_floor() -> None:
    clock = learned_clock([0.9, 1.0, 1.1, 1.0, 0.95, 1.05])
    delays = [clock.next_delay(state="in_progress", age=5.0, checks=n) for n in range(10)]
    assert min(delays) >= MIN_DELAY
    quick = learned_clock([0.004, 0.005, 0.006, 0.005, 0.005])
    delays = [quick.next_delay(state="in_progress", age=1.0, checks=n) for n in range(10)]
    assert min(delays) >= MIN_FLOOR


def test_quick_finishers_do_not_make_a_long_job_checked_every_few_ms() -> None:
    # five jobs rejected 50 ms after their submit, then a job that runs for a minute
    for draining in (False, True):
        clock = PollClock(draining=draining)
        for _ in range(5):
            clock.observe(0.05)
        age, checks = 0.0, 0
        while age < 60.0:
            age += clock.next_delay(state="in_progress", age=age, checks=checks)
            checks += 1
        # a fixed 0.1 s floor made it 600; a floor of 10% of 50 ms alone, 12,000
        assert checks < 400, (draining, checks)
