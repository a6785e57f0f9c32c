"""`tunesmith data inspect | clean | mix | split | version | diff`: thin wrappers over tunesmith.data."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from tunesmith.errors import TunesmithError

console = Console()


def _fail(exc: TunesmithError) -> None:
    Console(stderr=True).print(f"[bold red]error:[/] {exc}", highlight=False)
    raise SystemExit(2) from exc


def _write_json(data: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _summary_table(result: dict) -> Table:
    t = Table(title=f"{result['file']}  ({result['format']}, {result['rows']} rows)", show_header=False)
    d, a = result["duplicates"], result["answers"]
    t.add_row("skipped rows", f"{result['rows_skipped']} {result['skip_reasons'] or ''}")
    t.add_row("roles", ", ".join(f"{k} {v}" for k, v in result["roles"].items()))
    for role, p in result["lengths"].items():
        if p.get("n"):
            t.add_row(f"{role} {result['length_unit']}", f"p50 {p['p50']:.0f}  p90 {p['p90']:.0f}  p99 {p['p99']:.0f}  max {p['max']}")
    t.add_row("duplicates", f"exact {d['exact']} ({d['exact_rate']:.1%}), near {d['near']} ({d['near_rate']:.1%})")
    t.add_row("answers", f"empty {a['empty']}, truncated {a['truncated']} ({a['truncated_rate']:.1%}), refusals {a['refusals']} ({a['refusal_rate']:.1%})")
    t.add_row("languages", ", ".join(f"{k} {v}" for k, v in list(result["languages"].items())[:6]))
    t.add_row("task types", ", ".join(f"{k} {v}" for k, v in list(result["tasks"].items())[:8]) + f"  (entropy {result['task_entropy_bits']:.2f} bits)")
    if "preference" in result:
        p = result["preference"]
        t.add_row("preference", f"chosen longer in {p['chosen_longer_rate']:.1%}; mean chosen {p['chosen_mean']} vs rejected {p['rejected_mean']}")
    return t


def inspect(
    file: Path = typer.Argument(..., help="data file (JSONL, JSON, Parquet or CSV)"),
    model: str = typer.Option("smollm2-135m-instruct", "--model", "-m", help="model whose tokenizer counts tokens"),
    no_tokenizer: bool = typer.Option(False, "--no-tokenizer", help="count whitespace words instead of tokens (fast)"),
    fmt: str = typer.Option("auto", "--format", "-f", help="record format (auto, alpaca, sharegpt, messages, prompt_completion, preference, text)"),
    json_out: Path | None = typer.Option(None, "--json", help="JSON report path (default FILE.inspect.json)"),
    html_out: Path | None = typer.Option(None, "--html", help="HTML report path (default FILE.inspect.html)"),
) -> None:
    """Rows, lengths, duplicates, answer problems, task diversity: a report before training."""
    from tunesmith.data.inspect import inspect_file, write_html

    try:
        tokenizer = None
        if not no_tokenizer:
            from tunesmith.models.load import load_tokenizer

            tokenizer = load_tokenizer(model)
        result = inspect_file(file, tokenizer, fmt)
    except TunesmithError as exc:
        _fail(exc)
    json_out = json_out or Path(f"{file}.inspect.json")
    html_out = html_out or Path(f"{file}.inspect.html")
    _write_json({k: v for k, v in result.items() if k != "row_lengths"}, json_out)
    write_html(result, html_out)
    console.print(_summary_table(result))
    console.print(f"JSON report: {json_out}\nHTML report: {html_out}", highlight=False)


def clean(
    file: Path = typer.Argument(..., help="data file to clean"),
    out: Path = typer.Option(..., "--out", "-o", help="cleaned JSONL output"),
    recipe: Path | None = typer.Option(None, "--recipe", "-r", help="YAML recipe (default: every stage with defaults)"),
) -> None:
    """Normalise, deduplicate, filter and redact; removed rows go to OUT.removed.jsonl with the reason."""
    from tunesmith.data.clean.pipeline import clean_file, load_recipe, side_paths

    try:
        stats = clean_file(file, out, load_recipe(recipe))
    except TunesmithError as exc:
        _fail(exc)
    t = Table("stage", "removed", "changed", "reasons", title=f"{stats['rows_in']} rows in, {stats['rows_out']} out")
    for s in stats["stages"]:
        t.add_row(s["name"], str(s["removed"]), str(s["changed"]), ", ".join(f"{k} {v}" for k, v in s["reasons"].items()))
    console.print(t)
    if stats["rows_skipped"]:
        console.print(f"[yellow]{stats['rows_skipped']} unreadable rows skipped:[/] {stats['skip_reasons']}")
    paths = side_paths(out)
    console.print(f"kept: {out}\nremoved: {paths['removed']}\nstats: {paths['stats']}  ({stats['seconds']} s)", highlight=False)


def mix(
    sources: list[Path] = typer.Argument(..., help="source data files"),
    out: Path = typer.Option(..., "--out", "-o", help="mixed JSONL output"),
    size: int | None = typer.Option(None, "--size", "-n", help="rows in the output (default: all sources' rows)"),
    alpha: float = typer.Option(1.0, "--alpha", help="temperature: P(i) ∝ n_i^alpha (1 natural, 0.5-0.7 lifts small sources)"),
    weights: str | None = typer.Option(None, "--weights", help="explicit weights, comma separated, one per source"),
    seed: int = typer.Option(0, "--seed"),
    balance_field: str | None = typer.Option(None, "--balance-by", help="field whose categories are balanced"),
    balance_mode: str = typer.Option("down", "--balance", help="down (sample to the smallest) or up (repeat to the largest)"),
    source_field: str | None = typer.Option(None, "--source-field", help="add this field naming each row's source file"),
) -> None:
    """Combine sources by temperature sampling or weights; a seed gives the same output."""
    from tunesmith.data.mixing import mix_files

    try:
        w = [float(x) for x in weights.split(",")] if weights else None
    except ValueError:
        _fail(TunesmithError(f"--weights must be numbers separated by commas, got {weights!r}"))
    try:
        report = mix_files(sources, out, size, alpha, w, seed, balance_field, balance_mode, source_field)
    except TunesmithError as exc:
        _fail(exc)
    t = Table("source", "rows", "P", "taken", title=f"{report['rows']} rows -> {out}")
    for s in report["sources"]:
        t.add_row(s["path"], str(s["rows"]), f"{s['probability']:.3f}", str(s["taken"]) + (" (repeated)" if s["repeated"] else ""))
    console.print(t)
    if report["balance"]:
        console.print(f"balanced by {balance_field}: {report['balance']['categories']}", highlight=False)


def split(
    file: Path = typer.Argument(..., help="data file to split"),
    out_dir: Path = typer.Option(..., "--out-dir", "-o", help="folder for train/val/test.jsonl"),
    fractions: str = typer.Option("0.9,0.05,0.05", "--fractions", help="train,val,test fractions"),
    seed: int = typer.Option(0, "--seed"),
    no_group: bool = typer.Option(False, "--no-group", help="do not keep near-duplicates in the same split"),
    threshold: float = typer.Option(0.8, "--threshold", help="Jaccard threshold for grouping near-duplicates"),
    eval_files: list[Path] = typer.Option([], "--eval", "-e", help="evaluation file to decontaminate against (repeatable)"),
    ngram: int = typer.Option(13, "--ngram", help="n-gram size of the overlap test"),
    minhash: float | None = typer.Option(None, "--minhash", help="also remove rows with MinHash Jaccard >= this to an eval row"),
) -> None:
    """Train/val/test split; near-duplicates never straddle splits; eval overlap removed and reported."""
    from tunesmith.data.splitting import split_file

    try:
        parts = [float(x) for x in fractions.split(",")]
        if len(parts) != 3:
            raise ValueError
    except ValueError:
        _fail(TunesmithError(f"--fractions must be three numbers like 0.8,0.1,0.1, got {fractions!r}"))
    try:
        report = split_file(file, out_dir, dict(zip(("train", "val", "test"), parts)), seed, not no_group, threshold,
                            eval_files=list(eval_files), ngram=ngram, minhash_threshold=minhash)
    except TunesmithError as exc:
        _fail(exc)
    console.print(f"rows: {report['rows']}  near-duplicate groups: {report['grouping']['groups_with_near_duplicates']}  "
                  f"contaminated removed: {report['decontamination']['removed']}\nfiles: {report['files']}", highlight=False)


def version(
    file: Path = typer.Argument(..., help="data file"),
    parents: list[Path] = typer.Option([], "--parent", "-p", help="file this one was made from (repeatable)"),
) -> None:
    """Write FILE.manifest.json: content hash, rows, schema, parents."""
    from tunesmith.data.versioning import manifest_path, write_manifest

    try:
        m = write_manifest(file, parents=list(parents))
    except TunesmithError as exc:
        _fail(exc)
    console.print(f"version {m['version']}  {m['rows']} rows  format {m['format']}  fields {', '.join(m['schema'])}\n"
                  f"manifest: {manifest_path(file)}", highlight=False)


def diff(
    a: Path = typer.Argument(..., help="older file"),
    b: Path = typer.Argument(..., help="newer file"),
    json_out: Path | None = typer.Option(None, "--json", help="also write the diff as JSON"),
) -> None:
    """Rows added, removed and changed from A to B, and field changes."""
    from tunesmith.data.versioning import diff_files

    try:
        d = diff_files(a, b)
    except TunesmithError as exc:
        _fail(exc)
    if json_out:
        _write_json(d, json_out)
    console.print(f"{d['a']['rows']} -> {d['b']['rows']} rows: +{d['added']} added, -{d['removed']} removed, "
                  f"~{d['changed']} changed, {d['unchanged']} unchanged", highlight=False)
    if d["changed_fields"]:
        console.print(f"changed fields: {d['changed_fields']}", highlight=False)
    if d["fields_added"] or d["fields_removed"]:
        console.print(f"fields added: {d['fields_added']}  removed: {d['fields_removed']}", highlight=False)


def register(data_app: typer.Typer) -> None:
    """Add the data-quality verbs to `tunesmith data`."""
    for fn in (inspect, clean, mix, split, version, diff):
        data_app.command(name=fn.__name__)(fn)
