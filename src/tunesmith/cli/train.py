"""`tunesmith train CONFIG` and `tunesmith validate CONFIG`."""

from __future__ import annotations

import time
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def train_command(
    config: str = typer.Argument(..., help="run config YAML (see configs/)"),
    overrides: Optional[list[str]] = typer.Argument(None, help="key=value overrides, e.g. train.lr=1e-4"),
    fresh: bool = typer.Option(False, "--fresh", help="ignore checkpoints in the output folder and start over"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
) -> None:
    """Train per CONFIG; resumes from the output folder's last checkpoint unless --fresh."""
    from tunesmith.config.load import load_config
    from tunesmith.training.run import run_training

    cfg = load_config(config, overrides or [])
    summary = run_training(cfg, fresh=fresh, show_progress=not quiet).summary
    console.print(f"[green]done[/]: {summary['steps']} steps, final train loss {summary['final_train_loss']:.4f}"
                  + (f", best eval loss {summary['best_eval_loss']:.4f}" if summary["best_eval_loss"] is not None else ""))
    console.print(f"saved to [bold]{summary['output']}[/] (metrics: {cfg.output.dir}/metrics.jsonl, TensorBoard: {cfg.output.dir}/tensorboard)")


def validate_command(
    config: str = typer.Argument(..., help="run config YAML"),
    overrides: Optional[list[str]] = typer.Argument(None, help="key=value overrides"),
    time_step: bool = typer.Option(True, help="time one forward/backward to estimate the epoch time"),
) -> None:
    """Check a config end to end without training: data, template, model, trainable parameters, steps, time."""
    from tunesmith.config.load import load_config
    from tunesmith.data.dataset import dataset_stats
    from tunesmith.models.adapters import format_trainable_report, trainable_report
    from tunesmith.objectives import build_objective
    from tunesmith.training.loop import total_steps
    from tunesmith.training.pairwise import preference_stats
    from tunesmith.training.run import build_source, prepare_data, prepare_policy, seed_everything

    cfg = load_config(config, overrides or [])
    seed_everything(cfg.train.seed)
    objective = build_objective(cfg.train.objective, cfg.align, cfg.rl)
    data = prepare_data(cfg, objective.batch_kind)
    online = objective.batch_kind == "rollout"  # PPO/GRPO: prompts only; batches exist once the policy generates
    if online:
        from tunesmith.data.prompts import prompt_stats

        stats = prompt_stats(data.train)
    else:
        stats = dataset_stats(data.train) if objective.batch_kind == "sft" else preference_stats(data.train)
    model, ref = prepare_policy(cfg, objective)
    report = trainable_report(model)
    if online:
        from tunesmith.training.rollout import build_rollout_source

        source = build_rollout_source(cfg, data.train, model, ref, data.tokenizer, objective)[0]
    else:
        source = build_source(objective.batch_kind, data.train, cfg, data.tokenizer.pad_token_id)
    steps = total_steps(cfg.train, source.batches_per_epoch())
    steps_per_epoch = max(1, source.batches_per_epoch() // cfg.train.grad_accum)
    table = Table(title=f"tunesmith validate {config}", show_header=False)
    table.add_row("model", f"{cfg.model.name_or_path} ({cfg.model.dtype}), method {cfg.method.kind}")
    table.add_row("objective", cfg.train.objective + (f", reference: {ref.kind}" if ref else ""))
    table.add_row("trainable", format_trainable_report(report))
    table.add_row("data", data.report.summary())
    table.add_row("train rows / tokens", f"{stats['rows']} rows, {stats['tokens']} tokens, {stats['trained_tokens']} trained")
    table.add_row("eval rows", str(len(data.eval)))
    table.add_row("steps", f"{steps} optimizer steps ({steps_per_epoch} per epoch), batch {cfg.train.batch_size} x accum {cfg.train.grad_accum}")
    if time_step and not online:
        seconds = _time_micro_batch(model, source, objective, ref)
        epoch = seconds * source.batches_per_epoch()
        table.add_row("estimated epoch time", f"{epoch / 60:.1f} min ({seconds:.2f} s per micro-batch, timed on a sample batch)")
    console.print(table)
    if data.report.examples:
        console.print("[yellow]first problems:[/]")
        for problem in data.report.examples[:5]:
            console.print(f"  {problem}")


def _time_micro_batch(model, source, objective, ref=None) -> float:
    """Seconds for one forward+backward on a typical (median-length) micro-batch; weights are not changed."""
    from tunesmith.training.loop import autocast_context

    order = source.order(0)
    batch = source.batch(0, len(order) // 2)
    model.train()
    timings = []
    for _ in range(2):  # the first pass warms up kernels
        started = time.perf_counter()
        with autocast_context(model):
            out = objective(model, batch, ref=ref)
        out.loss.backward()
        timings.append(time.perf_counter() - started)
    model.zero_grad(set_to_none=True)
    return timings[-1]


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
    app.command("validate")(validate_command)
