"""`ftwiz data`: check a dataset before any model loads; exit 0 when usable, 2 when not."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ftwiz.core.errors import UserError


def _tokenizer_source(model: str) -> str:
    """A local directory as given; a catalog name becomes its Hub id (the catalog holds no tokenizers)."""
    from ftwiz.core.models import load_catalog_manifest

    if Path(model).expanduser().exists():
        return model
    try:
        return load_catalog_manifest(model).get("hub_id") or model
    except UserError:
        return model


def local_tokenizer(model: str):
    """The model's tokenizer when it is on this machine (a model directory, or the Hub cache), else
    None: `ftwiz plan` then counts words x1.3 and says so. Never reaches the network."""
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(_tokenizer_source(model), local_files_only=True)
    except Exception:  # noqa: BLE001 - no tokenizer here: the word-count estimate, labelled as one
        return None


def _load_tokenizer(model: str):
    """The tokenizer of a local model directory, or of a Hub model (cache first, then the Hub)."""
    from transformers import AutoTokenizer

    from ftwiz.core.hub import hub_reachable

    tokenizer = local_tokenizer(model)
    if tokenizer is not None:
        return tokenizer
    source = _tokenizer_source(model)
    where = f" ({source})" if source != model else ""
    if Path(source).expanduser().exists() or not hub_reachable():
        missing = "no tokenizer files in this directory" if Path(source).expanduser().exists() else (
            "its tokenizer is not in the Hub cache and the Hub is unreachable (offline)")
        raise UserError(f"--model: {model}{where}: {missing}; give a model directory holding "
                        f"tokenizer.json, or leave --model out for a word-count estimate")
    try:
        return AutoTokenizer.from_pretrained(source)
    except Exception as exc:  # noqa: BLE001 - gated, unknown id, no tokenizer: the user's input, not a bug
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"--model: {model}{where}: could not load its tokenizer ({reason})") from None


@click.command()
@click.argument("source")
@click.option("--model", "model", default=None, help="Model dir (or Hub id) whose tokenizer counts tokens.")
@click.option("--subset", default=None, help="Hub dataset configuration name.")
@click.option("--split", default="train", show_default=True, help="Hub dataset split.")
@click.option("--format", "fmt", default="auto", show_default=True,
              help="auto, alpaca, chat, sharegpt, prompt_completion or text.")
@click.option("--max-length", type=click.IntRange(min=1), default=1024, show_default=True,
              help="Training max_length: how many rows it would truncate.")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True, help="Problems to list.")
@click.option("--example/--no-example", default=True, show_default=True, help="Show one rendered example.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--drop-invalid", "drop_to", type=click.Path(dir_okay=False, path_type=Path), default=None,
              metavar="OUT.jsonl", help="Write the usable rows to OUT.jsonl and count the rest by reason.")
def data(source, model, subset, split, fmt, max_length, limit, example, as_json, drop_to):
    """Check SOURCE (JSONL/JSON/CSV/Parquet file or Hub dataset id): format, problems, token lengths."""
    from ftwiz.core.data import prepare_tokenizer, render_example, validate

    if drop_to is not None:
        _check_output(drop_to, source)
    tokenizer = _load_tokenizer(model) if model else None
    notes = prepare_tokenizer(tokenizer) if tokenizer is not None else []
    report = validate(source, subset, split, format=fmt, tokenizer=tokenizer, max_length=max_length, limit=limit,
                      drop_invalid=drop_to is not None)
    report.notes += notes
    if drop_to is not None and report.ok:
        _write_rows(drop_to, report.kept)
    rendered = None
    if example and report.ok:
        from ftwiz.core.data import load_rows

        first = report.kept[0].data if report.kept else load_rows(source, subset, split, max_rows=1).rows[0].data
        rendered = render_example(first, tokenizer, format=report.format, max_length=max_length)
    if as_json:
        out = report.to_dict()
        out["example"] = rendered.to_dict() if rendered else None
        out["written"] = str(drop_to) if drop_to is not None and report.ok else None
        click.echo(json.dumps(out, indent=2, ensure_ascii=False))
    else:
        _print_report(report, rendered)
        if drop_to is not None and report.ok:
            click.echo(f"wrote {len(report.kept):,} usable row{'' if len(report.kept) == 1 else 's'} to {drop_to}")
    if not report.ok:
        # A UserError is how cli/main.py turns "not usable" into exit code 2 (after the report).
        where = "in the JSON report" if as_json else "listed above"
        raise UserError(f"{report.source}: not usable for training ({report.problems_total} problem(s) {where})")


def _check_output(out: Path, source: str) -> None:
    """--drop-invalid's file: never the source, never over an existing file (nothing is lost)."""
    if out.suffix.lower() not in (".jsonl", ".ndjson"):
        raise UserError(f"--drop-invalid: {out}: name a .jsonl file (one row per line)")
    if out.exists():
        same = Path(source).expanduser().exists() and out.resolve() == Path(source).expanduser().resolve()
        raise UserError(f"--drop-invalid: {out}: " + ("is the file being checked" if same else "already exists")
                        + "; give a new file name")
    if not out.parent.is_dir():
        raise UserError(f"--drop-invalid: {out}: folder {out.parent} does not exist")


def _write_rows(out: Path, rows) -> None:
    """The rows as JSON lines, written to a temporary file first so a failure leaves nothing half-written."""
    partial = out.with_name(out.name + ".partial")
    try:
        with open(partial, "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row.data, ensure_ascii=False) + "\n")
        partial.replace(out)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise UserError(f"--drop-invalid: {out}: could not write it ({exc.strerror or exc})") from None


def _print_report(report, rendered) -> None:
    verdict = "usable" if report.ok else "NOT usable"
    if report.drop_invalid and report.ok:
        verdict = f"{len(report.kept):,} usable"
    click.echo(f"{report.source}: {report.format or 'unknown format'}, {report.rows} row{'' if report.rows == 1 else 's'}: {verdict}")
    if report.drop_invalid and report.dropped:
        click.echo(f"dropped {report.dropped_total:,} bad rows or lines:")
        for line in report.dropped_lines():
            click.echo(f"  {line}")
    stats = report.stats
    if stats:
        truncated = (
            f"; {stats['truncated_share']:.1%} longer than max_length {stats['max_length']}"
            if stats["truncated_share"] is not None
            else ""
        )
        click.echo(
            f"lengths in {stats['token_counter']}: p50 {stats['p50']}, p95 {stats['p95']}, max {stats['max']}"
            f"{truncated}; suggested max_length {stats['suggested_max_length']}"
        )
    for note in report.notes:
        click.echo(f"note: {note}")
    if report.problems_total:
        click.echo(f"{report.problems_total} problem(s):")
        for line in report.problem_lines():
            click.echo(f"  {line}")
    if rendered is not None:
        click.echo("first example as the model sees it ([...] = no loss):")
        click.echo("".join(s.text if s.trains else f"[{s.text}]" for s in rendered.spans) if rendered.spans else rendered.text)
