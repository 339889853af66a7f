"""The simulated provider's shape: how long its jobs run and how many calls a second it takes."""

from __future__ import annotations

import math
import random
import time
from email.utils import formatdate

from batchgen.simulator._types import (
    DISTRIBUTIONS,
    EXCLUSIVE_KINDS,
    RETRY_AFTER_FORMATS,
    SimulatorConfig,
)

MAX_JOB_SECONDS = 3600.0  # a lognormal draw is cut here, so no job runs for days


def check_config(config: SimulatorConfig) -> None:
    """A ValueError naming the setting when durations, limits or fault rates make no sense."""
    if config.durations not in DISTRIBUTIONS:
        raise ValueError(f"durations must be one of {', '.join(DISTRIBUTIONS)}")
    if not 0 <= config.min_duration <= config.max_duration:
        raise ValueError("durations must satisfy 0 <= min_duration <= max_duration")
    if config.median_duration < 0 or config.duration_sigma < 0:
        raise ValueError("median_duration and duration_sigma must not be negative")
    if not 0 <= config.long_share <= 1 or config.long_factor < 0:
        raise ValueError("long_share must be within 0..1 and long_factor not negative")
    if config.retry_after_format not in RETRY_AFTER_FORMATS:
        raise ValueError(f"retry_after_format must be one of {', '.join(RETRY_AFTER_FORMATS)}")
    for name in ("rate_limit", "rate_burst"):
        value = getattr(config, name)
        if value is not None and value <= 0:
            raise ValueError(f"{name} must be above 0")
    faults = config.faults
    if sum(getattr(faults, kind) for kind in EXCLUSIVE_KINDS) > 1 + 1e-9:
        raise ValueError("the fault rates of the kinds other than slow add up to more than 1")


def draw_duration(rng: random.Random, config: SimulatorConfig) -> float:
    """Seconds one job runs, drawn from the configured distribution."""
    kind = config.durations
    if kind == "lognormal":
        if config.median_duration <= 0:
            return 0.0
        seconds = rng.lognormvariate(math.log(config.median_duration), config.duration_sigma)
        return min(seconds, MAX_JOB_SECONDS)
    seconds = rng.uniform(config.min_duration, config.max_duration)
    # the share's number is drawn whatever the share, so a seed gives the same short jobs
    if kind == "mixture" and rng.random() < config.long_share:
        seconds *= config.long_factor
    return seconds


class TokenBucket:
    """At most `rate` calls a second on average and `burst` at once; tokens refill continuously."""

    def __init__(self) -> None:
        self._tokens: float | None = None  # None: full (the bucket is made on first use)
        self._stamp = 0.0
        self._rate: float | None = None

    def take(self, now: float, rate: float | None, burst: float | None) -> float | None:
        """Take a token for a call at `now`; None if allowed, else seconds until one is free.

        The rate and burst are passed on every call, so a change takes effect at once (the
        tokens already in the bucket are kept, up to the new burst).
        """
        if rate is None or rate <= 0:
            self._tokens = None
            return None
        size = max(1.0, rate if burst is None else burst)
        if self._tokens is None:
            self._tokens, self._stamp = size, now
        elapsed = max(0.0, now - self._stamp)
        self._tokens = min(size, self._tokens + elapsed * (self._rate or rate))
        self._stamp, self._rate = now, rate
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return None
        return (1.0 - self._tokens) / rate


def retry_after_header(wait: float, form: str) -> tuple[tuple[str, str], ...]:
    """The Retry-After header (if any) of a 429 whose call may pass in `wait` seconds."""
    if form == "none":
        return ()
    if form == "fractional":
        value = f"{max(wait, 0.001):.3f}"
    elif form == "date":
        # an HTTP-date counts whole seconds: the first one at which a call may pass
        value = formatdate(math.ceil(time.time() + wait), usegmt=True)
    else:
        value = str(max(1, math.ceil(wait)))  # delay-seconds: a whole number, never early
    return (("Retry-After", value),)
