"""THE training loop: batch -> objective -> backward/accumulate -> clip -> step -> log -> eval -> checkpoint.

Every method uses it; what differs is the objective (a loss module) and the batch source.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable

import torch
from rich.console import Console

from tunesmith.config.schema import TrainConfig
from tunesmith.errors import TunesmithError
from tunesmith.models.adapters import compute_dtype
from tunesmith.training.batches import BatchSource
from tunesmith.training.checkpoint import TrainState
from tunesmith.training.metrics import MetricsWriter, progress_fields, training_progress

console = Console(stderr=True)


@dataclass
class LoopHooks:
    """What the loop calls out to: evaluation (returns metrics incl. 'loss') and checkpoint saving."""

    evaluate: Callable[[], dict[str, float]] | None = None
    save: Callable[[TrainState], None] | None = None
    suites: Callable[[], dict[str, float]] | None = None  # eval suites -> {"<suite>/<metric>": value}, every train.eval_suites_every
    best: Callable[[TrainState, dict[str, float]], bool] | None = None  # True when this step's metrics are a new best
    history: list[dict] = field(default_factory=list)  # logged training rows, for callers and tests


def autocast_context(model) -> contextlib.AbstractContextManager:
    """bf16 autocast when the model computes in bf16 (a bf16 base under adapters, or full fine-tuning of a model
    loaded in bf16: fp32 master weights, bf16 matmuls); else nothing."""
    if compute_dtype(model) == torch.bfloat16:
        return torch.autocast(device_type=next(model.parameters()).device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def total_steps(cfg: TrainConfig, batches_per_epoch: int) -> int:
    if cfg.max_steps > 0:
        return cfg.max_steps
    return max(1, math.ceil(cfg.epochs * batches_per_epoch / cfg.grad_accum))


def _next_window(source: BatchSource, state: TrainState, size: int) -> list[dict]:
    """The next `size` micro-batches, advancing the data cursor across epoch ends."""
    window = []
    for _ in range(size):
        if state.batch_index >= source.batches_per_epoch():
            state.epoch += 1
            state.batch_index = 0
        window.append(source.batch(state.epoch, state.batch_index))
        state.batch_index += 1
    return window


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def train_step(model, objective, window: list[dict], params: list[torch.nn.Parameter], max_grad_norm: float, ref=None) -> dict:
    """Forward/backward a whole accumulation window, normalised by its total weight; returns metrics.

    `ref` is the frozen reference (None unless `objective.needs_reference`), passed through to the objective."""
    device = params[0].device
    weight = sum(objective.batch_weight(b) for b in window)
    if weight <= 0:
        return {"skipped_empty": 1.0, "loss": float("nan"), "grad_norm": float("nan"), "tokens": 0.0}
    sums: dict[str, float] = {}
    loss_sum = 0.0
    tokens = 0
    for batch in window:
        batch = _to_device(batch, device)
        with autocast_context(model):
            out = objective(model, batch, ref=ref)
        (out.loss / weight).backward()
        loss_sum += float(out.loss.detach())
        tokens += int(batch["attention_mask"].sum()) if "attention_mask" in batch else 0
        for key, value in out.metrics.items():
            sums[key] = sums.get(key, 0.0) + value
    norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm if max_grad_norm > 0 else float("inf"))
    metrics = {key: value / weight for key, value in sums.items()}
    metrics.update(loss=loss_sum / weight, grad_norm=float(norm), tokens=float(tokens), weight=float(weight))
    return metrics


def train(
    model,
    objective,
    source: BatchSource,
    optimizer: torch.optim.Optimizer,
    scheduler,
    cfg: TrainConfig,
    state: TrainState,
    writer: MetricsWriter | None,
    hooks: LoopHooks,
    show_progress: bool = True,
    ref=None,
) -> TrainState:
    """Run optimizer steps from `state.step` to the configured total; returns the final state."""
    steps = total_steps(cfg, source.batches_per_epoch())
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise TunesmithError("nothing to train: no parameter requires a gradient")
    model.train()
    with training_progress(show_progress) as progress:
        task = progress.add_task("train", total=steps, completed=state.step, loss="-", lr="-", tps="-", extra="")
        while state.step < steps:
            started = time.perf_counter()
            window = _next_window(source, state, cfg.grad_accum)
            metrics = train_step(model, objective, window, params, cfg.max_grad_norm, ref)
            lr = optimizer.param_groups[0]["lr"]
            if math.isfinite(metrics["loss"]) and math.isfinite(metrics["grad_norm"]):
                optimizer.step()
                state.bad_steps = 0
            else:
                state.bad_steps += 1
                console.print(f"[yellow]step {state.step + 1}: non-finite loss or gradient — step skipped ({state.bad_steps} in a row)")
                if state.bad_steps >= cfg.max_bad_steps:
                    raise TunesmithError(
                        f"{state.bad_steps} consecutive steps had non-finite loss or gradients; "
                        "lower train.lr, use model.dtype=fp32, or check the data"
                    )
            optimizer.zero_grad(set_to_none=True)
            with warnings.catch_warnings():  # a skipped step still advances the schedule, on purpose
                warnings.simplefilter("ignore", UserWarning)
                scheduler.step()
            state.step += 1
            elapsed = time.perf_counter() - started
            metrics.update(lr=lr, epoch=state.epoch + state.batch_index / source.batches_per_epoch(), step_time=elapsed,
                           tokens_per_s=metrics["tokens"] / max(elapsed, 1e-9))
            progress.update(task, advance=1, loss=f"{metrics['loss']:.4f}", lr=f"{lr:.2e}", tps=f"{metrics['tokens_per_s']:.0f}",
                            extra=progress_fields(metrics))
            if state.step % cfg.log_every == 0 or state.step == steps:
                hooks.history.append({"step": state.step, **metrics})
                if writer:
                    writer.write(state.step, metrics)
            stop = evaluated = False
            if hooks.evaluate and ((cfg.eval_every and state.step % cfg.eval_every == 0) or state.step == steps):
                stop, evaluated = _evaluate(model, hooks, state, cfg, writer), True
            new_best = _suites_and_best(model, hooks, state, cfg, writer, steps, evaluated)
            if hooks.save and ((cfg.save_every and state.step % cfg.save_every == 0) or state.step == steps or stop or new_best):
                hooks.save(state)
            if stop:
                console.print(f"[yellow]early stopping: eval loss did not improve for {state.evals_without_improvement} evaluations")
                break
    return state


def _evaluate(model, hooks: LoopHooks, state: TrainState, cfg: TrainConfig, writer: MetricsWriter | None) -> bool:
    """Run evaluation, track the best loss; True when early stopping should trigger."""
    result = hooks.evaluate()
    model.train()
    if writer:
        writer.write(state.step, result, prefix="eval")
    hooks.history.append({"step": state.step, **{f"eval_{k}": v for k, v in result.items()}})
    loss = result.get("loss")
    if loss is None:
        return False
    if state.best_eval is None or loss < state.best_eval:
        state.best_eval = loss
        state.evals_without_improvement = 0
    else:
        state.evals_without_improvement += 1
    return bool(cfg.early_stopping_patience) and state.evals_without_improvement >= cfg.early_stopping_patience


def _suites_and_best(model, hooks: LoopHooks, state: TrainState, cfg: TrainConfig, writer: MetricsWriter | None,
                     steps: int, evaluated: bool) -> bool:
    """Eval suites due at this step (logged with split "suite"), then best-checkpoint tracking; True on a new best."""
    metrics = {k: v for k, v in hooks.history[-1].items() if k.startswith("eval_")} if evaluated else {}
    every = cfg.eval_suites_every
    if hooks.suites and ((every and state.step % every == 0) or state.step == steps):
        values = hooks.suites()
        model.train()
        if writer:
            writer.write(state.step, values, prefix="suite")
        metrics.update({f"suite/{k}": v for k, v in values.items()})
        hooks.history.append({"step": state.step, **{k: v for k, v in metrics.items() if k.startswith("suite/")}})
    return bool(hooks.best and metrics) and hooks.best(state, metrics)


@torch.no_grad()
def evaluate_loss(model, batches: list[dict]) -> dict[str, float]:
    """Token-level loss and perplexity over evaluation batches (dropout off)."""
    from tunesmith.objectives.sft import supervised_ce_sum

    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for batch in batches:
        batch = _to_device(batch, device)
        with autocast_context(model):
            loss, n = supervised_ce_sum(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
        total += float(loss)
        count += n
    mean = total / max(count, 1)
    return {"loss": mean, "perplexity": math.exp(min(mean, 50.0)), "tokens": float(count)}
