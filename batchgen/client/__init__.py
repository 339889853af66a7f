"""The only httpx code: the Model API client, its answers, its retries and media downloads."""

from batchgen.client.answers import (
    FINAL_STATUSES,
    JobStatus,
    Submitted,
    normalise_status,
)
from batchgen.client.api import (
    DEFAULT_BASE_URL,
    DEFAULT_TIMEOUT,
    ApiClient,
    check_token,
    is_request_id,
    token_from_env,
)
from batchgen.client.media import MediaClient, stream_prefix
from batchgen.client.retry import NO_RETRY, RetryPolicy, set_testing
from batchgen.errors import ApiError

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_TIMEOUT",
    "FINAL_STATUSES",
    "NO_RETRY",
    "ApiClient",
    "ApiError",
    "JobStatus",
    "MediaClient",
    "RetryPolicy",
    "Submitted",
    "check_token",
    "is_request_id",
    "normalise_status",
    "set_testing",
    "stream_prefix",
    "token_from_env",
]
