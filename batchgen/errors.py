"""The one exception tree of batchgen; the CLI maps it to messages and exit codes.

BatchgenError
├── ConfigError            bad flags, job file, token missing, unknown model, unsafe base URL
│   └── EndpointError      a submit reached something that is not the Model API (exit 2)
├── SheetError             unreadable, empty or malformed sheet
│   └── SheetInUseError    open in LibreOffice or Excel (exit 75)
├── LedgerError            ledger cannot be opened or migrated
│   ├── LedgerLostError    the ledger file was deleted or replaced during a run (exit 1)
│   └── SheetLockedError   another run holds this sheet (exit 75)
└── ApiError               something the Model API said or did
    ├── ApiTransientError  worth retrying: 5xx, 429, timeouts, dropped connections
    │   └── SubmitUncertainError  a submit may have created a job; never retried
    └── ApiPermanentError  retrying will not help
        ├── AuthError      401/403: the token is missing or rejected (exit 2)
        ├── BalanceError   402 or error_code 400002: out of credit
        └── NotFoundError  404: unknown or expired request_id, or one the API never gives
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_JOBS_FAILED = 1
EXIT_CANNOT_START = 2
EXIT_LOCKED = 75
EXIT_SIGINT = 130
EXIT_SIGTERM = 143


class BatchgenError(Exception):
    """Base of every error batchgen raises on purpose."""

    exit_code: int = EXIT_CANNOT_START


class ConfigError(BatchgenError):
    """Bad command-line options, job file, environment or model id."""


class EndpointError(ConfigError):
    """The base URL leads elsewhere: a submit got a redirect, or a 404/405 naming no job."""

    def __init__(self, message: str, *, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


class SheetError(BatchgenError):
    """The sheet cannot be read or has the wrong shape."""


class SheetChangedError(SheetError):
    """The sheet file on disk is not the one loaded (a person saved it): nothing was written."""


class SheetInUseError(SheetError):
    """An office program holds the sheet open (its lock file is beside it): exit 75."""

    exit_code = EXIT_LOCKED


class LedgerError(BatchgenError):
    """The ledger cannot be opened, migrated or written."""


class LedgerLostError(LedgerError):
    """The SQLite ledger's file was deleted or replaced while a run was writing to it."""

    exit_code = EXIT_JOBS_FAILED  # jobs may have been paid for; the sheet shows them


class SheetLockedError(LedgerError):
    """Another live run holds the lock on this sheet."""

    exit_code = EXIT_LOCKED


class ApiError(BatchgenError):
    """The Model API answered with an error or could not be reached."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        error_code: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error_code = error_code
        self.retry_after = retry_after


class ApiTransientError(ApiError):
    """A failure that may pass: 5xx, 429, timeouts, dropped connections, bad JSON."""


class SubmitUncertainError(ApiTransientError):
    """A submit failed after the server may have read it: a job may exist."""


class ApiPermanentError(ApiError):
    """A failure that retrying will not fix."""


class AuthError(ApiPermanentError):
    """The API token is missing or was rejected (401/403)."""


class BalanceError(ApiPermanentError):
    """The account has no credit left (402 or error_code 400002)."""


class NotFoundError(ApiPermanentError):
    """The request_id is unknown to the API or has expired (404), or is not one it gives."""
