"""tunesmith vs TRL on identical data, model, adapter, batch, steps and seeds: LoRA SFT (SFTTrainer), full
fine-tuning (SFTTrainer) and LoRA DPO (DPOTrainer), chosen with `--job lora|full|dpo`.

Each run is a fresh subprocess (clean peak-RSS measurement); runs alternate between implementations so
slow drifts in machine load hit both. Reports real (non-padding) tokens/s as the median of per-step rates
after warm-up, the aggregate rate, step time, peak RSS and final loss; checks `tunesmith estimate`'s memory
figure (with each variant's checkpointing, CE chunk, dtype and method) against each tunesmith variant's peak
RSS; writes bench/results/<date>-<machine>[-<job>][-<model>].json and the job's table in bench/README.md, whose
"Latest:" line names the machine, its torch CPU capability and whether bf16 is native there.

    python bench/sft_vs_trl.py [--job lora] [--steps 12] [--rounds 1] [--variants tunesmith,trl] [--warmup 2]
        [--model-config llama-0.5b|llama-1b|llama-tiny|PATH] [--device cpu|cuda]

Job (issue 6): SmolLM2-135M-Instruct (bundled), LoRA r=16 alpha=32 all-linear dropout 0, batch 8,
max length 512, 587 chat rows whose answers are standard-library docstrings, lr 2e-4 linear decay, no warmup.
`--job full`: the same with every weight trained (lr 2e-5). `--job dpo`: LoRA DPO (sigmoid, beta 0.1, lr 5e-5,
reference = adapters disabled in both) on 4 pairs per step built from the same rows: chosen = the docstring,
rejected = a seeded shuffle of its first 60% of words. `tunesmith-compile` reports the torch.compile time
(dynamo's own timers) separately, and its throughput over the steps that compiled nothing.
`--model-config`: a random-weight Llama (bench/_models.py), built once with the bundled tokenizer; both sides load
that folder. `--device cuda` runs both on the GPU (tunesmith with `model.device: cuda`; peak GPU memory reported).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import sys
import tempfile
import time
import typing
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# bench/ is put on the path first; some names are re-exported for tests and older callers (sft_vs_trl.markers, ...)
from _harness import (  # noqa: E402, F401
    COMPILE_TIMERS, MARK_END, MARK_START, _peak_rss_mb, _summarise, compile_seconds, compile_summary, estimate_lines,
    machine, markers, spawn, summarise, unused_path, update_readme)
from _estimate_check import check_estimate  # noqa: E402

JOB = {"batch": 8, "max_length": 512, "r": 16, "alpha": 32, "lr": 2e-4, "seed": 0}
# tunesmith variants: config overrides on top of the job (the default config is the first entry). `dtype` goes
# to model.dtype (default: the schema's, auto = bf16 only where native), `method` to method.kind, the rest to train.
VARIANTS: dict[str, dict] = {
    "tunesmith": {},
    "tunesmith-packed": {"packing": True},
    "tunesmith-gc": {"gradient_checkpointing": True},
    "tunesmith-packed-gc": {"packing": True, "gradient_checkpointing": True},
    "tunesmith-gc2": {"gradient_checkpointing": True, "checkpoint_every": 2},
    "tunesmith-lowmem": {"low_memory_malloc": True},
    "tunesmith-gc-lowmem": {"gradient_checkpointing": True, "low_memory_malloc": True},
    "tunesmith-gc2-lowmem": {"gradient_checkpointing": True, "checkpoint_every": 2, "low_memory_malloc": True},
    "tunesmith-gc3-lowmem": {"gradient_checkpointing": True, "checkpoint_every": 3, "low_memory_malloc": True},
    "tunesmith-gc-lowmem128k": {"gradient_checkpointing": True, "low_memory_malloc": True, "mmap_threshold_kib": 128},
    "tunesmith-compile": {"compile": True},
    "tunesmith-sdpa-backward": {"attention_backward": "sdpa"},
    "tunesmith-plain-blocks": {"lean_activations": False},  # transformers' own RMSNorm / MLP forward (models/lean_blocks.py)
    "tunesmith-plain-blocks-lowmem": {"lean_activations": False, "low_memory_malloc": True},
    "tunesmith-nochunk": {"ce_chunk_size": 0},
    "tunesmith-fp32": {"dtype": "fp32"},
    "tunesmith-bf16": {"dtype": "bf16"},
    "tunesmith-qlora": {"method": "qlora"},
    "tunesmith-precomputed-ref": {"precompute_ref_logps": True},  # DPO: reference log-probs once, before step 1
    "tunesmith-peft-lora": {"fused_lora": False},  # peft's own LoRA forward instead of models/fused_lora.py
    # full: fp32 master weights under bf16 autocast (method.mixed_precision, TRL's bf16=True); -gc: with checkpointing
    "tunesmith-amp": {"mixed_precision": True},
    "tunesmith-amp-lowmem": {"mixed_precision": True, "low_memory_malloc": True},
    "tunesmith-amp-gc": {"mixed_precision": True, "gradient_checkpointing": True},
    "tunesmith-amp-gc2-lowmem": {"mixed_precision": True, "gradient_checkpointing": True, "checkpoint_every": 2,
                                 "low_memory_malloc": True},
}
ALIGN_KEYS = ("precompute_ref_logps",)
NON_TRAIN = ("dtype", "method", "mixed_precision", "fused_lora", *ALIGN_KEYS)
# TRL variants: SFTConfig / DPOConfig overrides. TRL 1.x defaults to bf16 autocast and gradient checkpointing;
# on a CPU without native bf16 (AVX2 only) `trl-fp32` is the peer that does not pay for emulated bf16.
# `-grouped`: transformers' LengthGroupedSampler (TRL's own option), which like tunesmith serves the longest batch
# first, so its peak RSS is the worst case of the data rather than of the random batches a short run happens to draw.
TRL_VARIANTS: dict[str, dict] = {"trl": {}, "trl-fp32": {"bf16": False},
                                 "trl-fp32-grouped": {"bf16": False, "train_sampling_strategy": "group_by_length"}}
TRL_ORDERS = ("worst-at-step-2", "worst-at-step-1", "random")  # where TRL meets tunesmith's first batch (--trl-order)
# What differs between the jobs; JOB above is shared (batch = pairs per step for dpo).
JOBS: dict[str, dict] = {
    "lora": {"method": "lora", "objective": "sft", "lr": 2e-4, "batch": 8, "data": "alpaca.jsonl"},
    "full": {"method": "full", "objective": "sft", "lr": 2e-5, "batch": 8, "data": "alpaca.jsonl"},
    "dpo": {"method": "lora", "objective": "dpo", "lr": 5e-5, "batch": 4, "data": "preference.jsonl", "beta": 0.1},
}
SFT_ONLY = ("packing",)  # tunesmith options that do not apply to preference batches


def variant_unavailable(name: str, job_name: str, device: str = "cpu") -> str | None:
    """Why a variant cannot run here (None: it can): checked before spawning, so one bad variant is a table row
    saying why, not a crash of the whole bench."""
    if name in TRL_VARIANTS:
        return None
    overrides = VARIANTS[name]
    if device == "cuda" and overrides.get("low_memory_malloc"):
        return f"{name}: low_memory_malloc tunes glibc's malloc, a CPU-only option"
    if JOBS[job_name]["objective"] != "sft" and any(overrides.get(k) for k in SFT_ONLY):
        return f"{name}: options {SFT_ONLY} apply to SFT jobs only"
    if overrides.get("precompute_ref_logps") and JOBS[job_name]["objective"] != "dpo":
        return f"{name}: precomputed reference log-probs apply to the dpo job only"
    if overrides.get("mixed_precision") and JOBS[job_name]["method"] != "full":
        return f"{name}: method.mixed_precision applies to the full job (adapters on a bf16 base always use autocast)"
    if overrides.get("method") == "qlora":
        if JOBS[job_name]["method"] == "full":
            return f"{name}: the full job trains every weight; qlora applies to the lora and dpo jobs"
        from tunesmith.config.schema import MethodConfig

        kinds = typing.get_args(MethodConfig.model_fields["kind"].annotation)
        if "qlora" not in kinds:
            return f"{name}: this tunesmith's config schema has no method.kind 'qlora' yet (kinds: {', '.join(kinds)})"
        import importlib.util

        if importlib.util.find_spec("bitsandbytes") is None:
            return f"{name}: method.kind qlora needs bitsandbytes, which is not installed"
    return None


def tunesmith_config(args: argparse.Namespace, overrides: dict):
    """The RunConfig a tunesmith variant runs: the job's settings plus the variant's overrides."""
    from tunesmith.config.schema import RunConfig

    job = JOBS[args.job]
    train = {"max_steps": args.steps, "batch_size": job["batch"], "seed": JOB["seed"], "lr": job["lr"],
             "warmup_ratio": 0.0, "scheduler": "linear", "save_every": 0, "keep_last": 1, "objective": job["objective"]}
    train.update({k: v for k, v in overrides.items() if k not in NON_TRAIN})
    model = {"name_or_path": args.model, "device": getattr(args, "device", "cpu"),
             **({"dtype": overrides["dtype"]} if "dtype" in overrides else {})}
    return RunConfig.model_validate({
        "model": model,
        "method": {"kind": overrides.get("method", job["method"]), "mixed_precision": overrides.get("mixed_precision", False),
                   "lora": {"r": JOB["r"], "alpha": JOB["alpha"], "dropout": 0.0, "targets": "all-linear",
                            "fused": overrides.get("fused_lora", True)}},
        "data": {"train": [{"path": str(args.data_dir / job["data"])}], "max_length": JOB["max_length"]},
        "align": {"beta": job.get("beta", 0.1), "ref_logps_cache": str(args.work / "ref-logps"),
                  **{k: overrides[k] for k in ALIGN_KEYS if k in overrides}},
        "train": train, "output": {"dir": str(args.work / "tunesmith-out"), "tensorboard": False}})


def worker_tunesmith(args: argparse.Namespace, overrides: dict) -> dict:
    import tunesmith.training.loop as loop
    from tunesmith.training.run import run_training

    name = next((n for n, o in VARIANTS.items() if o == overrides), "tunesmith")
    why = variant_unavailable(name, args.job, getattr(args, "device", "cpu"))
    if why:
        raise SystemExit(why)
    cfg = tunesmith_config(args, overrides)
    compile_per_step: list[float] = []
    step = loop.train_step

    def timed_step(*a, **k):  # compile time per optimizer step (0 unless torch.compile ran in it)
        before = compile_seconds()
        out = step(*a, **k)
        compile_per_step.append(compile_seconds() - before)
        return out

    if overrides.get("compile"):  # only then: importing dynamo's timers would add to the others' peak RSS
        loop.train_step = timed_step
    started = time.perf_counter()
    result = run_training(cfg, fresh=True, show_progress=False)
    rows = [h for h in result.history if "step_time" in h]
    out = _summarise([h["step_time"] for h in rows], [int(h["tokens"]) for h in rows], [h["loss"] for h in rows], args.warmup)
    out["wall_s"] = time.perf_counter() - started
    from tunesmith.models.load import dtype_name

    out["model_dtype"], out["model_dtype_resolved"] = cfg.model.dtype, dtype_name(cfg.model.dtype, cfg.model.device)
    if cfg.model.device == "cuda":
        import torch

        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    if overrides.get("compile"):
        out.update(compile_summary([h["step_time"] for h in rows], [int(h["tokens"]) for h in rows], compile_per_step, args.warmup))
    return out


def _trl_common(args: argparse.Namespace, job: dict, overrides: dict) -> dict:
    return {"output_dir": str(args.work / "trl-out"), "max_steps": args.steps, "per_device_train_batch_size": job["batch"],
            "learning_rate": job["lr"], "logging_steps": 1, "save_strategy": "no", "report_to": [],
            "max_length": JOB["max_length"], "use_cpu": getattr(args, "device", "cpu") == "cpu",
            "dataloader_num_workers": 0, "seed": JOB["seed"], **overrides}


def _lora():
    from peft import LoraConfig

    return LoraConfig(r=JOB["r"], lora_alpha=JOB["alpha"], target_modules="all-linear", lora_dropout=0.0, task_type="CAUSAL_LM")


def tunesmith_data(args: argparse.Namespace):
    """The default variant's config, its objective's batch kind and the prepared data (tokenised as in a run)."""
    from tunesmith.objectives import build_objective
    from tunesmith.training.run import prepare_data as prepare

    cfg = tunesmith_config(args, VARIANTS["tunesmith"])
    kind = build_objective(cfg.train.objective, cfg.align, cfg.rl).batch_kind
    return cfg, kind, prepare(cfg, kind)


def tunesmith_first_batch(args: argparse.Namespace) -> list[int]:
    """0-based data rows of the batch tunesmith serves first (its longest: length grouping puts it at step one)."""
    from tunesmith.training.run import build_source

    cfg, kind, data = tunesmith_data(args)
    source = build_source(kind, data.train, cfg, data.tokenizer.pad_token_id)
    first = [data.train[i] for i in source.order(0)[0]]
    return [(item.chosen if hasattr(item, "chosen") else item).line - 1 for item in first]


def trl_rows(path: Path, worst: list[int], at_step: int = 2, seed: int = JOB["seed"]) -> list[dict]:
    """The job's rows for TRL's sequential sampler: a seeded shuffle (random batches, as TRL's default) with
    `worst` (tunesmith's first batch, its longest) moved to batch `at_step`. Step 2 by default: TRL then meets
    the data's worst case once its optimizer state exists, as it would mid-epoch, so its peak RSS is the peak
    of a whole epoch; tunesmith serves that batch at step 1 and its later batches are shorter."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    if not worst:
        return rows
    chosen = set(worst)
    rest = [i for i in range(len(rows)) if i not in chosen]
    random.Random(seed).shuffle(rest)
    cut = len(worst) * (at_step - 1)
    return [rows[i] for i in [*rest[:cut], *worst, *rest[cut:]]]


def _trl_sft(args: argparse.Namespace, job: dict, model, tokenizer, callbacks: list, overrides: dict, worst: tuple):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    rows = trl_rows(args.data_dir / "prompt_completion.jsonl", *worst)
    cfg = SFTConfig(**_trl_common(args, job, overrides), packing=False)
    return SFTTrainer(model=model, args=cfg, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                      peft_config=_lora() if job["method"] == "lora" else None, callbacks=callbacks)


def _trl_dpo(args: argparse.Namespace, job: dict, model, tokenizer, callbacks: list, overrides: dict, worst: tuple):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    rows = trl_rows(args.data_dir / job["data"], *worst)
    cfg = DPOConfig(**_trl_common(args, job, overrides), beta=job["beta"])
    return DPOTrainer(model=model, args=cfg, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                      peft_config=_lora(), callbacks=callbacks)


TRL_JOBS = {"sft": _trl_sft, "dpo": _trl_dpo}


def worker_trl(args: argparse.Namespace, overrides: dict | None = None) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    job = JOBS[args.job]
    torch.manual_seed(JOB["seed"])
    times: list[float] = []
    tokens: list[int] = []
    cuda = getattr(args, "device", "cpu") == "cuda"

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            if cuda:
                torch.cuda.synchronize()
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k):
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - self.t0)

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    overrides = dict(overrides or {})
    rows = [int(i) for i in getattr(args, "trl_worst_rows", "").split(",") if i]
    order = getattr(args, "trl_order", "random")
    if rows and "train_sampling_strategy" not in overrides:  # tunesmith's first batch at step 1 or 2 of random ones
        overrides["train_sampling_strategy"] = "sequential"
    else:
        rows, order = [], overrides.get("train_sampling_strategy", "random")
    worst = (rows, 1 if order == "worst-at-step-1" else 2)
    trainer = TRL_JOBS[job["objective"]](args, job, model, tokenizer, [Timer()], overrides, worst)
    collate = trainer.data_collator

    def counting(examples):
        batch = collate(examples)
        tokens.append(int(batch["attention_mask"].sum()))  # real tokens (dpo: chosen + rejected rows)
        return batch

    trainer.data_collator = counting
    started = time.perf_counter()
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    out = _summarise(times, tokens[: len(times)], losses, args.warmup)
    out["wall_s"] = time.perf_counter() - started
    out["trl_settings"] = {"bf16": trainer.args.bf16, "gradient_checkpointing": trainer.args.gradient_checkpointing,
                           "order": order}
    if cuda:
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def run_worker(args: argparse.Namespace) -> None:
    name = args.worker
    result = worker_trl(args, TRL_VARIANTS[name]) if name in TRL_VARIANTS else worker_tunesmith(args, VARIANTS[name])
    result.update(impl=name, peak_rss_mb=_peak_rss_mb())
    Path(args.result).write_text(json.dumps(result))


