"""A self-contained HTML page of a batch: one card per job, with its video, filterable by status."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from html import escape
from pathlib import Path
from string import Template
from typing import Any
from urllib.parse import quote, urlparse

from batchgen import report
from batchgen.errors import ConfigError
from batchgen.htmlcompare import compare_section
from batchgen.ledger import JobRecord
from batchgen.models import FieldSpec, get_model
from batchgen.specs import JobSpec, Problem, SheetPlan

# Filter buttons in this order; any other state found in the ledger is appended after them.
STATUS_ORDER = (
    "completed",
    "failed",
    "invalid",
    "unknown",
    "pending",
    "in_queue",
    "in_progress",
    "cancelled",
)
# Model inputs shown on a card, with the name the card shows.
PARAMS = (
    ("ratio", "ratio"),
    ("resolution", "resolution"),
    ("duration", "duration"),
    ("generate_audio", "audio"),
    ("camera_fixed", "camera_fixed"),
)
_RATIO = re.compile(r"^(\d+):(\d+)$")
_SCRIPT = re.compile(r"<script>(.*?)</script>", re.S)


@dataclass(frozen=True)
class _Card:
    """One card's sort position, status and HTML."""

    row: int
    order: int
    status: str
    html: str
    has_video: bool


def _template() -> str:
    return (Path(__file__).parent / "assets" / "report.html.tmpl").read_text(encoding="utf-8")


def _csp(template: str) -> str:
    """A policy that runs only the page's own script, so an escaping slip cannot run code."""
    match = _SCRIPT.search(template)
    if match is None:  # a broken install, not a user error
        raise RuntimeError("the report template has no <script>")
    digest = base64.b64encode(hashlib.sha256(match.group(1).encode("utf-8")).digest()).decode()
    return (
        "default-src 'none'; style-src 'unsafe-inline'; "
        f"script-src 'sha256-{digest}'; media-src http: https: file:; "
        "base-uri 'none'; form-action 'none'"
    )


def _web_url(value: str | None) -> str | None:
    """`value` if it is an absolute http(s) URL, else None (never javascript:, data:, ...)."""
    if not value:
        return None
    parsed = urlparse(value.strip())
    if parsed.scheme.lower() in ("http", "https") and parsed.netloc:
        return value.strip()
    return None


def _local_url(path: str, folder: Path) -> str:
    """A downloaded file as a URL relative to `folder`, else as a file:// URI."""
    # download_path is stored as the run was given it; a relative one is relative to its cwd.
    target = Path(path).absolute()
    try:
        relative = os.path.relpath(target, folder)
    except ValueError:  # another drive on Windows: no relative path exists
        return target.as_uri()
    # quoting ':' too means no file name can ever read as a URL scheme
    return quote(relative.replace(os.sep, "/"), safe="/")


def video_src(record: JobRecord | None, folder: Path) -> str | None:
    """Where a card's video comes from: the downloaded file if present, else the result URL."""
    if record is None:
        return None
    remote = _web_url(record.video_url)
    if record.download_path:
        downloaded = Path(record.download_path).absolute()
        # a file deleted or moved since the run would show a dead player; the URL may still work
        if downloaded.is_file() or remote is None:
            return _local_url(record.download_path, folder)
    return remote


def _fields(model_id: str) -> dict[str, FieldSpec]:
    try:
        return get_model(model_id).fields
    except ConfigError:  # a model this version has no data file for: show no defaults
        return {}


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _params(job: JobSpec) -> str:
    fields = _fields(job.model_id)
    items = []
    for name, shown in PARAMS:
        if name in job.payload:
            value, css = job.payload[name], ""
        elif name in fields and fields[name].default is not None:
            value, css = fields[name].default, ' class="default" title="model default"'
        else:
            continue
        text = _show(value) + (" s" if name == "duration" else "")
        items.append(f"<div><dt>{escape(shown)}</dt><dd{css}>{escape(text)}</dd></div>")
    if job.take > 1:
        items.append(f"<div><dt>take</dt><dd>{job.take}</dd></div>")
    return f'<dl class="params">{"".join(items)}</dl>'


def _start_frame(job: JobSpec) -> object:
    """The job's start-frame image, whatever its model calls the field."""
    try:
        field = get_model(job.model_id).roles.get("image", "first_frame_image_url")
    except ConfigError:  # a user's own model: its file is not at hand here
        field = "first_frame_image_url"
    return job.payload.get(field)


def _aspect(job: JobSpec) -> str:
    match = _RATIO.match(str(job.payload.get("ratio", "")))
    return f' style="aspect-ratio: auto {match[1]} / {match[2]}"' if match else ""


def _badge(status: str) -> str:
    css = re.sub(r"[^a-z_]", "", status.lower())
    return f'<span class="badge s-{css}">{escape(status)}</span>'


def _head(row: int, status: str, label: str = "") -> str:
    parts = [_badge(status), f'<span class="row">row {row}</span>']
    if label:
        parts.append(f'<span class="label" title="variant">{escape(label)}</span>')
    return f'<div class="head">{"".join(parts)}</div>'


