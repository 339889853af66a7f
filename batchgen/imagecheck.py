"""`check --images`: fetch each distinct image once and check it against the model's rules."""

from __future__ import annotations

from dataclasses import dataclass

import anyio
from PIL import ImageFile

from batchgen.client import stream_prefix
from batchgen.errors import ApiError
from batchgen.models import ModelSpec
from batchgen.specs import SheetPlan

MAX_HEADER_BYTES = 4 << 20  # give up looking for the image size after 4 MB
CONCURRENT_FETCHES = 8


@dataclass
class ImageProblem:
    """One image that breaks a rule, and every row that uses it in that column."""

    url: str
    column: str
    message: str
    rows: list[int]
    model: str = ""  # the model's name when the sheet runs several

    def __str__(self) -> str:
        """`image URL is 200x200 px; ... (column 'first_frame_image_url', rows 2, 5)`."""
        shown = ", ".join(map(str, self.rows[:10])) + (" …" if len(self.rows) > 10 else "")
        count = f"; {len(self.rows)} rows" if len(self.rows) > 10 else ""
        where = f"row {shown}" if len(self.rows) == 1 else f"rows {shown}{count}"
        model = f", model {self.model}" if self.model else ""
        return f"image {self.url} {self.message} ({where}, column {self.column!r}{model})"


@dataclass
class ImageFacts:
    """What one fetch learned about an image."""

    width: int | None = None
    height: int | None = None
    size: int | None = None
    error: str | None = None


async def _probe(url: str) -> ImageFacts:
    parser = ImageFile.Parser()
    seen = 0
    facts = ImageFacts()

    def feed(chunk: bytes) -> bool:
        nonlocal seen
        seen += len(chunk)
        try:
            parser.feed(chunk)
        except Exception:
            facts.error = "is not an image Pillow can read"
            return True
        if parser.image is not None:
            facts.width, facts.height = parser.image.size
            return True
        return seen >= MAX_HEADER_BYTES

    try:
        facts.size = await stream_prefix(url, feed)
    except ApiError as exc:
        facts.error = f"could not be fetched: {exc}"
    if facts.width is None and facts.error is None:
        facts.error = "is not a recognisable image"
    return facts


def _rules(facts: ImageFacts, rules: dict[str, float]) -> list[str]:
    if facts.error:
        return [facts.error]
    width, height = facts.width or 0, facts.height or 0
    out = []
    low, high = rules.get("min_side"), rules.get("max_side")
    if low and min(width, height) < low:
        out.append(f"is {width}x{height} px; each side must be at least {low:g} px")
    if high and max(width, height) > high:
        out.append(f"is {width}x{height} px; each side must be at most {high:g} px")
    aspect = width / height if height else 0
    if rules.get("min_aspect") and not rules["min_aspect"] <= aspect <= rules.get(
        "max_aspect", 1e9
    ):
        out.append(
            f"has width/height {aspect:.2f}; it must be between {rules['min_aspect']:g} "
            f"and {rules.get('max_aspect', 0):g}"
        )
    limit = rules.get("max_bytes")
    if limit and facts.size is not None and facts.size > limit:
        out.append(f"is {facts.size / 1e6:.1f} MB; the limit is {limit / (1 << 20):.0f} MB")
    return out


def check_images(plan: SheetPlan, model: ModelSpec | None = None) -> list[ImageProblem]:
    """Problems with the images of every valid job (by its model's rules): each distinct URL
    fetched once, and each problem reported once with every row that shares it."""
    models = dict(plan.models)
    if model is not None:
        models.setdefault(model.model_id, model)
    targets: dict[tuple[str, str, str], list[int]] = {}  # (url, field, model id) -> rows
    for job in plan.jobs:
        job_model = models.get(job.model_id)
        if job_model is None:
            continue
        for spec in job_model.fields.values():
            url = job.payload.get(spec.name)
            if not spec.image or not url:
                continue
            rows = targets.setdefault((url, spec.name, job_model.model_id), [])
            if job.row not in rows:
                rows.append(job.row)
    facts = anyio.run(_probe_all, list(dict.fromkeys(url for url, _, _ in targets)))
    problems = []
    for (url, name, model_id), rows in targets.items():
        job_model = models[model_id]
        who = job_model.name if plan.multi_model else ""
        for message in _rules(facts[url], job_model.fields[name].image):
            problems.append(ImageProblem(url, name, message, sorted(rows), who))
    return sorted(problems, key=lambda p: (p.rows[0], p.url))


async def _probe_all(urls: list[str]) -> dict[str, ImageFacts]:
    results: dict[str, ImageFacts] = {}
    limit = anyio.Semaphore(CONCURRENT_FETCHES)

    async def one(url: str) -> None:
        async with limit:
            results[url] = await _probe(url)

    async with anyio.create_task_group() as tg:
        for url in urls:
            tg.start_soon(one, url)
    return results
