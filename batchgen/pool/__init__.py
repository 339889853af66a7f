"""The anyio worker pool: submit with a write-ahead ledger, follow each job, stop cleanly.

`_base` holds the options, events and shared state; `_submitting` the feed, claim and POST;
`_following` the polls, results and downloads; `_cancelling` what `batchgen cancel` asks of a
run in progress; `_lifecycle` the run, signals and the stop.
"""

from batchgen.pool._base import IN_FLIGHT, EngineOptions, Events
from batchgen.pool._cancelling import CancelHooks
from batchgen.pool._lifecycle import Pool

__all__ = ["IN_FLIGHT", "CancelHooks", "EngineOptions", "Events", "Pool"]
