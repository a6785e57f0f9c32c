"""fp32 loss-curve match: tunesmith's loop vs TRL's `SFTTrainer` on the very same batches.

Both start from ONE model object (tunesmith's `build_model`, LoRA or full, deep-copied for TRL, so the
LoRA initialisation is identical), in fp32, dropout 0, and see the same token ids and labels in the same
micro-batches: tunesmith's batch order (length-grouped, seeded) is flattened into a pre-tokenised dataset
that TRL reads with a sequential sampler and `skip_prepare_dataset` (no re-tokenising, no shuffle). Same
AdamW (betas 0.9/0.999, eps 1e-8, no weight decay), same linear decay without warm-up, same clipping (1.0).

Loss normalisation across gradient accumulation: transformers' Trainer counts the window's target tokens,
`num_items_in_batch = sum over micro-batches of (labels[..., 1:] != -100)`, and TRL 1.16 divides each
micro-batch's summed token NLL by it (no extra division by the accumulation steps). tunesmith divides by
the window's `num_target_tokens` (DESIGN.md: loss normalisation). Same quantity; the run records whether
TRL really received `num_items_in_batch` and uses batch x accumulation (default 4 x 2) so it is exercised.

    python bench/loss_match.py [--steps 10] [--batch 4] [--grad-accum 2] [--max-length 512] [--method lora|full]

Writes bench/results/<date>-loss-match-<method>.json with per-step losses, grad norms, the max abs/rel
difference, the final trainable-weight difference and the tolerance it passes.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _harness import unused_path  # noqa: E402

TOLERANCE = {"loss_abs": 1e-4, "loss_rel": 1e-4}  # what `--check` asserts (per step, both must hold)


def build_config(model: str, data: Path, out: Path, steps: int, batch: int, accum: int, max_length: int,
                 method: str, lr: float, seed: int = 0):
    from tunesmith.config.schema import RunConfig

    return RunConfig.model_validate({
        "model": {"name_or_path": model, "dtype": "fp32"},
        "method": {"kind": method, "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "targets": "all-linear"}},
        "data": {"train": [{"path": str(data)}], "max_length": max_length, "cache": False},
        "train": {"max_steps": steps, "batch_size": batch, "grad_accum": accum, "lr": lr, "warmup_ratio": 0.0,
                  "scheduler": "linear", "weight_decay": 0.0, "max_grad_norm": 1.0, "seed": seed, "save_every": 0},
        "output": {"dir": str(out), "tensorboard": False}})


def served_rows(source, steps: int, accum: int, batch: int) -> list[int]:
    """Example indices in the order tunesmith's source serves them over `steps` optimizer steps."""
    rows: list[int] = []
    epoch, index = 0, 0
    for _ in range(steps * accum):
        if index >= source.batches_per_epoch():
            epoch, index = epoch + 1, 0
        micro = source.order(epoch)[index]
        if len(micro) != batch:  # TRL's sequential batching would shift every later batch
            raise SystemExit(f"micro-batch {index} of epoch {epoch} has {len(micro)} rows, not {batch}: "
                             "choose --steps/--batch so no partial batch is used")
        rows.extend(micro)
        index += 1
    return rows


def run_tunesmith(cfg, model, data) -> dict:
    from tunesmith.objectives import build_objective
    from tunesmith.training.checkpoint import TrainState
    from tunesmith.training.loop import LoopHooks, train
    from tunesmith.training.optim import build_optimizer, build_scheduler
    from tunesmith.training.run import build_source

    objective = build_objective("sft")
    source = build_source("sft", data.train, cfg, data.tokenizer.pad_token_id)
    optimizer = build_optimizer(model, cfg.train)
    scheduler = build_scheduler(optimizer, cfg.train, cfg.train.max_steps)
    hooks = LoopHooks()
    started = time.perf_counter()
    train(model, objective, source, optimizer, scheduler, cfg.train, TrainState(), None, hooks, show_progress=False)
    rows = [h for h in hooks.history if "loss" in h]
    return {"losses": [h["loss"] for h in rows], "grad_norms": [h["grad_norm"] for h in rows],
            "lrs": [h["lr"] for h in rows], "wall_s": time.perf_counter() - started}


def run_trl(cfg, model, tokenizer, examples: list, work: Path) -> dict:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    t = cfg.train
    dataset = Dataset.from_list([{"input_ids": e.input_ids, "labels": e.labels} for e in examples])
    args = SFTConfig(output_dir=str(work / "trl-out"), max_steps=t.max_steps, per_device_train_batch_size=t.batch_size,
                     gradient_accumulation_steps=t.grad_accum, learning_rate=t.lr, lr_scheduler_type="linear",
                     warmup_steps=0, weight_decay=0.0, adam_beta1=t.betas[0], adam_beta2=t.betas[1], adam_epsilon=1e-8,
                     max_grad_norm=t.max_grad_norm, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True,
                     dataloader_num_workers=0, seed=t.seed, train_sampling_strategy="sequential", packing=False,
                     max_length=cfg.data.max_length, dataset_kwargs={"skip_prepare_dataset": True}, bf16=False, fp16=False)
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    micro: list[float] = []
    seen_items: list[bool] = []
    step_fn, loss_fn = trainer.training_step, trainer.compute_loss

    def training_step(m, inputs, num_items_in_batch=None):
        out = step_fn(m, inputs, num_items_in_batch)
        micro.append(float(out))  # already sum / num_items_in_batch: the window's loss is the sum over micro-batches
        return out

    def compute_loss(m, inputs, return_outputs=False, num_items_in_batch=None):
        seen_items.append(num_items_in_batch is not None)
        return loss_fn(m, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)

    trainer.training_step, trainer.compute_loss = training_step, compute_loss
    started = time.perf_counter()
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    a = t.grad_accum
    return {"losses": [sum(micro[i: i + a]) for i in range(0, len(micro), a)],
            "grad_norms": [h.get("grad_norm") for h in logs], "lrs": [h.get("learning_rate") for h in logs],
            "num_items_in_batch_used": all(seen_items) and bool(seen_items), "wall_s": time.perf_counter() - started}


