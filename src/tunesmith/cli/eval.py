"""`tunesmith eval CONFIG` or `tunesmith eval --model M --adapter DIR --suite NAME[=FILE]`: scores, A/B, retention, report."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tunesmith.errors import TunesmithError
from tunesmith.models.load import BUNDLED_ALIAS

console = Console()
err_console = Console(stderr=True)


NEEDS_FILE = ("generation", "multiple_choice", "quickstart_json", "preference")  # ifeval / likelihood / safety / judge: bundled sets


def _adapter_label(adapter: str, taken: set[str]) -> str:
    p = Path(adapter)
    label = p.parent.name if p.name in ("adapter", "model") and p.parent.name else p.name or "adapter"
    base, k = label, 2
    while label in taken:
        label, k = f"{base}-{k}", k + 1
    return label


def shortcut_config(model: str, adapters: list[str], suites: list[str], data: Optional[str], out: str, limit: Optional[int],
                    max_new_tokens: int, batch_size: int, dtype: str, template: str, probes: list[str]) -> dict:
    """The eval config the command-line shortcuts describe: base model + one model per adapter, suites by kind."""
    from tunesmith.evaluation.config import SUITE_KINDS

    models = [{"name": "base", "model": model, "dtype": dtype, "template": template}]
    taken = {"base"}
    for adapter in adapters:
        label = _adapter_label(adapter, taken)
        taken.add(label)
        models.append({"name": label, "model": model, "adapter": adapter, "dtype": dtype, "template": template})
    specs, names = [], set()
    for text in suites:
        kind, _, file = text.partition("=")
        if kind not in SUITE_KINDS:
            raise TunesmithError(f"unknown suite '{kind}': use one of {', '.join(SUITE_KINDS)} (optionally NAME=FILE)")
        name = kind if kind not in names else f"{kind}-{len(names)}"
        names.add(name)
        path = file or (data if kind in NEEDS_FILE else None)
        probe = name in probes or (not probes and kind in ("ifeval", "likelihood") and not path)
        specs.append({"name": name, "kind": kind, "data": path or None, "limit": limit, "probe": probe})
    return {"models": models, "suites": specs, "output_dir": out,
            "generation": {"max_new_tokens": max_new_tokens, "batch_size": batch_size}}


def verdict_table(report: dict) -> Table:
    table = Table(title="A/B verdicts (Holm-corrected)")
    for col in ("comparison", "suite/metric", "A", "B", "verdict"):
        table.add_column(col, justify="left" if col in ("comparison", "suite/metric", "verdict") else "right")
    for comp in report["comparisons"]:
        for suite, body in comp["suites"].items():
            for metric, r in body["metrics"].items():
                table.add_row(f"{comp['b']} vs {comp['a']}", f"{suite}/{metric}", f"{r['mean_a']:.4g}", f"{r['mean_b']:.4g}", escape(r["verdict"]))
        for suite, h in comp.get("head_to_head", {}).items():
            if "error" not in h:
                table.add_row(f"{comp['b']} vs {comp['a']}", f"{suite}/judge head-to-head", "", f"win {h['win_rate']:.3g}",
                              escape(h["verdict"]))
    return table


def retention_table(report: dict) -> Table | None:
    f = report.get("forgetting")
    if not f or not any(rows for probes in f["models"].values() for rows in probes.values()):
        return None
    table = Table(title=f"retention vs {f['baseline']} (flag < {f['threshold']})")
    for col in ("model", "probe/metric", "before", "after", "retention"):
        table.add_column(col)
    for model, probes in f["models"].items():
        for suite, rows in probes.items():
            for r in rows:
                ret = "n/a" if r["retention"] is None else f"{r['retention']:.3f}" + (" [red]FLAG" if r["flagged"] else "")
                table.add_row(model, f"{suite}/{r['metric']}", f"{r['before']:.4g}", f"{r['after']:.4g}", ret)
    return table


def eval_command(
    config: Optional[str] = typer.Argument(None, help="eval YAML (models, suites, generation, compare, forgetting)"),
    model: str = typer.Option(BUNDLED_ALIAS, "--model", "-m", help="base model: HF folder, .gguf file or the bundled alias"),
    adapter: List[str] = typer.Option([], "--adapter", help="adapter folder to compare against the base (repeatable)"),
    suite: List[str] = typer.Option([], "--suite", help="suite kind, optionally KIND=FILE (repeatable): likelihood, multiple_choice, generation, ifeval, quickstart_json, safety, preference (judge needs a config file: it needs a judge)"),
    data: Optional[str] = typer.Option(None, "--data", help="data file for generation / multiple_choice / quickstart_json / preference suites given without =FILE"),
    probe: List[str] = typer.Option([], "--probe", help="suite names used as forgetting probes (default: bundled ifeval / general likelihood)"),
    out: str = typer.Option("runs/eval", "--out", "-o", help="output folder (results.json, report.html, cache/)"),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="evaluate only the first N items of each suite"),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens", min=1, help="longest generated answer"),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="prompts per generation batch"),
    dtype: str = typer.Option("auto", "--dtype", help="auto (bf16 where native, else fp32), bf16 or fp32"),
    template: str = typer.Option("auto", "--template", help="chat template (must match training)"),
    no_cache: bool = typer.Option(False, "--no-cache", help="recompute everything"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress lines"),
) -> None:
    """Evaluate one model or compare several; writes results.json and report.html."""
    from tunesmith.evaluation.config import load_eval_config, parse_config
    from tunesmith.evaluation.report import write_report
    from tunesmith.evaluation.runner import run_eval

    if config:
        cfg = load_eval_config(config)
    else:
        if not suite:
            raise TunesmithError("give an eval config file, or at least one --suite (e.g. --suite ifeval)")
        cfg = parse_config(shortcut_config(model, adapter, suite, data, out, limit, max_new_tokens, batch_size, dtype, template, probe), "command line")
    if no_cache:
        cfg.use_cache = False
    report = run_eval(cfg, log=(lambda _m: None) if quiet else (lambda m: err_console.print(f"[dim]{escape(m)}")))
    paths = write_report(report, cfg.output_dir)
    if report["comparisons"]:
        console.print(verdict_table(report))
    table = retention_table(report)
    if table is not None:
        console.print(table)
    console.print(f"results: [bold]{paths['json']}[/]  report: [bold]{paths['html']}[/]")
    if report["errors"]:
        for e in report["errors"]:
            err_console.print(f"[bold red]error:[/] {escape(e)}")
        raise typer.Exit(2)


def register(app: typer.Typer) -> None:
    """Add the `eval` command to the main app."""
    app.command("eval")(eval_command)
