"""Run settings: job files (TOML), command-line flags and the environment, merged in that order."""

from __future__ import annotations

import codecs
import ipaddress
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from batchgen.errors import ConfigError
from batchgen.models import DEFAULT_MODEL_ID
from batchgen.paths import shown

JOBFILE_SUFFIX = ".toml"
_PATH_KEYS = ("sheet", "db", "download", "output", "log_file", "models_dir")


@dataclass(kw_only=True)
class RunConfig:
    """Everything one command needs to know about a batch."""

    sheet: Path
    sheet_name: str | None = None
    db: str | None = None
    model: str = DEFAULT_MODEL_ID
    base_url: str | None = None
    output: Path | None = None
    concurrency: int = 4
    retry_failed: bool = False
    retry_cancelled: bool = False
    resubmit_unknown: bool = False
    strict: bool = False
    max_cost: float | None = None
    download: Path | None = None
    job_timeout: float = 1800.0
    give_up_after: float = 300.0  # seconds without an answer from the API before the run stops
    cancel_on_exit: bool = False
    rate: float | None = None
    log_file: Path | None = None
    columns: dict[str, str] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    models_dir: Path | None = None
    prices: dict[str, Any] = field(default_factory=dict)  # model id or alias -> $ per second
    header_row: int | None = None  # 1-based; None: the first row naming the required columns
    ignore: list[str] = field(default_factory=list)  # the team's own headers, never inputs
    encoding: str | None = None  # a CSV's encoding; None: detected
    include_hidden: bool = False  # run hidden rows too (by default they are set aside)
    jobfile: Path | None = None

    @property
    def api_base_url(self) -> str:
        """`--base-url`, else RUNCOMFY_BASE_URL, else RunComfy's."""
        # here, not at the top: `status`, `check` and `report` read config but never the API,
        # so they must not import the HTTP client
        from batchgen.client import DEFAULT_BASE_URL

        return (self.base_url or os.environ.get("RUNCOMFY_BASE_URL") or DEFAULT_BASE_URL).rstrip(
            "/"
        )


_KEYS = {f.name for f in fields(RunConfig)} - {"jobfile"}


def is_jobfile(path: str | Path) -> bool:
    """True when the path names a TOML job file rather than a sheet."""
    return str(path).lower().endswith(JOBFILE_SUFFIX)