def trainable_diff(a, b) -> float:
    """Largest |difference| over trainable parameters of two models with the same parameter names."""
    pa = {n: p for n, p in a.named_parameters() if p.requires_grad}
    pb = dict(b.named_parameters())
    return max(float((p.detach() - pb[n].detach()).abs().max()) for n, p in pa.items())


def compare(ours: list[float], theirs: list[float]) -> dict:
    abs_d = [abs(x - y) for x, y in zip(ours, theirs)]
    rel_d = [d / max(abs(y), 1e-12) for d, y in zip(abs_d, theirs)]
    return {"max_abs_diff": max(abs_d), "max_rel_diff": max(rel_d), "per_step_abs_diff": abs_d}


def match(model: str, data: Path, work: Path, steps: int = 10, batch: int = 4, accum: int = 2, max_length: int = 512,
          method: str = "lora", lr: float = 2e-4, seed: int = 0) -> dict:
    """Run both on the same batches in fp32; per-step losses, differences and the final-weight difference."""
    from tunesmith.training.run import build_model, prepare_data, seed_everything

    torch.set_num_threads(max(1, torch.get_num_threads()))
    cfg = build_config(model, data, work / "tunesmith-out", steps, batch, accum, max_length, method, lr, seed)
    seed_everything(seed)
    prepared = prepare_data(cfg)
    del prepared.train[len(prepared.train) - len(prepared.train) % batch:]  # only full micro-batches (TRL batches sequentially)
    ours_model = build_model(cfg)
    trl_model = copy.deepcopy(ours_model)  # identical initialisation (LoRA A is random)
    from tunesmith.training.run import build_source

    order = served_rows(build_source("sft", prepared.train, cfg, prepared.tokenizer.pad_token_id), steps, accum, batch)
    ours = run_tunesmith(cfg, ours_model, prepared)
    theirs = run_trl(cfg, trl_model, prepared.tokenizer, [prepared.train[i] for i in order], work)
    result = {"config": {"steps": steps, "batch": batch, "grad_accum": accum, "max_length": max_length, "method": method,
                         "lr": lr, "seed": seed, "dtype": "fp32", "model": model},
              "tunesmith": ours, "trl": theirs, **compare(ours["losses"], theirs["losses"]),
              "final_weight_max_abs_diff": trainable_diff(ours_model, trl_model),
              "real_tokens": sum(len(prepared.train[i].input_ids) for i in order)}
    grads = [(x, y) for x, y in zip(ours["grad_norms"], theirs["grad_norms"]) if y is not None]
    result["grad_norm_max_rel_diff"] = max((abs(x - y) / max(abs(y), 1e-12) for x, y in grads), default=None)
    result["tolerance"] = TOLERANCE
    result["passes"] = result["max_abs_diff"] <= TOLERANCE["loss_abs"] and result["max_rel_diff"] <= TOLERANCE["loss_rel"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description="fp32 loss-curve match: tunesmith vs TRL SFTTrainer, same batches")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--grad-accum", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--method", choices=("lora", "full"), default="lora")
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--model", default=None, help="HF folder (default: the bundled SmolLM2-135M-Instruct)")
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument("--check", action="store_true", help="exit 1 unless the curves match within TOLERANCE")
    args = parser.parse_args()
    from make_stdlib_data import docstring_rows, write
    from tunesmith.models.load import BUNDLED_ALIAS, resolve_model_path

    model = str(resolve_model_path(args.model or BUNDLED_ALIAS))
    work = Path(tempfile.mkdtemp(prefix="tunesmith-loss-match-"))
    write(work / "alpaca.jsonl", docstring_rows(0))
    result = match(model, work / "alpaca.jsonl", work, args.steps, args.batch, args.grad_accum, args.max_length,
                   args.method, args.lr)
    result["date"] = dt.date.today().isoformat()
    args.results.mkdir(parents=True, exist_ok=True)
    out = unused_path(args.results / f"{result['date']}-loss-match-{args.method}.json")
    out.write_text(json.dumps(result, indent=1))
    print(f"{'step':>4} {'tunesmith':>12} {'trl':>12} {'abs diff':>10}")
    for i, (x, y) in enumerate(zip(result["tunesmith"]["losses"], result["trl"]["losses"]), 1):
        print(f"{i:>4} {x:>12.6f} {y:>12.6f} {abs(x - y):>10.2e}")
    print(json.dumps({k: result[k] for k in ("max_abs_diff", "max_rel_diff", "grad_norm_max_rel_diff",
                                             "final_weight_max_abs_diff", "tolerance", "passes")}
                     | {"num_items_in_batch_used": result["trl"]["num_items_in_batch_used"], "result": str(out)}, indent=1))
    if args.check and not result["passes"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