def prepare_data(data_dir: Path) -> int:
    """Both formats of the docstring rows (same rows, same order)."""
    from make_stdlib_data import as_prompt_completion, docstring_rows, write

    rows = docstring_rows(0)
    write(data_dir / "alpaca.jsonl", rows)
    write(data_dir / "prompt_completion.jsonl", [as_prompt_completion(r) for r in rows])
    write(data_dir / "preference.jsonl", [as_preference(r, i) for i, r in enumerate(rows)])
    return len(rows)


def as_preference(row: dict, index: int) -> dict:
    """A deterministic pair in TRL's conversational form (read by both): chosen = the docstring, rejected =
    a seeded shuffle of its first 60% of words (shorter, scrambled; never equal to chosen)."""
    words = row["output"].split()
    cut = words[: max(2, int(len(words) * 0.6))]
    random.Random(index).shuffle(cut)
    rejected = " ".join(cut)
    if rejected == row["output"]:
        rejected = " ".join(reversed(cut)) + " ..."
    return {"prompt": [{"role": "user", "content": row["instruction"]}],
            "chosen": [{"role": "assistant", "content": row["output"]}],
            "rejected": [{"role": "assistant", "content": rejected}]}


def resolve_model(args: argparse.Namespace) -> str:
    """The HF folder both sides load: --model, a random Llama from --model-config, or the bundled model. Sets
    args.model and returns the tag that names a non-default model in result files and README markers."""
    from tunesmith.models.load import BUNDLED_ALIAS, resolve_model_path

    bundled = str(resolve_model_path(BUNDLED_ALIAS))
    if args.model_config:
        from _models import build_random_model

        label, folder = build_random_model(args.model_config, args.model_cache, bundled)
        args.model = str(folder)
        return label
    args.model = str(resolve_model_path(args.model)) if args.model else bundled
    return "" if args.model == bundled else Path(args.model).name.lower()


