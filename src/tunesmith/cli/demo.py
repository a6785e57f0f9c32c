"""`tunesmith demo`: the quickstart end to end — make task data, score the base model, LoRA-train, score again."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def run_demo(config: str, data_dir: str, n_train: int, n_eval: int, overrides: list[str]) -> dict:
    """The whole quickstart; returns before/after scores and where the adapter is."""
    from tunesmith.cli.task import score_model
    from tunesmith.config.load import load_config
    from tunesmith.serving.engine import load_for_inference
    from tunesmith.tasks.json_extract import write_quickstart
    from tunesmith.training.run import run_training

    started = time.perf_counter()
    paths = write_quickstart(data_dir, n_train=n_train, n_eval=n_eval, seed=0)
    cfg = load_config(config, [f"data.train=[{{path: {paths['train']}}}]", f"data.eval=[{{path: {paths['eval']}}}]", *overrides])
    console.rule("1/3 base model on the held-out requests")
    base, tokenizer = load_for_inference(cfg.model.name_or_path, None, cfg.model.dtype, cfg.data.template, cfg.model.device)
    before = score_model(base, tokenizer, paths["eval"])
    del base
    console.rule("2/3 LoRA fine-tuning")
    result = run_training(cfg, fresh=True)
    adapter = result.summary["output"]
    del result
    console.rule("3/3 fine-tuned model on the same requests")
    tuned, tokenizer = load_for_inference(cfg.model.name_or_path, adapter, cfg.model.dtype, cfg.data.template, cfg.model.device)
    after = score_model(tuned, tokenizer, paths["eval"])
    summary = {"before": before, "after": after, "adapter": adapter, "minutes": round((time.perf_counter() - started) / 60, 2)}
    Path(cfg.output.dir, "demo_results.json").write_text(json.dumps(summary, indent=1))
    return summary


def before_after_table(summary: dict) -> Table:
    before, after = summary["before"], summary["after"]
    table = Table(title=f"quickstart: booking request -> JSON ({before['n']} held-out requests)")
    table.add_column("metric")
    table.add_column("base model", justify="right")
    table.add_column("after LoRA", justify="right")
    table.add_row("valid JSON", f"{before['valid_json_rate']:.0%}", f"{after['valid_json_rate']:.0%}")
    table.add_row("exact match (all fields)", f"{before['exact_match']:.0%}", f"[bold green]{after['exact_match']:.0%}")
    for field in after["field_accuracy"]:
        table.add_row(f"  {field}", f"{before['field_accuracy'][field]:.0%}", f"{after['field_accuracy'][field]:.0%}")
    return table


def demo_command(
    config: str = typer.Option("configs/quickstart.yaml", help="training config"),
    data_dir: str = typer.Option("data/generated/quickstart", help="where the task data is written"),
    n_train: int = typer.Option(1200, help="training rows to generate"),
    n_eval: int = typer.Option(100, help="held-out rows to generate"),
    overrides: Optional[list[str]] = typer.Argument(None, help="config overrides, e.g. train.lr=5e-4"),
) -> None:
    """Teach the bundled model a new skill and show the before/after table."""
    summary = run_demo(config, data_dir, n_train, n_eval, overrides or [])
    console.print(before_after_table(summary))
    sample = summary["after"]["samples"][0]
    console.print(f"example request: {sample['request']}\n  fine-tuned answer: {sample['output']}")
    console.print(f"adapter: [bold]{summary['adapter']}[/]  (try: tunesmith chat --adapter {summary['adapter']})")
    console.print(f"total time {summary['minutes']:.1f} min; results in {Path(summary['adapter']).parent / 'demo_results.json'}")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_command)