def _job_card(job: JobSpec, record: JobRecord | None, order: int, folder: Path) -> _Card:
    status = report.sheet_status(record.state if record else "pending")
    src = video_src(record, folder)
    parts = [_head(job.row, status, job.label)]  # the label names the model when several
    if src:
        parts.append(
            f'<video controls preload="metadata" playsinline src="{escape(src)}"'
            f"{_aspect(job)}></video>"
        )
    else:
        parts.append(f'<div class="novideo">no video ({escape(status)})</div>')
    parts.append(f'<p class="prompt">{escape(str(job.payload.get("prompt", "")))}</p>')
    parts.append(_params(job))
    if record and record.error:
        parts.append(f'<p class="error">{escape(record.error)}</p>')
    links = []
    if src:
        links.append(f'<a href="{escape(src)}">video file</a>')
    image = _web_url(str(_start_frame(job) or ""))
    if image:
        links.append(f'<a href="{escape(image)}" rel="noreferrer">first frame</a>')
    if record and record.request_id:
        links.append(f"request {escape(record.request_id)}")
    if links:
        parts.append(f'<div class="links">{" · ".join(links)}</div>')
    html = f'<article class="card" data-status="{escape(status)}">{"".join(parts)}</article>'
    return _Card(job.row, order, status, html, bool(src))


def _invalid_card(row: int, problems: list[Problem]) -> _Card:
    items = "".join(f"<li>{escape(p.column)}: {escape(p.message)}</li>" for p in problems)
    html = (
        f'<article class="card" data-status="invalid">{_head(row, "invalid")}'
        f'<div class="novideo">not submitted: the row is invalid</div>'
        f'<ul class="problems">{items}</ul></article>'
    )
    return _Card(row, 0, "invalid", html, False)


def _buttons(counts: Mapping[str, int]) -> str:
    present = [s for s in STATUS_ORDER if counts.get(s)]
    present += sorted(s for s in counts if counts[s] and s not in STATUS_ORDER)
    total = sum(counts.values())
    rows = [("all", "All", total)] + [(s, s, counts[s]) for s in present]
    return "\n".join(
        f'<button type="button" data-filter="{escape(key)}" aria-pressed="false">'
        f'{escape(text)}<span class="n">{n}</span></button>'
        for key, text, n in rows
    )


def _summary(plan: SheetPlan, outcome: report.Outcome, when: datetime) -> str:
    stamp = when.strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    parts = [
        f"{plan.row_count} rows",
        f"{outcome.jobs} jobs",
        f"estimated spend <b>${outcome.estimated_spend:.2f}</b>",
    ]
    if outcome.actual_cost:
        parts.append(f"billed ${outcome.actual_cost:.2f}")
    parts.append(f'generated <time datetime="{when.isoformat()}">{escape(stamp)}</time>')
    return " · ".join(parts)


def render_html(
    *,
    title: str,
    plan: SheetPlan,
    records: Mapping[str, JobRecord],
    folder: Path,
    generated_at: datetime | None = None,
    compare: bool = True,
) -> str:
    """The report page as text; video paths are made relative to `folder`.

    With `compare` and a sheet of several models, a table lays the rows against the models.
    """
    when = generated_at or datetime.now()
    if when.tzinfo is None:  # a naive time is taken as local time, and labelled with its zone
        when = when.astimezone()
    folder = folder.absolute()
    cards = [_job_card(job, records.get(job.key), i, folder) for i, job in enumerate(plan.jobs)]
    cards += [_invalid_card(row, problems) for row, problems in plan.invalid.items()]
    cards.sort(key=lambda card: (card.row, card.order))
    outcome = report.outcome(plan, records)
    compared, compared_videos = (
        compare_section(plan, records, folder, video_src) if compare else ("", 0)
    )
    template = _template()
    return Template(template).substitute(
        csp=escape(_csp(template)),
        title=escape(title),
        summary=_summary(plan, outcome, when),
        buttons=_buttons(outcome.counts),
        compare=compared,
        cards="\n".join(card.html for card in cards),
        videos=sum(card.has_video for card in cards) + compared_videos,
    )


def render_report(
    *,
    title: str,
    plan: SheetPlan,
    records: Mapping[str, JobRecord],
    out: Path,
    generated_at: datetime | None = None,
    compare: bool = True,
) -> Path:
    """Write the report page to `out` atomically and return its path."""
    out = Path(out)
    page = render_html(
        title=title,
        plan=plan,
        records=records,
        folder=out.parent,
        generated_at=generated_at,
        compare=compare,
    )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        # keep the mode of a report being replaced; mkstemp's 0600 would hide a shared one
        mode = out.stat().st_mode & 0o777 if out.is_file() else 0o644
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    except OSError as exc:
        raise ConfigError(f"cannot write the report {out}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(page)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, out)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise ConfigError(f"cannot write the report {out}: {exc.strerror or exc}") from exc
        raise
    return out
