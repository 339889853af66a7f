"""The retry policy of calls that are safe to repeat, and a switch that turns it off for tests."""

from __future__ import annotations

import random
from dataclasses import dataclass

# set_testing's state: (on, attempts); a module global like stamina's, since the policy is
# chosen deep inside the runner where a test cannot reach it
_TESTING: list[tuple[bool, int]] = [(False, 1)]


def set_testing(on: bool, *, attempts: int = 1) -> None:
    """With `on`, every policy makes at most `attempts` tries and never waits between them."""
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    _TESTING[0] = (on, attempts)


def is_testing() -> bool:
    """Whether set_testing turned retries off."""
    return _TESTING[0][0]


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, honouring a server's Retry-After (capped)."""

    attempts: int = 6
    base: float = 0.25
    cap: float = 20.0

    def attempt_count(self) -> int:
        """How many tries a call gets (set_testing may lower it)."""
        on, most = _TESTING[0]
        return min(self.attempts, most) if on else self.attempts

    def wait(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number `attempt` (1-based)."""
        if is_testing():
            return 0.0
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.cap)
        return random.uniform(0, min(self.cap, self.base * 2 ** (attempt - 1)))


NO_RETRY = RetryPolicy(attempts=1)
