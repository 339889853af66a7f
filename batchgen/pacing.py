"""When to poll and how many jobs to keep in flight: adaptive to what the provider shows."""

from __future__ import annotations

import time
from bisect import insort
from dataclasses import dataclass, field

MIN_DELAY = 0.1
MAX_DELAY = 30.0
_WINDOW = 200  # durations remembered


@dataclass
class PollClock:
    """Learns job durations and provider capacity, and says when to look at a job next."""

    durations: list[float] = field(default_factory=list)
    _recent: list[float] = field(default_factory=list)
    running_peak: int = 0

    def observe_duration(self, seconds: float) -> None:
        """Record how long a finished job ran (first seen running → seen done)."""
        seconds = max(seconds, 0.0)
        self._recent.append(seconds)
        insort(self.durations, seconds)
        if len(self._recent) > _WINDOW:
            old = self._recent.pop(0)
            self.durations.remove(old)

    def observe_running(self, count: int) -> None:
        """Record how many of our jobs the provider runs at once."""
        self.running_peak = max(self.running_peak, count)

    def quantile(self, q: float) -> float | None:
        """The q-quantile of observed durations, or None before any were seen."""
        if not self.durations:
            return None
        index = min(len(self.durations) - 1, max(0, int(q * len(self.durations))))
        return self.durations[index]

    def next_delay(
        self, *, state: str, polls: int, elapsed: float, queue_position: int | None = None
    ) -> float:
        """Seconds until the next status call for a job in `state`.

        `elapsed` is time since the job was seen running (or since submit while queued),
        `polls` how many status calls it has had without a change of state.
        """
        median = self.quantile(0.5)
        if median is None:
            # nothing learned yet: a gentle exponential from the floor
            return _clamp(0.25 * 1.6**polls)
        if state == "in_queue":
            slots = max(self.running_peak, 1)
            ahead = (queue_position if queue_position is not None else slots) + 1
            wait = ahead / slots * median
            return _clamp(max(wait * 0.8, median * 0.25) * 1.3**polls)
        low, high = self.quantile(0.1) or median, self.quantile(0.9) or median
        if elapsed < low:
            return _clamp(low - elapsed + 0.02)
        spread = max(high - low, median * 0.1)
        # past the usual finish: look again in steps that grow if the job keeps running
        return _clamp(spread * 0.2 * 1.5**polls)


def _clamp(seconds: float) -> float:
    return min(max(seconds, MIN_DELAY), MAX_DELAY)


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
