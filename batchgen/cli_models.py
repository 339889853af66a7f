"""`batchgen models [ID]`: the models a sheet can name, and one model's inputs and rules."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from batchgen.models import FieldSpec, ModelSpec, load_catalog

MODELS_DIR_HELP = "Also read model files (*.json) from DIR; they add or override shipped ones."


def _rule(spec: FieldSpec) -> str:
    """One input's rule in a few words."""
    if spec.type == "enum":
        rule = "one of " + ", ".join(spec.values)
    elif spec.type in ("integer", "number"):
        low = "" if spec.minimum is None else f"{spec.minimum:g}"
        high = "" if spec.maximum is None else f"{spec.maximum:g}"
        rule = f"{'whole number' if spec.type == 'integer' else 'number'} {low}–{high}".rstrip("–")
    elif spec.type == "url":
        rule = "web link (https://...)"
    elif spec.type == "boolean":
        rule = "yes/no"
    else:
        rule = "text"
    if spec.soft_max_length:
        rule += f" (best under {spec.soft_max_length} characters)"
    if spec.image:
        image = spec.image
        rule += (
            f"; image {image.get('min_side', 0):g}–{image.get('max_side', 0):g} px a side"
            if image.get("min_side")
            else ""
        )
    if spec.multi:
        rule += "; several with |"
    return rule


def _summary(model: ModelSpec) -> dict[str, Any]:
    return {
        "id": model.model_id,
        "alias": model.alias,
        "kind": model.kind,
        "required_roles": model.required_roles,
        "price_per_second": model.price_per_second(),
        "source": "shipped" if model.shipped else model.path,
    }


def _detail(model: ModelSpec) -> dict[str, Any]:
    inputs = []
    for name, spec in model.fields.items():
        inputs.append(
            {
                "field": name,
                "role": model.role_of(name),
                "type": spec.type,
                "required": spec.required,
                "default": spec.default,
                "rule": _rule(spec),
            }
        )
    return _summary(model) | {
        "title": model.title,
        "inputs": inputs,
        "pricing": model.pricing or None,
        "schema_page": model.source.get("url"),
        "read_on": model.source.get("read_on"),
        "notes": model.source.get("notes"),
        "file": model.path,
    }


@click.command(name="models", short_help="List the models a sheet can name, or show one.")
@click.argument("model_name", metavar="[ID_OR_ALIAS]", required=False)
@click.option("--models-dir", type=click.Path(path_type=Path), default=None, help=MODELS_DIR_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def models_command(model_name: str | None, models_dir: Path | None, as_json: bool) -> None:
    """List the models a sheet can name, or show one model's inputs and rules."""
    catalog = load_catalog(models_dir)
    if model_name:
        model = catalog.get(model_name)
        if as_json:
            click.echo(json.dumps(_detail(model), indent=2, ensure_ascii=False))
            return
        _print_detail(model)
        return
    rows = [_summary(m) for m in catalog]
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    headers = ("id", "alias", "kind", "required", "price", "from")
    table = [
        (
            r["id"],
            r["alias"],
            r["kind"],
            ", ".join(r["required_roles"]),
            r["price_per_second"],
            r["source"],
        )
        for r in rows
    ]
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *table, strict=True)]
    for line in (headers, *table):
        click.echo("  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)).rstrip())


def _print_detail(model: ModelSpec) -> None:
    detail = _detail(model)
    click.echo(f"{model.model_id}  ({model.alias or 'no alias'}, {model.kind}) {model.title}")
    click.echo(f"price: {detail['price_per_second']}")
    if model.pricing.get("note"):
        click.echo(f"  {model.pricing['note']}")
    click.echo(f"schema read from: {detail['schema_page']} on {detail['read_on']}")
    if detail["notes"]:
        click.echo(f"  {detail['notes']}")
    click.echo(f"file: {model.path}")
    click.echo("inputs (a sheet column may be named by the role or the field):")
    for item in detail["inputs"]:
        role = item["role"] or "-"
        need = (
            "required"
            if item["required"]
            else (f"default {item['default']}" if item["default"] is not None else "optional")
        )
        click.echo(f"  {role:<16} {item['field']:<24} {need:<16} {item['rule']}")


COMMANDS = (models_command,)
