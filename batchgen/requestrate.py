"""The pace of every API call: `--rate`, and the provider's request rate learned from its 429s.

Nothing is paced before the first 429. A 429 pauses every call for its Retry-After (whole
seconds, a fraction or an HTTP-date; half a second when the provider sends none), and sets
the pace from the calls the provider accepted lately. From then on every 429 of a call we
sent knowing of the one before is a measurement: a token bucket is empty at both 429s, so
the calls it accepted between them are what it refilled over that span (fewer if it filled
up meanwhile: the measure errs low, and probing makes up for it). Calls are paced just under
the measured rate; while they wait for the pace and no 429 comes, the pace probes above it
(slowly, then faster and faster), so a limit raised mid-run is found and used. A probe that
finds no more room waits twice as long before the next one, so a run at a steady limit
meets few 429s.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import anyio

MIN_RATE = 0.5  # calls a second: the learned rate never goes below this
CUT = 0.9  # after a 429 calls are paced at CUT * the limit, so the bucket refills a little,
SETTLE = 0.97  # ... and a second later at SETTLE * the limit, where they stay a while
PROBE_AFTER = 4.0  # seconds at the settled pace (with calls waiting for it) before probing
PROBE_AFTER_MAX = 32.0  # ... doubled by every probe that found no more room, up to this
PROBE_UP = 5.0  # seconds from SETTLE * the limit up to it, then
PROBE_GROWTH = 1.2  # ... this factor a second above it
FIRST_GROWTH = 2.0  # a first guess from a handful of calls is probed at once, doubling a second
MEASURE_CALLS = 8  # accepted calls behind a measurement of the rate
MEASURE_SPAN = 1.0  # ... and seconds between its two 429s
MOSTLY_PRESSED = 0.25  # ... of which at most this share with no call waiting for the pace
RAISED = 1.1  # a probe's 429 after calls accepted this much above the limit: there was room
PAUSE_SLACK = 1.05  # a 429's pause is this share of its Retry-After, plus 5 ms
DEFAULT_PAUSE = 0.5  # seconds every call waits after a 429 without Retry-After
MAX_PAUSE = 30.0
PRESSED_FOR = 0.5  # seconds (or two slots of the pace, if longer) that a wait counts as binding
RECENT = 1.0  # seconds of accepted calls behind the first estimate
HISTORY = 4096  # accepted calls remembered, for what a probe found
JOBS_LIMITED = 6  # 429s of submits in a row, no check refused, while this many checks
# passed: the provider limits jobs in its queue, not calls


@dataclass
class _Since:
    """What happened since the last 429 of a call sent knowing of the one before."""

    at: float  # when that 429 came
    accepted: int  # the running count of accepted calls then
    slack: float = 0.0  # seconds since, outside pauses, that no call waited for the pace


class RequestRate:
    """The pace of every API call: at most `hard` (--rate) and at most what the provider takes."""

    def __init__(self, hard: float | None = None) -> None:
        self.hard = hard if hard and hard > 0 else None
        self.limit: float | None = None  # the provider's rate as last estimated
        self.refused = 0  # 429 answers seen
        self.measured = 0  # times the limit was measured between two 429s
        self.on_jobs_limited: Callable[[], None] | None = None  # 429s on submits alone
        self._accepted = 0  # calls answered, not with 429 (a running count)
        self._answers: deque[float] = deque(maxlen=HISTORY)  # when the last calls were accepted
        self._last = float("-inf")  # when the last paced call left
        self._turn = anyio.Lock()  # made lazily by anyio: safe outside a running loop
        self._pause_until = 0.0
        self._since: _Since | None = None  # None before the first 429
        self._heard = float("-inf")  # when the last 429 of a call sent knowing the one before came
        self._sure = False  # whether the limit rests on enough calls (else probe at once)
        self._set_at = 0.0  # when the limit was last set
        self._pressed_at = float("-inf")  # last time a call waited for its slot
        self._probe = 0.0  # seconds, since the limit was set, with calls waiting for the pace
        self._probe_after = PROBE_AFTER
        self._burst = 0  # calls accepted in the second before the first 429: the bucket's size
        self._crossed: float | None = None  # when a probe passed the limit
        self._submits_refused = 0  # 429s of submits in a row (their echoes left out) ...
        self._checks_passed = 0  # ... and the checks that passed meanwhile

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
        return time.monotonic() - self._pressed_at < self._press_window()

    def _press_window(self) -> float:
        # at a slow pace the waits are a slot apart: a fixed window would never see two
        rate = self.rate
        return max(PRESSED_FOR, 2.0 / rate) if rate else PRESSED_FOR

    def _share(self) -> float:
        """The pace as a share of the limit: under it after a 429, above it while probing."""
        if not self._sure:  # a guess from a handful of calls: find the limit soon
            return float(SETTLE * FIRST_GROWTH**self._probe)
        since = time.monotonic() - self._set_at
        if since < 1.0:
            return CUT + (SETTLE - CUT) * since
        # probe above only while the pace binds (an idle run learns nothing by probing): up
        # to the limit slowly, then beyond it faster and faster, so a raised limit is found
        s = self._probe - self._probe_after
        if s <= 0:
            return SETTLE
        if s < PROBE_UP:
            return SETTLE + (1.0 - SETTLE) * s / PROBE_UP
        return float(PROBE_GROWTH ** (s - PROBE_UP))

    def _learned(self) -> float | None:
        if self.limit is None:
            return None
        return max(MIN_RATE, self.limit * self._share())

    async def acquire(self) -> float:
        """Wait until a call may leave: after any pause, and at the pace, first come first out.

        Returns the moment (time.monotonic) it left, for refused_call.
        """
        now = time.monotonic()
        if self.rate is None and now >= self._pause_until and not self._turn.locked():
            return now
        # one caller at a time waits for the next slot, the others for their turn; the slot
        # is worked out anew after every wait, so a slower pace or a pause applies at once
        async with self._turn:
            waited = False
            while True:
                now = time.monotonic()
                rate = self.rate
                start = max(self._pause_until, self._last + 1.0 / rate if rate else 0.0)
                if start <= now:
                    break
                waited = True
                self._press(now)
                await anyio.sleep(start - now)
            if not waited and rate and self._since is not None:
                # the pace did not bind: the provider's bucket may have filled meanwhile
                self._since.slack += max(0.0, now - start)
            # the slot's own time, not the wake-up's: oversleeping must not slow the pace down
            self._last = start if rate and now - start < 1.0 / rate else now
            return now

    def _press(self, now: float) -> None:
        """Count time spent with calls waiting for the pace (it makes the probe advance)."""
        if now - self._pressed_at < self._press_window() and self.limit is not None:
            self._probe += max(0.0, now - max(self._pressed_at, self._probe_from()))
            if self._crossed is None and self._share() > 1.0:
                self._crossed = now
        self._pressed_at = now

    def _probe_from(self) -> float:
        # a measured limit settles for a second before its probe clock runs
        return self._set_at + (1.0 if self._sure else 0.0)

    def accepted_call(self, kind: str) -> None:
        """A call of this kind was answered, not with 429."""
        self._accepted += 1
        if kind != "submit":
            self._checks_passed += 1
        self._answers.append(time.monotonic())

    def refused_call(self, kind: str, retry_after: float | None, sent: float | None = None) -> None:
        """A call that left at `sent` was answered 429: pause every call, and learn the rate."""
        now = time.monotonic()
        self.refused += 1
        told = DEFAULT_PAUSE if retry_after is None else min(max(retry_after, 0.0), MAX_PAUSE)
        # a little longer than told: a call that arrives a hair early is refused again
        self._pause_until = max(self._pause_until, now + told * PAUSE_SLACK + 0.005)
        if kind != "submit":
            self._submits_refused = 0
        since = self._since
        if since is not None and sent is not None and sent < self._heard:
            return  # it left before the last 429 came back: that one said it all
        self._heard = now
        if kind == "submit":
            if not self._submits_refused:
                self._checks_passed = 0
            self._submits_refused += 1
        if since is None:
            # the calls of the last second: the bucket's burst and a second's refill, at most
            self._burst = self._recent_count(now)
            self._set_limit(max(1, self._burst) / RECENT, now, sure=self._burst >= MEASURE_CALLS)
        elif self._submits_refused >= JOBS_LIMITED and self._checks_passed >= JOBS_LIMITED:
            # only submits refused while checks went through: a limit on jobs, not calls
            self._submits_refused = 0
            if self.on_jobs_limited is not None:
                self.on_jobs_limited()
            if not self.measured:
                self.limit = None  # the first estimate took it for a limit on calls
        elif not self._learn(since, now):
            return  # too soon to measure: the next 429 measures from the same start
        self._since = _Since(now, self._accepted)

    def _learn(self, since: _Since, now: float) -> bool:
        """A 429 of a call sent at our pace: the pace was above the provider's rate.

        False if it came too soon after the last to measure anything (the pace only steps
        back, and the next 429 measures from the same start).
        """
        limit = self.limit
        calls, span = self._accepted - since.accepted, now - since.at
        enough = span >= MEASURE_SPAN and calls >= MEASURE_CALLS
        measured = calls / span if enough and since.slack <= MOSTLY_PRESSED * span else None
        if limit is not None and self._crossed is not None:
            # refused while probing above the limit: how fast did the bucket refill?
            found = self._found(now, since.at)
            if found > RAISED * limit:
                self._probe_after = PROBE_AFTER
                self._set_limit(found, now, sure=True)
            elif self._sure:  # no room above: back under the limit, and probe less often
                self._probe_after = min(2 * self._probe_after, PROBE_AFTER_MAX)
                self._set_limit(limit, now, sure=True)
            else:  # the first guess was about right
                self._set_limit(measured or limit, now, sure=True)
            return True
        if limit is None:  # the 429s were taken for a limit on jobs, till now
            guess = max(1, self._recent_count(now)) / RECENT
            self._set_limit(measured or guess, now, sure=measured is not None)
            return True
        # refused under the limit: it is lower than we thought
        pace = limit * self._share()
        if not enough:
            self._set_limit(limit, now, sure=self._sure)
            return False
        self._set_limit(min(measured, pace) if measured else 0.85 * pace, now, sure=True)
        if measured:
            self.measured += 1
        return True

    def _recent_count(self, now: float) -> int:
        """Calls accepted in the last RECENT seconds."""
        count = 0
        for when in reversed(self._answers):
            if now - when > RECENT:
                break
            count += 1
        return count

    def _found(self, now: float, since: float) -> float:
        """The least rate that explains the calls accepted since `since` with a 429 now.

        The bucket is empty now and held at most its burst at any time before, so over the
        last w seconds it accepted at most burst + rate * w calls; the tightest w of a
        second or more gives the rate.
        """
        best = 0.0
        for count, when in enumerate(reversed(self._answers), start=1):
            if when < since:
                break
            if now - when >= MEASURE_SPAN:
                best = max(best, (count - self._burst) / (now - when))
        return best

    def _set_limit(self, limit: float, now: float, *, sure: bool) -> None:
        self.limit = max(MIN_RATE / CUT, limit)
        self._sure = sure
        self._set_at = now
        self._probe = 0.0
        self._crossed = None