def load_jobfile(path: Path) -> dict[str, Any]:
    """Read a job file into RunConfig keys, with paths made relative to the file."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{shown(path)}: no such job file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{shown(path)}: cannot read the job file ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{shown(path)}: not valid TOML ({exc})") from None
    data = {key.replace("-", "_"): value for key, value in data.items()}
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise ConfigError(f"{shown(path)}: unknown key(s) {', '.join(unknown)}")
    if "sheet" not in data:
        raise ConfigError(f'{shown(path)}: the job file needs a `sheet = "..."` line')
    for key in ("columns", "defaults", "prices"):
        if key in data and not isinstance(data[key], dict):
            raise ConfigError(f"{shown(path)}: [{key}] must be a table")
    for key in _PATH_KEYS:
        value = data.get(key)
        if isinstance(value, str) and value and not (key == "db" and "://" in value):
            data[key] = str((path.parent / value).expanduser())
    return data


def build_config(target: str | Path, **flags: Any) -> RunConfig:
    """A RunConfig from a sheet or job file plus flags; a flag set to None means "not given"."""
    values: dict[str, Any] = {}
    jobfile = None
    if is_jobfile(target):
        jobfile = Path(target)
        values.update(load_jobfile(jobfile))
    else:
        values["sheet"] = str(target)
    for key, value in flags.items():
        if key == "ignore" and value:  # the command line's names join the job file's
            values["ignore"] = [*_as_list(values.get("ignore")), *value]
        elif key != "ignore" and value is not None and key in _KEYS:
            values[key] = value
    try:
        config = RunConfig(
            sheet=Path(values.pop("sheet")),
            jobfile=jobfile,
            **{k: v for k, v in values.items() if k in _KEYS},
        )
    except TypeError as exc:
        raise ConfigError(f"bad settings: {exc}") from None
    _check(config)
    if config.base_url is not None:
        given = flags.get("base_url") is not None or jobfile is None
        source = "--base-url" if given else f"base_url in {jobfile}"
        config.base_url = check_base_url(config.base_url, source)
    elif os.environ.get("RUNCOMFY_BASE_URL"):
        check_base_url(os.environ["RUNCOMFY_BASE_URL"], "$RUNCOMFY_BASE_URL")
    return config


def check_base_url(url: object, source: str) -> str:
    """The API base URL without a trailing slash, or a ConfigError naming `source` and the rule.

    The token goes with every request, so the URL needs a scheme and a host, and https
    unless the host is this machine (plain http elsewhere would send the token in clear).
    """
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(f"{source} must be a URL such as https://model-api.runcomfy.net")
    text = url.strip()
    if any(c.isspace() or not c.isprintable() for c in text):
        raise ConfigError(f"{source} {text!r}: a URL holds no spaces or control characters")
    if "://" not in text:
        host = _hostname("//" + text)
        scheme = "http" if host and _is_loopback(host) else "https"
        raise ConfigError(
            f"{source} {text} has no scheme (https://, or http:// for this machine): "
            f"did you mean {scheme}://{text}?"
        )
    try:
        parts = urlsplit(text)
    except ValueError as exc:  # e.g. an unclosed [ of an IPv6 address
        raise ConfigError(f"{source} {text}: not a URL ({exc})") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ConfigError(
            f"{source} {text}: the scheme must be https:// (or http:// for this machine), "
            f"not {parts.scheme}://"
        )
    host = parts.hostname
    if not host:
        raise ConfigError(f"{source} {text}: no host (e.g. https://model-api.runcomfy.net)")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise ConfigError(f"{source} {text}: the port must be a number from 1 to 65535")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(
            f"{source}: the URL must not hold a user name or password (the API token is "
            "sent in a header)"
        )
    if parts.query or parts.fragment:
        raise ConfigError(f"{source} {text}: a base URL has no query (?...) or fragment (#...)")
    if parts.scheme.lower() == "http" and not _is_loopback(host):
        raise ConfigError(
            f"{source} {text}: plain http:// would send the API token in clear to {host}; "
            "use https:// (http:// is allowed only for this machine: localhost, "
            "127.0.0.0/8, ::1)"
        )
    return text.rstrip("/")


def _hostname(url: str) -> str | None:
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None


def _is_loopback(host: str) -> bool:
    """Whether `host` names this machine: localhost, 127.0.0.0/8 or ::1."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check(config: RunConfig) -> None:
    if config.models_dir is not None:
        config.models_dir = Path(config.models_dir).expanduser().resolve()
    if not isinstance(config.model, str) or not config.model.strip("| "):
        raise ConfigError(
            f"model must name one model or several separated by '|', not {config.model!r}"
        )
    for name in ("output", "download", "log_file"):
        value = getattr(config, name)
        if value is not None:
            # absolute, so paths recorded in the ledger work from any folder
            setattr(config, name, Path(value).expanduser().resolve())
    if not isinstance(config.concurrency, int) or config.concurrency < 1:
        raise ConfigError(
            f"concurrency must be a whole number of at least 1, not {config.concurrency!r}"
        )
    if config.max_cost is not None and float(config.max_cost) < 0:
        raise ConfigError("max_cost must not be negative")
    if config.rate is not None and float(config.rate) <= 0:
        raise ConfigError("rate must be above 0 requests per second")
    if config.job_timeout <= 0:
        raise ConfigError("job_timeout must be above 0 seconds")
    if not isinstance(config.give_up_after, int | float) or config.give_up_after <= 0:
        raise ConfigError(f"give_up_after must be above 0 seconds, not {config.give_up_after!r}")
    _check_sheet_reading(config)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _check_sheet_reading(config: RunConfig) -> None:
    """header_row, ignore, include_hidden and encoding: how the sheet is read."""
    row = config.header_row
    if row is not None and (isinstance(row, bool) or not isinstance(row, int) or row < 1):
        raise ConfigError(f"header_row must be a row number of at least 1, not {row!r}")
    if isinstance(config.ignore, str):
        config.ignore = [config.ignore]
    if not isinstance(config.ignore, list | tuple) or not all(
        isinstance(name, str) for name in config.ignore
    ):
        raise ConfigError('ignore must be a list of header names, e.g. ignore = ["Status"]')
    config.ignore = list(config.ignore)
    if not isinstance(config.include_hidden, bool):
        raise ConfigError(f"include_hidden must be true or false, not {config.include_hidden!r}")
    if config.encoding is not None:
        try:
            config.encoding = codecs.lookup(str(config.encoding)).name
        except LookupError:
            raise ConfigError(
                f"unknown encoding {config.encoding!r} (e.g. utf-8, cp1252, cp1251, shift_jis)"
            ) from None
