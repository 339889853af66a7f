"""The report's comparison: one row per sheet row, one column per model, each cell its video."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from html import escape
from pathlib import Path

from batchgen import report
from batchgen.ledger import JobRecord
from batchgen.models import ModelSpec
from batchgen.specs import JobSpec, Problem, SheetPlan

_RATIO = re.compile(r"^(\d+):(\d+)$")
_NONE = '<span class="none" title="the row does not name this model">—</span>'
VideoSource = Callable[[JobRecord | None, Path], str | None]


def models_of(plan: SheetPlan) -> list[ModelSpec]:
    """The plan's models in the order the sheet first names them."""
    ids = list(dict.fromkeys(job.model_id for job in plan.jobs))
    return [plan.models[i] for i in ids if i in plan.models]


def _took(record: JobRecord | None) -> str:
    """How long the job took from submit to finish, as a person reads it."""
    if record is None or not record.submitted_at or not record.finished_at:
        return ""
    seconds = max(0.0, record.finished_at - record.submitted_at)
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"


def _cost(job: JobSpec, record: JobRecord | None) -> str:
    if record is not None and record.cost is not None:
        return f"${record.cost:.2f} billed"
    if job.estimated_cost is None:
        return "price unknown"
    return f"${job.estimated_cost:.2f} est."


def _variant(job: JobSpec) -> str:
    """The job's label without the model's name (the column already says it)."""
    return job.label.removeprefix(job.model_name).lstrip(", ")


def _one(job: JobSpec, record: JobRecord | None, folder: Path, src: str | None) -> str:
    status = report.sheet_status(record.state if record else "pending")
    css = re.sub(r"[^a-z_]", "", status.lower())
    if src:
        match = _RATIO.match(str(job.payload.get("ratio", job.payload.get("aspect_ratio", ""))))
        aspect = f' style="aspect-ratio: auto {match[1]} / {match[2]}"' if match else ""
        media = (
            f'<video controls preload="metadata" playsinline src="{escape(src)}"{aspect}></video>'
        )
    else:
        media = f'<div class="novideo">no video ({escape(status)})</div>'
    facts = [f'<span class="badge s-{css}">{escape(status)}</span>']
    variant = _variant(job)
    if variant:
        facts.append(f'<span class="label">{escape(variant)}</span>')
    facts.append(f'<span class="cost">{escape(_cost(job, record))}</span>')
    took = _took(record)
    if took:
        facts.append(f'<span class="took" title="submitted to finished">{escape(took)}</span>')
    error = f'<p class="error">{escape(record.error)}</p>' if record and record.error else ""
    return (
        f'<figure class="take" data-status="{escape(status)}">{media}'
        f"<figcaption>{' '.join(facts)}</figcaption>{error}</figure>"
    )


def _invalid(problems: list[Problem]) -> str:
    items = "".join(f"<li>{escape(p.column)}: {escape(p.message)}</li>" for p in problems)
    return (
        '<figure class="take" data-status="invalid"><div class="novideo">not submitted</div>'
        f'<figcaption><span class="badge s-invalid">invalid</span></figcaption>'
        f'<ul class="problems">{items}</ul></figure>'
    )


def compare_section(
    plan: SheetPlan,
    records: Mapping[str, JobRecord],
    folder: Path,
    video_src: VideoSource,
) -> tuple[str, int]:
    """The comparison table's HTML and how many videos it holds ("" when one model)."""
    models = models_of(plan)
    if len(models) < 2:
        return "", 0
    heads = "".join(
        f'<th scope="col" data-model="{escape(m.name)}">{escape(m.name)}'
        f"<small>{escape(m.price_per_second())}</small></th>"
        for m in models
    )
    by_row = plan.jobs_by_row()
    rows = sorted(set(by_row) | set(plan.invalid))
    body = []
    videos = 0
    for row in rows:
        jobs = by_row.get(row, [])
        prompt = str(jobs[0].payload.get("prompt", "")) if jobs else ""
        cells = []
        for model in models:
            parts = []
            for job in (j for j in jobs if j.model_id == model.model_id):
                record = records.get(job.key)
                src = video_src(record, folder)
                videos += bool(src)
                parts.append(_one(job, record, folder, src))
            bad = [p for p in plan.invalid.get(row, []) if p.model in ("", model.name)]
            if bad and not parts:
                parts.append(_invalid(bad))
            inner = "".join(parts) or _NONE
            cells.append(f'<td data-model="{escape(model.name)}">{inner}</td>')
        body.append(
            f'<tr data-row="{row}"><th scope="row">row {row}</th>'
            f'<td class="prompt">{escape(prompt)}</td>{"".join(cells)}</tr>'
        )
    html = (
        '<section class="compare" aria-label="Models side by side">'
        f"<h2>{len(models)} models side by side</h2>"
        '<div class="scroll"><table class="compare"><thead><tr>'
        f'<th scope="col">row</th><th scope="col">prompt</th>{heads}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div></section>"
    )
    return html, videos
