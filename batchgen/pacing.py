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
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio

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


# --------------------------------------------------------------------------- the request rate

MIN_RATE = 0.5  # calls a second: the learned rate never goes below this
CUT = 0.9  # on a measured limit L, calls are paced at CUT * L ...
SETTLE = 0.95  # ... and back at SETTLE * L a second later, where they stay a while
PROBE_AFTER = 4.0  # seconds at SETTLE * L (while calls wait for the pace) before probing
PROBE_UP = 5.0  # seconds from SETTLE * L up to L, then
PROBE_GROWTH = 1.2  # ... this factor a second above it
MEASURE_CALLS = 4  # accepted calls between two refusals before their span is trusted
MEASURE_SPAN = 0.1  # ... and seconds between them
PAUSE_SLACK = 1.05  # a 429's pause is this share of its Retry-After, plus 5 ms
EPISODE_GAP = 2.0  # seconds without a 429 that end an episode of refusals
DEFAULT_PAUSE = 0.5  # seconds every call waits after a 429 without Retry-After
MAX_PAUSE = 30.0
PRESSED_FOR = 0.5  # seconds after a call last waited for its slot that the pace counts as binding
RECENT = 1.0  # seconds of accepted calls behind a first estimate of a limit
RAISED = 1.3  # a 429 with calls accepted this much above the limit: the limit was raised


@dataclass
class _Episode:
    """Refusals close together: the provider's bucket was empty at each of them."""

    first: float  # the first refusal's "token time": when the provider said a call would pass
    accepted_at_first: int
    last: float
    any_check: bool  # whether a call other than a submit was refused (a limit on requests)
    check_passed: bool = False  # whether one went through meanwhile (then maybe not)