def default_variants() -> str:
    """tunesmith against TRL's defaults, or against TRL in fp32 where bf16 is emulated (TRL's default bf16
    autocast ran one step in 713 s on an AVX2-only CPU: a peer nobody would run there)."""
    from tunesmith.models.load import fast_bf16

    return "tunesmith,trl" if fast_bf16("cpu") else "tunesmith,trl-fp32"


def main() -> None:
    parser = argparse.ArgumentParser(description="tunesmith vs TRL: LoRA SFT, full fine-tuning, LoRA DPO")
    parser.add_argument("--job", choices=tuple(JOBS), default=os.environ.get("BENCH_JOB", "lora"))
    parser.add_argument("--steps", type=int, default=int(os.environ.get("STEPS", 12)))
    parser.add_argument("--warmup", type=int, default=int(os.environ.get("WARMUP", 2)))
    parser.add_argument("--rounds", type=int, default=int(os.environ.get("ROUNDS", 1)))
    parser.add_argument("--variants", default=os.environ.get("VARIANTS", default_variants()))
    parser.add_argument("--model", default=None, help="HF folder (default: the bundled SmolLM2-135M-Instruct)")
    parser.add_argument("--model-config", default=os.environ.get("MODEL_CONFIG"),
                        help="random-weight Llama instead: a preset (llama-0.5b, llama-1b, llama-tiny) or a config.json")
    parser.add_argument("--model-cache", type=Path, default=HERE.parent / "runs" / "bench-models",
                        help="where --model-config folders are built once and reused")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=os.environ.get("BENCH_DEVICE", "cpu"))
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument("--no-readme", action="store_true", help="do not rewrite the table in bench/README.md")
    parser.add_argument("--label", default=os.environ.get("BENCH_LABEL", ""),
                        help="appended to the results file name, so a second run of the day keeps the first one's file")
    parser.add_argument("--trl-order", choices=TRL_ORDERS, default=TRL_ORDERS[0],
                        help="TRL's batches: random, with tunesmith's first (longest) batch at step 2 (default: TRL's "
                             "peak is then its epoch's worst case) or step 1, or TRL's own random sampler")
    parser.add_argument("--trl-worst-rows", default="", help=argparse.SUPPRESS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.data_dir, args.work = Path(args.data_dir), Path(args.work)
        return run_worker(args)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [n for n in names if n not in TRL_VARIANTS and n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(TRL_VARIANTS)}, {', '.join(VARIANTS)}")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            parser.error("--device cuda: torch sees no CUDA device here")
    refused = {n: why for n in names if (why := variant_unavailable(n, args.job, args.device))}
    for why in refused.values():
        print(f"not run: {why}", file=sys.stderr, flush=True)
    if len(refused) == len(names):
        parser.error("no requested variant can run here (see the messages above)")
    model_tag = resolve_model(args)
    tag = "-".join(t for t in ("cuda" if args.device == "cuda" else "", model_tag) if t)  # own table and file name
    args.work = args.work or Path(tempfile.mkdtemp(prefix="tunesmith-bench-"))
    args.data_dir = args.data_dir or args.work / "data"
    rows = prepare_data(args.data_dir)
    runnable = [n for n in names if n not in refused]
    # tunesmith's first batch, for the TRL runs that do not bring their own sampler
    reorder = any(n in TRL_VARIANTS and "train_sampling_strategy" not in TRL_VARIANTS[n] for n in runnable)
    worst = tunesmith_first_batch(args) if args.trl_order != "random" and reorder else []
    flags = ["--trl-order", args.trl_order, "--trl-worst-rows", ",".join(map(str, worst)),
             "--steps", str(args.steps), "--warmup", str(args.warmup), "--model", args.model, "--data-dir", str(args.data_dir),
             "--work", str(args.work), "--job", args.job, "--device", args.device]
    runs = [{"impl": n, "error": why, "refused": True, "load_before": os.getloadavg()[0]} for n, why in refused.items()]
    for round_ in range(args.rounds):
        for name in runnable if round_ % 2 == 0 else runnable[::-1]:  # alternate who goes first
            print(f"round {round_ + 1}/{args.rounds}: {name} ...", file=sys.stderr, flush=True)
            runs.append(spawn(Path(__file__).resolve(), name, args, flags))
            r = runs[-1]
            print(f"  {r.get('tokens_per_s_median', 0):.1f} tok/s, {r.get('peak_rss_mb', 0):.0f} MB, "
                  f"loss {r.get('final_loss', float('nan')):.4f} {r.get('error', '')[:60]} {r.get('error', '')[-240:]}",
                  file=sys.stderr, flush=True)
    info = machine(args.device)
    baseline = next((n for n in TRL_VARIANTS if n in runnable), "trl")
    record = {"date": dt.date.today().isoformat(), "machine": info, "job_name": args.job, "device": args.device,
              "tag": tag, "model": args.model, "model_label": model_tag or "smollm2-135m-instruct",
              "job": {**JOB, **JOBS[args.job], "rows": rows, "lora_dropout": 0.0}, "steps": args.steps, "warmup": args.warmup,
              "rounds": args.rounds, "trl_order": args.trl_order, "trl_worst_rows": worst,
              "variants": {n: VARIANTS.get(n, TRL_VARIANTS.get(n)) for n in names}, "baseline": baseline,
              "load_before": [round(r["load_before"], 2) for r in runs if not r.get("refused")], "runs": runs,
              "summary": summarise(runs, baseline)}
    record["estimate_check"] = check_estimate(args, runs, JOB, JOBS, VARIANTS)
    args.results.mkdir(parents=True, exist_ok=True)
    suffix = ("" if args.job == "lora" else f"-{args.job}") + (f"-{tag}" if tag else "") + (f"-{args.label}" if args.label else "")
    out = unused_path(args.results / f"{record['date']}-{info['slug']}{suffix}.json")
    out.write_text(json.dumps(record, indent=1))
    if not args.no_readme:
        update_readme(HERE / "README.md", record, f"results/{out.name}")
    print(json.dumps({"result": str(out), "summary": record["summary"], "estimate_check": record["estimate_check"]}, indent=1))


if __name__ == "__main__":
    main()
