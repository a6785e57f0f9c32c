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


def prepare_data(cfg: RunConfig, kind: str = "sft") -> PreparedData:
    """Tokenizer with the configured template, and rendered train/eval examples (skips counted).

    `kind` is the objective's batch kind: "sft" examples, or preference "pairwise" / "unpaired" items."""
    from tunesmith.data.dataset import build_examples, split_eval
    from tunesmith.data.templates import resolve_template
    from tunesmith.models.load import load_tokenizer

    if not cfg.data.train:
        raise TunesmithError("config: data.train: no training files given (e.g. data.train=[{path: train.jsonl}])")
    tokenizer = load_tokenizer(cfg.model.name_or_path, cfg.model.gguf_file)
    resolve_template(tokenizer, cfg.data.template)
    report = SkipReport()
    if kind == "rollout":  # prompt-only rows for PPO/GRPO
        from tunesmith.data.prompts import load_prompt_sets

        train, evals = load_prompt_sets(cfg, tokenizer, report)
        return PreparedData(tokenizer, train, evals, report)
    if kind != "sft":
        from tunesmith.training.pairwise import load_preference_sets

        train, evals = load_preference_sets(cfg, tokenizer, kind, report)
        return PreparedData(tokenizer, train, evals, report)
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
    """Base model with the method applied (LoRA / QLoRA / full / freeze), or continuing from a saved adapter
    (with kind qlora on the 4-bit base: the adapter's LoRA weights train on top of it as in a fresh qlora run)."""
    from tunesmith.models.adapters import apply_method, load_adapter
    from tunesmith.models.fused_lora import fuse_lora_layers
    from tunesmith.models.load import load_model

    model = load_model(cfg.model, cfg.method.qlora if cfg.method.kind == "qlora" else None)
    model = load_adapter(model, cfg.model.adapter, trainable=True) if cfg.model.adapter else apply_method(model, cfg.method)
    if cfg.method.lora.fused:
        fuse_lora_layers(model)
    return model


def build_source(kind: str, items: list, cfg: RunConfig, pad_id: int):
    """The batch source for an objective's batch kind (SFT rows, preference pairs, KTO rows)."""
    from tunesmith.training.batches import SFTBatchSource
    from tunesmith.training.pairwise import SOURCES

    sources = {"sft": SFTBatchSource, **SOURCES}
    if kind == "sft" and cfg.train.packing:  # same documents per step, packed into max_length rows
        return SFTBatchSource(items, cfg.train.batch_size, pad_id, cfg.train.seed, cfg.train.group_by_length,
                              pack_to=cfg.data.max_length)
    if kind not in sources:
        raise TunesmithError(f"objective needs '{kind}' batches, which this version cannot serve yet")
    extra = {"shared_prefix": cfg.align.shared_prefix} if kind == "pairwise" else {}
    return sources[kind](items, cfg.train.batch_size, pad_id, cfg.train.seed, cfg.train.group_by_length, **extra)


def build_evaluate(kind: str, model, objective, items: list, cfg: RunConfig, pad_id: int, ref=None):
    """Evaluation hook: token loss/perplexity for SFT, the objective's loss and metrics for preference data."""
    from tunesmith.training.batches import eval_batches
    from tunesmith.training.loop import evaluate_loss
    from tunesmith.training.pairwise import eval_batches as preference_batches
    from tunesmith.training.pairwise import evaluate_objective

    if not items or kind == "rollout":  # rollout evaluation is built in run_training (it needs the reward)
        return None
    if kind == "sft":
        batches = eval_batches(items, cfg.train.batch_size, pad_id)
        return lambda: evaluate_loss(model, batches)
    batches = preference_batches(items, kind, cfg.train.batch_size, pad_id, cfg.align.shared_prefix)
    return lambda: evaluate_objective(model, objective, batches, ref)


def prepare_policy(cfg: RunConfig, objective):
    """Model with the method applied, objective-specific parts attached (reward head), dropout off for
    alignment, and the reference model (built BEFORE any checkpoint is loaded, so it is the starting policy)."""
    from tunesmith.objectives.logprobs import build_reference
    from tunesmith.training.pairwise import disable_dropout

    model = build_model(cfg)
    if hasattr(objective, "prepare"):
        model = objective.prepare(model)
    if objective.batch_kind != "sft" and cfg.align.disable_dropout:
        disable_dropout(model)
    ref = build_reference(model, cfg.align.reference, bool(cfg.model.adapter)) if objective.needs_reference else None
    return model, ref


def _pin_malloc_mmap_threshold(size: int) -> None:
    """glibc raises its mmap threshold after large frees, so later activations come from a heap that fragments
    (fp32 base, bench job: 10.3 GB peak RSS for ~6 GB of live tensors). Pinning it makes tensors of at least
    `size` bytes mmap'd and returned to the OS on free (same as MALLOC_MMAP_THRESHOLD_=size). No-op off glibc."""
    import ctypes
    import sys

    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").mallopt(-3, size)  # -3 = M_MMAP_THRESHOLD
        except (OSError, AttributeError):
            pass