class RequestRate:
    """The pace of every API call: at most `hard` (--rate) and at most what the provider takes.

    Nothing is paced before the first 429. A 429 pauses every call until its Retry-After, and
    the first one sets the pace from the calls accepted in the last second. Two 429s with
    enough accepted calls between them then measure the provider's rate: a token bucket is
    empty at both, so the calls it accepted between them are its refill over that span (each
    refusal's time shifted by its Retry-After, when the provider says its next token comes).
    Calls are paced just under the measured rate, and after a while probe above it (slowly,
    then faster), so a limit raised mid-run is found and used.
    """

    def __init__(self, hard: float | None = None) -> None:
        self.hard = hard if hard and hard > 0 else None
        self.limit: float | None = None  # the provider's rate as last estimated
        self.refused = 0  # 429 answers seen
        self.measured = 0  # times the limit was measured between two 429s
        self.on_jobs_limited: Callable[[], None] | None = None  # 429s on submits alone
        self._accepted = 0  # calls answered, not with 429 (a running count)
        self._recent: deque[float] = deque()  # when the last RECENT seconds' calls were answered
        self._last = float("-inf")  # when the last paced call left
        self._turn = anyio.Lock()  # made lazily by anyio: safe outside a running loop
        self._pause_until = 0.0
        self._episode: _Episode | None = None
        self._refused_at = 0  # accepted calls at the last 429
        self._cut_at = 0.0
        self._pressed_at = float("-inf")  # last time a call waited for its slot
        self._probe = 0.0  # seconds spent at the settled pace with calls waiting for it
        self._probe_stamp = 0.0

    @property
    def rate(self) -> float | None:
        """Calls a second allowed now (None: no pace)."""
        learned = self._learned()
        if learned is None:
            return self.hard
        return learned if self.hard is None else min(learned, self.hard)

    @property
    def pressed(self) -> bool:
        """True while calls lately had to wait for the pace: the rate, not jobs, is the limit."""
        return time.monotonic() - self._pressed_at < PRESSED_FOR

    def _learned(self) -> float | None:
        limit = self.limit
        if limit is None:
            return None
        since = time.monotonic() - self._cut_at
        if since < 1.0:
            return max(MIN_RATE, limit * (CUT + (SETTLE - CUT) * since))
        # probe above only while the pace binds (an idle run learns nothing by probing): up
        # to the limit slowly, then beyond it faster and faster, so a raised limit is found
        s = self._probe - PROBE_AFTER
        if s <= 0:
            share = SETTLE
        elif s < PROBE_UP:
            share = SETTLE + (1.0 - SETTLE) * s / PROBE_UP
        else:
            share = PROBE_GROWTH ** (s - PROBE_UP)
        return max(MIN_RATE, limit * share)

    async def acquire(self) -> None:
        """Wait until a call may leave: after any pause, and at the pace, first come first out."""
        now = time.monotonic()
        if self.rate is None and now >= self._pause_until and not self._turn.locked():
            return
        # one caller at a time waits for the next slot, the others for their turn; the slot
        # is worked out anew after every wait, so a slower pace or a pause applies at once
        async with self._turn:
            while True:
                now = time.monotonic()
                rate = self.rate
                start = max(self._pause_until, self._last + 1.0 / rate if rate else 0.0)
                if start <= now:
                    break
                self._press(now)
                await anyio.sleep(start - now)
            # the slot's own time, not the wake-up's: oversleeping must not slow the pace down
            self._last = start if rate and now - start < 1.0 / rate else now

    def accepted_call(self, kind: str) -> None:
        """A call of this kind was answered, not with 429."""
        self._accepted += 1
        if kind != "submit" and self._episode is not None:
            self._episode.check_passed = True
        now = time.monotonic()
        accepted = self._recent
        accepted.append(now)
        if now - accepted[0] > RECENT:
            accepted.popleft()

    def _press(self, now: float) -> None:
        """Count time spent with calls waiting for the pace (it makes the probe advance)."""
        if now - self._pressed_at < PRESSED_FOR and self.limit is not None:
            self._probe += max(0.0, now - max(self._probe_stamp, self._cut_at + 1.0))
        self._probe_stamp = now
        self._pressed_at = now

    def refused_call(self, kind: str, retry_after: float | None) -> None:
        """A call was answered 429: pause every call, and estimate the provider's rate."""
        now = time.monotonic()
        self.refused += 1
        told = DEFAULT_PAUSE if retry_after is None else min(max(retry_after, 0.0), MAX_PAUSE)
        token_time = now + told
        # a little longer than told: a call that arrives a hair early is refused again
        self._pause_until = max(self._pause_until, now + told * PAUSE_SLACK + 0.005)
        episode = self._episode
        if episode is None or now - episode.last > EPISODE_GAP:
            self._episode = _Episode(token_time, self._accepted, now, kind != "submit")
            self._refused_at = self._accepted
            estimate = self._recent_rate(now)
            if self.limit is None or estimate > RAISED * self.limit:
                self._set_limit(estimate, now)  # the first limit met, or a raised one
            else:
                self._set_limit(self.limit, now)  # our probe above the limit: back under it
            return
        episode.last = now
        episode.any_check = episode.any_check or kind != "submit"
        calls = self._accepted - episode.accepted_at_first
        span = token_time - episode.first
        if calls < MEASURE_CALLS or span < MEASURE_SPAN:
            if not self.measured and self.limit is not None and self._accepted > self._refused_at:
                # refused again after calls went through at this pace: it is too fast
                self._set_limit(self.limit * 0.75, now)
            self._refused_at = self._accepted
            return
        self._episode = None
        if not episode.any_check and episode.check_passed:
            # only submits refused while checks went through: a limit on jobs, not calls
            if self.on_jobs_limited is not None:
                self.on_jobs_limited()
            if not self.measured:
                self.limit = None  # the first estimate took it for a limit on calls
            return
        self._set_limit(calls / span, now)
        self.measured += 1

    def _recent_rate(self, now: float) -> float:
        """Calls accepted a second lately (a burst inflates it: a measurement corrects that)."""
        accepted = self._recent
        while accepted and now - accepted[0] > RECENT:
            accepted.popleft()
        span = max(0.25, min(RECENT, now - accepted[0])) if accepted else RECENT
        return max(1, len(accepted)) / span

    def _set_limit(self, limit: float, now: float) -> None:
        self.limit = max(MIN_RATE / CUT, limit)
        self._cut_at = now
        self._probe = 0.0
