"""When to look at a job next and how many to keep in flight: learned from what the API shows.

A job's first check is placed where most jobs like it have finished (a quantile of recent
turnarounds, submit → finish); later checks walk up that distribution. Queue positions and
the observed completion rate place checks for jobs that are still waiting. Nothing is a
fixed interval, so the same clock serves one-second test jobs and two-minute real ones; even
the least gap between checks is a tenth of the typical turnaround (at most 0.1 s), and grows
with the job's own age.
"""

from __future__ import annotations

import time
from bisect import insort
from collections import deque
from dataclasses import dataclass, field

MIN_DELAY = 0.1  # the least gap between checks, for jobs of a second or more
MIN_FLOOR = 0.005  # ... and for jobs far quicker: 10% of their turnaround, but never less
AGE_GAP = 0.02  # nor closer than this share of the job's own age (see next_delay)
MAX_DELAY = 30.0
_WINDOW = 120  # turnarounds remembered: recent enough to follow a change of load
_LEARNED = 5  # samples before the distribution is trusted
# Quantiles of the turnaround at which a job is checked. While the provider has jobs of ours
# queued, a late check costs nothing (the freed slot goes to one of them), so few checks.
# Otherwise (all our jobs running at once, or nothing left to submit) every late detection
# leaves a slot idle or adds to the run's wall time, so finer steps.
STEADY_STEPS = (0.8, 1.0)
DRAIN_STEPS = (0.35, 0.55, 0.7, 0.82, 0.91, 0.97, 1.0)


@dataclass
class PollClock:
    """Learns turnarounds and the completion rate, and says when to check a job next."""

    draining: bool = False
    _recent: deque[float] = field(default_factory=deque)
    _sorted: list[float] = field(default_factory=list)
    _finishes: deque[float] = field(default_factory=lambda: deque(maxlen=60))
    _queued_seen: float = float("-inf")
    _probes: int = 0

    def observe(self, turnaround: float) -> None:
        """Record a finished job's time from submit to finish, and the finish itself."""
        turnaround = max(turnaround, 0.0)
        self._recent.append(turnaround)
        insort(self._sorted, turnaround)
        if len(self._recent) > _WINDOW:
            self._sorted.remove(self._recent.popleft())
        self._finishes.append(time.monotonic())

    def take_probe(self) -> bool:
        """True for the first few jobs followed before anything is learned (see next_delay)."""
        if self.learned or self._probes >= _LEARNED:
            return False
        self._probes += 1
        return True

    def saw_queued(self) -> None:
        """Record that one of our jobs was waiting in the provider's queue just now."""
        self._queued_seen = time.monotonic()

    @property
    def buffered(self) -> bool:
        """True while the provider lately had jobs of ours waiting: a late check then
        costs nothing, since a finished job's slot goes to one of ours at once."""
        horizon = max(2.0, 6 * self.quantile(0.5))
        return time.monotonic() - self._queued_seen < horizon

    @property
    def learned(self) -> bool:
        """True once enough jobs finished to trust the distribution."""
        return len(self._sorted) >= _LEARNED

    @property
    def floor(self) -> float:
        """The least delay: a tenth of the median turnaround, within MIN_FLOOR..MIN_DELAY.

        A job that takes milliseconds (a cached or instant provider) is not left waiting
        0.1 s, twenty times its run, holding a slot of the concurrency limit meanwhile.
        """
        if not self.learned:
            return MIN_DELAY
        return min(MIN_DELAY, max(MIN_FLOOR, 0.1 * self.quantile(0.5)))

    def quantile(self, q: float) -> float:
        """The q-quantile of recent turnarounds (0 before any were seen)."""
        if not self._sorted:
            return 0.0
        index = min(len(self._sorted) - 1, max(0, round(q * (len(self._sorted) - 1))))
        return self._sorted[index]

    def completion_rate(self) -> float | None:
        """Jobs finished per second recently, or None before two finishes."""
        if len(self._finishes) < 2:
            return None
        span = self._finishes[-1] - self._finishes[0]
        return (len(self._finishes) - 1) / span if span > 0 else None

    def next_delay(
        self,
        *,
        state: str,
        age: float,
        checks: int,
        queue_position: int | None = None,
        probe: bool = False,
    ) -> float:
        """Seconds until the next check of a job `age` seconds after its submit.

        `checks` is how many times this job was looked at already; `state` and
        `queue_position` are what the last look showed. Before anything is learned, a
        `probe` job is checked on a gentle exponential from the floor (so one-second jobs
        teach the clock within a second), the others from 0.25 s (a waiting job is placed
        anew once the clock has learned).
        """
        if not self.learned:
            start = MIN_DELAY if probe else 0.25
            return _clamp(start * 2.0**checks, MIN_DELAY)
        # a job that has run for a minute is not checked every few ms because some jobs
        # (quick rejections, say) finished in milliseconds: its gaps grow with its age
        floor = max(self.floor, AGE_GAP * age)
        rate = self.completion_rate()
        if state == "in_queue" and queue_position is not None and checks > 0 and rate:
            # still waiting: it starts after the jobs ahead of it, then runs at least briefly
            return _clamp((queue_position + 1) / rate + self.quantile(0.05) * 0.5, floor)
        lazy = self.buffered and not self.draining
        steps = STEADY_STEPS if lazy else DRAIN_STEPS
        spread = max(self.quantile(0.9) - self.quantile(0.1), self.quantile(0.5) * 0.2)
        # checks closer together than this learn little and cost a call each
        gap = max(floor, spread * 0.12) if lazy else floor
        for q in steps[min(checks, len(steps) - 1) :]:
            target = self.quantile(q) - age
            if target >= gap:
                return _clamp(target, floor)
        # older than anything seen lately (early in a run the first finishers are the short
        # jobs): steps that grow with its age, finer while draining, when lateness is costly
        if not lazy:
            return _clamp(max(floor, spread * 0.1), floor)
        return _clamp(max(gap, spread * 0.25, age * 0.5), floor)


def _clamp(seconds: float, floor: float) -> float:
    return min(max(seconds, floor), MAX_DELAY)


@dataclass
class InFlightLimit:
    """Concurrency that halves on 429 and creeps back by one per window of successes (AIMD)."""

    ceiling: int
    current: float = 0.0
    _last_cut: float = 0.0

    def __post_init__(self) -> None:
        self.current = float(self.ceiling)

    @property
    def value(self) -> int:
        """The whole number of jobs allowed in flight now."""
        return max(1, int(self.current))

    def rate_limited(self) -> None:
        """Halve, at most once a second so one burst of 429s counts once."""
        now = time.monotonic()
        if now - self._last_cut >= 1.0:
            self.current = max(1.0, self.current / 2)
            self._last_cut = now

    def succeeded(self) -> None:
        """Grow by one per `current` successes."""
        self.current = min(float(self.ceiling), self.current + 1.0 / max(self.current, 1.0))