def enable_torch_huge_pages() -> bool:
    """Ask torch to back its CPU buffers of >= 2 MB with transparent huge pages (THP_MEM_ALLOC_ENABLE, read once, at
    torch's first CPU allocation in the process): with the mmap threshold pinned every large activation is a fresh
    mapping, and huge pages fault it in 512x fewer times (bench/README.md). True when it took effect."""
    import os

    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    probes = [torch.empty(4 << 20, dtype=torch.uint8) for _ in range(3)]
    return all(p.data_ptr() % 4096 == 0 for p in probes)  # THP buffers are page-aligned; torch's others only to 64 B


def apply_speed_options(model, cfg: RunConfig, objective) -> None:
    """Speed/memory switches of `train`: CE chunk size, lean block activations, gradient checkpointing, per-block
    torch.compile."""
    from tunesmith.models.lean_blocks import lean_block_ops
    from tunesmith.objectives.base import unwrap

    if hasattr(objective, "chunk_size"):
        objective.chunk_size = cfg.train.ce_chunk_size
    if cfg.train.low_memory_malloc and next(model.parameters()).device.type == "cpu":
        _pin_malloc_mmap_threshold(cfg.train.mmap_threshold_kib * 1024)  # costs speed (page faults), so opt-in
    inner = unwrap(model)
    if cfg.train.lean_activations and not cfg.train.compile:
        lean_block_ops(inner)
    if cfg.train.gradient_checkpointing:
        inner.activation_checkpointing_enable({"use_reentrant": False}, every_n_layers=cfg.train.checkpoint_every)
    if cfg.train.compile:
        for block in getattr(inner, inner.base_model_prefix).layers:
            block.compile()  # one graph per block type; the first steps pay the compile time


def release_head_buffers(objective) -> None:
    """Free the LM-head chunk buffers training kept between steps (the objective's and the shared log-prob one), so
    whatever runs next in this process (generation, scoring) does not carry them."""
    from tunesmith.objectives.logprobs import WORKSPACE

    WORKSPACE.release()
    if hasattr(objective, "workspace"):
        objective.workspace.release()


def _warn_ineffective_mixed_precision(cfg: RunConfig, model) -> None:
    """method.mixed_precision only changes anything on a bf16-loaded base; say so instead of silently training fp32."""
    from tunesmith.models.adapters import compute_dtype

    if cfg.method.mixed_precision and compute_dtype(model) == torch.float32:
        why = "bf16 is not native on this device" if cfg.model.dtype == "auto" else "model.dtype is fp32"
        console.print(f"[yellow]method.mixed_precision has no effect: the base loaded in fp32 ({why}), so full fine-tuning "
                      "computes in fp32; set model.dtype: bf16 to run it under bf16 autocast anyway")


@dataclass
class RunResult:
    summary: dict
    model: object
    history: list[dict]


