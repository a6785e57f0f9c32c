"""Build everything a run needs from its config, then hand over to the one loop."""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from tunesmith.config.load import dump_config
from tunesmith.config.schema import RunConfig
from tunesmith.errors import SkipReport, TunesmithError

console = Console(stderr=True)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class PreparedData:
    tokenizer: object
    train: list
    eval: list
    report: SkipReport


def prepare_data(cfg: RunConfig) -> PreparedData:
    """Tokenizer with the configured template, and rendered train/eval examples (skips counted)."""
    from tunesmith.data.dataset import build_examples, split_eval
    from tunesmith.data.templates import resolve_template
    from tunesmith.models.load import load_tokenizer

    if not cfg.data.train:
        raise TunesmithError("config: data.train: no training files given (e.g. data.train=[{path: train.jsonl}])")
    tokenizer = load_tokenizer(cfg.model.name_or_path, cfg.model.gguf_file)
    resolve_template(tokenizer, cfg.data.template)
    report = SkipReport()
    train, _ = build_examples(cfg.data.train, tokenizer, cfg.data, report)
    evals: list = []
    if cfg.data.eval:
        evals, _ = build_examples(cfg.data.eval, tokenizer, cfg.data, report)
    elif cfg.data.eval_fraction > 0:
        train, evals = split_eval(train, cfg.data.eval_fraction, cfg.train.seed)
    if not train:
        raise TunesmithError(f"no usable training rows: {report.summary()}")
    return PreparedData(tokenizer, train, evals, report)


def build_model(cfg: RunConfig):
    """Base model with the method applied (LoRA / full / freeze), or continuing from a saved adapter."""
    from tunesmith.models.adapters import apply_method, load_adapter
    from tunesmith.models.load import load_model

    model = load_model(cfg.model)
    if cfg.model.adapter:
        return load_adapter(model, cfg.model.adapter, trainable=True)
    return apply_method(model, cfg.method)


@dataclass
class RunResult:
    summary: dict
    model: object
    history: list[dict]


def run_training(cfg: RunConfig, fresh: bool = False, show_progress: bool = True) -> RunResult:
    """Train per the config; resume from the output folder's last checkpoint unless `fresh`."""
    from tunesmith.models.adapters import format_trainable_report, save_adapter, trainable_report
    from tunesmith.objectives import OBJECTIVES
    from tunesmith.training.batches import SFTBatchSource, eval_batches
    from tunesmith.training.checkpoint import TrainState, checkpoints, clean_partial, load_checkpoint, save_checkpoint
    from tunesmith.training.loop import LoopHooks, evaluate_loss, total_steps, train
    from tunesmith.training.metrics import MetricsWriter
    from tunesmith.training.optim import build_optimizer, build_scheduler

    out = Path(cfg.output.dir)
    ckpt_root = out / "checkpoints"
    if fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.train.seed)
    data = prepare_data(cfg)
    console.print(f"data: {data.report.summary()}; {len(data.train)} train / {len(data.eval)} eval examples")
    model = build_model(cfg)
    console.print(format_trainable_report(trainable_report(model)))
    source = SFTBatchSource(data.train, cfg.train.batch_size, data.tokenizer.pad_token_id, cfg.train.seed, cfg.train.group_by_length)
    steps = total_steps(cfg.train, source.batches_per_epoch())
    optimizer = build_optimizer(model, cfg.train)
    scheduler = build_scheduler(optimizer, cfg.train, steps)
    state = TrainState()
    if clean_partial(ckpt_root):
        console.print("[yellow]removed an unfinished checkpoint left by an interrupted save")
    existing = checkpoints(ckpt_root)
    if existing:
        state = load_checkpoint(existing[-1], model, optimizer, scheduler)
        console.print(f"[cyan]resuming from {existing[-1]} (step {state.step} of {steps}); pass --fresh to start over")
    (out / "config.yaml").write_text(dump_config(cfg))
    eval_data = eval_batches(data.eval, cfg.train.batch_size, data.tokenizer.pad_token_id) if data.eval else []
    hooks = LoopHooks(
        evaluate=(lambda: evaluate_loss(model, eval_data)) if eval_data else None,
        save=lambda s: save_checkpoint(ckpt_root, model, optimizer, scheduler, s, cfg.train.keep_last),
    )
    writer = MetricsWriter(out, cfg.output.tensorboard, resume_step=state.step)
    try:
        objective = OBJECTIVES[cfg.train.objective]()
        state = train(model, objective, source, optimizer, scheduler, cfg.train, state, writer, hooks, show_progress)
    finally:
        writer.close()
    final_dir = out / ("adapter" if hasattr(model, "peft_config") else "model")
    save_adapter(model, final_dir)
    data.tokenizer.save_pretrained(final_dir)
    summary = {
        "steps": state.step,
        "epoch": state.epoch,
        "final_train_loss": next((h["loss"] for h in reversed(hooks.history) if "loss" in h), None),
        "best_eval_loss": state.best_eval,
        "output": str(final_dir),
        "data": {"total": data.report.total, "kept": data.report.kept, "skipped": data.report.reasons},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return RunResult(summary, model, hooks.history)