def run_training(cfg: RunConfig, fresh: bool = False, show_progress: bool = True) -> RunResult:
    """Train per the config; resume from the output folder's last checkpoint unless `fresh`."""
    from tunesmith.models.adapters import format_trainable_report, trainable_report
    from tunesmith.models.heads import save_with_heads
    from tunesmith.evaluation import in_training
    from tunesmith.models.cpu_attention import attention_backward
    from tunesmith.objectives import build_objective
    from tunesmith.training.checkpoint import TrainState, checkpoints, clean_partial, load_checkpoint, save_checkpoint
    from tunesmith.training.loop import LoopHooks, total_steps, train
    from tunesmith.training.metrics import MetricsWriter
    from tunesmith.training.optim import build_optimizer, build_scheduler

    out = Path(cfg.output.dir)
    ckpt_root = out / "checkpoints"
    if fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.train.low_memory_malloc and not enable_torch_huge_pages():
        console.print("[yellow]train.low_memory_malloc: torch allocated before this run started, so its buffers use "
                      "ordinary pages (slower; start a fresh process)")
    seed_everything(cfg.train.seed)
    objective = build_objective(cfg.train.objective, cfg.align, cfg.rl)
    kind = objective.batch_kind
    data = prepare_data(cfg, kind)
    suites, best = in_training.setup(cfg, data.tokenizer, has_eval=bool(data.eval))  # train.eval_suites / best_metric
    console.print(f"data: {data.report.summary()}; {len(data.train)} train / {len(data.eval)} eval examples")
    model, ref = prepare_policy(cfg, objective)
    _warn_ineffective_mixed_precision(cfg, model)
    if ref is not None and cfg.align.precompute_ref_logps:  # reference log-probs once, cached on disk
        from tunesmith.training.ref_logps import precompute_reference

        ref = precompute_reference(ref, model, cfg, data.tokenizer, [data.train, data.eval])
        console.print("reference log-probs: " + ", ".join(f"{'reused' if hit else 'computed'} {path}" for path, hit in zip(ref.cache_files, ref.reused)))
    apply_speed_options(model, cfg, objective)
    console.print(format_trainable_report(trainable_report(model)) + f"; device {next(model.parameters()).device}"
                  + (f"; reference: {ref.kind}" if ref else ""))
    if kind == "rollout":  # online RL: the source generates from the policy and scores with the reward
        from tunesmith.training.rollout import build_rollout_source, evaluate_prompts

        source, reward = build_rollout_source(cfg, data.train, model, ref, data.tokenizer, objective)
    else:
        source = build_source(kind, data.train, cfg, data.tokenizer.pad_token_id)
    steps = total_steps(cfg.train, source.batches_per_epoch())
    optimizer = build_optimizer(model, cfg.train)
    scheduler = build_scheduler(optimizer, cfg.train, steps)
    state = TrainState()
    if clean_partial(ckpt_root):
        console.print("[yellow]removed an unfinished checkpoint left by an interrupted save")
    existing = checkpoints(ckpt_root)
    if existing:
        state = load_checkpoint(existing[-1], model, optimizer, scheduler)
        if hasattr(source, "load_state"):
            source.load_state(existing[-1])
        console.print(f"[cyan]resuming from {existing[-1]} (step {state.step} of {steps}); pass --fresh to start over")
    (out / "config.yaml").write_text(dump_config(cfg))
    evaluate = build_evaluate(kind, model, objective, data.eval, cfg, data.tokenizer.pad_token_id, ref)
    if kind == "rollout" and data.eval:
        evaluate = lambda: evaluate_prompts(model, data.tokenizer, data.eval, reward, cfg.rl, cfg.train.seed)  # noqa: E731

    def save(s):
        path = save_checkpoint(ckpt_root, model, optimizer, scheduler, s, cfg.train.keep_last,
                               protect=ckpt_root / f"checkpoint-{s.best_step}" if s.best_step else None)
        if hasattr(source, "save_state"):  # a rollout source stores the rollout a mid-rollout checkpoint needs
            source.save_state(path)

    hooks = LoopHooks(evaluate=evaluate, save=save, suites=suites, best=best)
    writer = MetricsWriter(out, cfg.output.tensorboard, resume_step=state.step)
    if kind == "rollout" and evaluate and cfg.rl.eval_at_start and state.step == 0:  # the starting point
        initial = evaluate()
        writer.write(0, initial, prefix="eval")
        hooks.history.append({"step": 0, **{f"initial_{k}": v for k, v in initial.items()}})
    if suites is not None:
        suites.model = model
        if state.step == 0:  # the before-training baseline (step 0) of every eval suite
            in_training.run_at_start(suites, best, writer)
    try:
        with attention_backward(cfg.train.attention_backward):
            state = train(model, objective, source, optimizer, scheduler, cfg.train, state, writer, hooks, show_progress, ref=ref)
    finally:
        writer.close()
        release_head_buffers(objective)
    final_dir = out / ("adapter" if hasattr(model, "peft_config") else "model")
    save_with_heads(model, final_dir)  # heads (reward, value) go next to the model folder, never inside
    data.tokenizer.save_pretrained(final_dir)
    summary = {
        "steps": state.step,
        "epoch": state.epoch,
        "final_train_loss": next((h["loss"] for h in reversed(hooks.history) if "loss" in h), None),
        "best_eval_loss": state.best_eval,
        "objective": cfg.train.objective,
        "reference": ref.kind if ref else None,
        "final_eval": next(({k[5:]: v for k, v in h.items() if k.startswith("eval_")} for h in reversed(hooks.history) if "eval_loss" in h), None),
        "output": str(final_dir),
        "best_checkpoint": in_training.best_summary(best, state, ckpt_root),
        "final_suites": in_training.last_suite_metrics(hooks.history),
        "data": {"total": data.report.total, "kept": data.report.kept, "skipped": data.report.reasons},
    }
    if kind == "rollout":  # reward functions that raised / returned non-numbers, counted (fallback used)
        summary["rewards"] = {"calls": reward.stats.calls, "failures": reward.stats.failures, "examples": reward.stats.examples}
        console.print(f"rewards: {reward.stats.summary()}")
        summary["kl"] = source.kl_report()  # KL to the reference vs rl.max_kl, adapted kl_coef
        summary["initial_eval"] = next(({k[8:]: v for k, v in h.items() if k.startswith("initial_")}
                                        for h in hooks.history if h["step"] == 0), None)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return RunResult(summary, model, hooks.history)
