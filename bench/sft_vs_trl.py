"""tunesmith vs TRL on identical data, model, adapter, batch, steps and seeds: LoRA SFT (SFTTrainer), full
fine-tuning (SFTTrainer) and LoRA DPO (DPOTrainer), chosen with `--job lora|full|dpo`.

Each run is a fresh subprocess (clean peak-RSS measurement); runs alternate between implementations so
slow drifts in machine load hit both. Reports real (non-padding) tokens/s as the median of per-step rates
after warm-up, the aggregate rate, step time, peak RSS and final loss; checks `tunesmith estimate`'s memory
figure (with each variant's checkpointing, CE chunk and dtype) against each tunesmith variant's peak RSS;
writes bench/results/<date>-<machine>.json and the table in bench/README.md.

    python bench/sft_vs_trl.py [--job lora] [--steps 12] [--rounds 1] [--variants tunesmith,trl] [--warmup 2]

Job (issue 6): SmolLM2-135M-Instruct (bundled), LoRA r=16 alpha=32 all-linear dropout 0, batch 8,
max length 512, 587 chat rows whose answers are standard-library docstrings, lr 2e-4 linear decay, no warmup.
`--job full`: the same with every weight trained (lr 2e-5). `--job dpo`: LoRA DPO (sigmoid, beta 0.1, lr 5e-5,
reference = adapters disabled in both) on 4 pairs per step built from the same rows: chosen = the docstring,
rejected = a seeded shuffle of its first 60% of words. `tunesmith-compile` reports the torch.compile time
(dynamo's own timers) separately, and its throughput over the steps that compiled nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

JOB = {"batch": 8, "max_length": 512, "r": 16, "alpha": 32, "lr": 2e-4, "seed": 0}
# tunesmith variants: config overrides on top of the job (the default config is the first entry).
VARIANTS: dict[str, dict] = {
    "tunesmith": {},
    "tunesmith-packed": {"packing": True},
    "tunesmith-gc": {"gradient_checkpointing": True},
    "tunesmith-packed-gc": {"packing": True, "gradient_checkpointing": True},
    "tunesmith-gc2": {"gradient_checkpointing": True, "checkpoint_every": 2},
    "tunesmith-compile": {"compile": True},
    "tunesmith-nochunk": {"ce_chunk_size": 0},
    "tunesmith-fp32": {"dtype": "fp32"},
}
# What differs between the jobs; JOB above is shared (batch = pairs per step for dpo).
JOBS: dict[str, dict] = {
    "lora": {"method": "lora", "objective": "sft", "lr": 2e-4, "batch": 8, "data": "alpaca.jsonl"},
    "full": {"method": "full", "objective": "sft", "lr": 2e-5, "batch": 8, "data": "alpaca.jsonl"},
    "dpo": {"method": "lora", "objective": "dpo", "lr": 5e-5, "batch": 4, "data": "preference.jsonl", "beta": 0.1},
}
SFT_ONLY = ("packing",)  # tunesmith options that do not apply to preference batches
COMPILE_TIMERS = ("_compile.compile_inner", "compile_fx.<locals>.bw_compiler")  # forward graphs, lazy backward graphs


def compile_seconds() -> float:
    """Seconds torch.compile has spent so far in this process (dynamo forward + AOT backward compilation)."""
    try:
        from torch._dynamo.utils import compilation_time_metrics
    except ImportError:
        return 0.0
    return float(sum(sum(compilation_time_metrics.get(k, [])) for k in COMPILE_TIMERS))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _summarise(step_times: list[float], step_tokens: list[int], losses: list[float], warmup: int) -> dict:
    times, tokens = step_times[warmup:], step_tokens[warmup:]
    rates = [n / t for n, t in zip(tokens, times)]
    return {
        "steps": len(step_times), "warmup": warmup,
        "tokens_per_s_median": statistics.median(rates), "tokens_per_s_aggregate": sum(tokens) / sum(times),
        "sec_per_step_median": statistics.median(times), "real_tokens_per_step": sum(tokens) / len(tokens),
        "first_step_s": step_times[0], "final_loss": losses[-1], "losses": losses,
        "max_step_tokens": max(step_tokens),  # peak RSS follows the biggest batch seen (tunesmith serves it first)
        "step_tokens": step_tokens, "step_times": [round(t, 3) for t in step_times],
    }


def worker_tunesmith(args: argparse.Namespace, overrides: dict) -> dict:
    import tunesmith.training.loop as loop
    from tunesmith.config.schema import RunConfig
    from tunesmith.training.run import run_training

    job = JOBS[args.job]
    if job["objective"] != "sft" and any(overrides.get(k) for k in SFT_ONLY):
        raise SystemExit(f"variant options {SFT_ONLY} apply to SFT jobs only")
    train = {"max_steps": args.steps, "batch_size": job["batch"], "seed": JOB["seed"], "lr": job["lr"],
             "warmup_ratio": 0.0, "scheduler": "linear", "save_every": 0, "keep_last": 1, "objective": job["objective"]}
    train.update({k: v for k, v in overrides.items() if k != "dtype"})
    cfg = RunConfig.model_validate({
        "model": {"name_or_path": args.model, "dtype": overrides.get("dtype", "bf16")},
        "method": {"kind": job["method"], "lora": {"r": JOB["r"], "alpha": JOB["alpha"], "dropout": 0.0, "targets": "all-linear"}},
        "data": {"train": [{"path": str(args.data_dir / job["data"])}], "max_length": JOB["max_length"]},
        "align": {"beta": job.get("beta", 0.1)},
        "train": train, "output": {"dir": str(args.work / "tunesmith-out"), "tensorboard": False}})
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
    if overrides.get("compile"):
        out.update(compile_summary([h["step_time"] for h in rows], [int(h["tokens"]) for h in rows], compile_per_step, args.warmup))
    return out


def compile_summary(times: list[float], tokens: list[int], compile_s: list[float], warmup: int) -> dict:
    """torch.compile cost apart from steady state: total compile seconds, the steps that compiled, and the
    median rate over post-warm-up steps that compiled nothing (dynamic-shape recompiles hit later steps too)."""
    quiet = [n / t for i, (n, t, c) in enumerate(zip(tokens, times, compile_s)) if i >= warmup and c < 0.05]
    return {"compile_s": round(sum(compile_s), 2), "compile_steps": [i + 1 for i, c in enumerate(compile_s) if c >= 0.05],
            "compile_s_per_step": [round(c, 2) for c in compile_s],
            "tokens_per_s_steady": statistics.median(quiet) if quiet else None, "steady_steps": len(quiet)}


def _trl_sft(args: argparse.Namespace, job: dict, model, tokenizer, callbacks: list):
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    rows = [json.loads(line) for line in (args.data_dir / "prompt_completion.jsonl").read_text().splitlines()]
    cfg = SFTConfig(output_dir=str(args.work / "trl-out"), max_steps=args.steps, per_device_train_batch_size=job["batch"],
                    learning_rate=job["lr"], logging_steps=1, save_strategy="no", report_to=[], max_length=JOB["max_length"],
                    use_cpu=True, dataloader_num_workers=0, seed=JOB["seed"], packing=False)
    lora = LoraConfig(r=JOB["r"], lora_alpha=JOB["alpha"], target_modules="all-linear", lora_dropout=0.0, task_type="CAUSAL_LM")
    return SFTTrainer(model=model, args=cfg, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                      peft_config=lora if job["method"] == "lora" else None, callbacks=callbacks)


def _trl_dpo(args: argparse.Namespace, job: dict, model, tokenizer, callbacks: list):
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    rows = [json.loads(line) for line in (args.data_dir / job["data"]).read_text().splitlines()]
    cfg = DPOConfig(output_dir=str(args.work / "trl-out"), max_steps=args.steps, per_device_train_batch_size=job["batch"],
                    learning_rate=job["lr"], logging_steps=1, save_strategy="no", report_to=[], max_length=JOB["max_length"],
                    use_cpu=True, dataloader_num_workers=0, seed=JOB["seed"], beta=job["beta"])
    lora = LoraConfig(r=JOB["r"], lora_alpha=JOB["alpha"], target_modules="all-linear", lora_dropout=0.0, task_type="CAUSAL_LM")
    return DPOTrainer(model=model, args=cfg, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                      peft_config=lora, callbacks=callbacks)


TRL_JOBS = {"sft": _trl_sft, "dpo": _trl_dpo}


def worker_trl(args: argparse.Namespace) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    job = JOBS[args.job]
    torch.manual_seed(JOB["seed"])
    times: list[float] = []
    tokens: list[int] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.t0)

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    trainer = TRL_JOBS[job["objective"]](args, job, model, tokenizer, [Timer()])
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
    return out


def run_worker(args: argparse.Namespace) -> None:
    name = args.worker
    result = worker_trl(args) if name == "trl" else worker_tunesmith(args, VARIANTS[name])
    result.update(impl=name, peak_rss_mb=_peak_rss_mb())
    Path(args.result).write_text(json.dumps(result))


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    isa = [f for f in ("amx_bf16", "avx512_bf16", "avx512f", "avx2") if f in flags]
    versions = {}
    for pkg in ("torch", "transformers", "peft", "trl", "tunesmith"):
        try:
            from importlib.metadata import version

            versions[pkg] = version(pkg)
        except Exception:  # noqa: BLE001 - a missing package is reported, not fatal
            versions[pkg] = None
    return {"cpu": cpu, "cores": os.cpu_count(), "isa": isa, "python": platform.python_version(), "versions": versions,
            "slug": f"{re.sub(r'[^a-z0-9]+', '-', cpu.lower()).strip('-')[:24]}-{os.cpu_count()}c"}


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


def spawn(name: str, args: argparse.Namespace) -> dict:
    result = args.work / f"{name}-{time.monotonic_ns()}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--result", str(result), "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--model", args.model, "--data-dir", str(args.data_dir), "--work", str(args.work),
           "--job", args.job]
    load = os.getloadavg()[0]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    if proc.returncode != 0:
        killed = " (SIGKILL: out of memory?)" if proc.returncode == -9 else ""
        return {"impl": name, "error": f"exit {proc.returncode}{killed}: {proc.stderr[-3000:]}", "load_before": load}
    out = json.loads(result.read_text())
    out["load_before"], out["load_after"] = load, os.getloadavg()[0]  # 1-min load average: others' work skews timings
    return out


def estimate_settings(overrides: dict) -> dict | None:
    """`estimate()` keyword arguments for a tunesmith variant's config overrides (None: a variant it does not model)."""
    from tunesmith.config.schema import TrainConfig

    if overrides.get("compile"):
        return None  # torch.compile's fused graphs save other tensors than eager mode
    defaults = TrainConfig()
    checkpointing = overrides.get("gradient_checkpointing", defaults.gradient_checkpointing)
    return {"checkpoint_every": overrides.get("checkpoint_every", defaults.checkpoint_every) if checkpointing else 0,
            "ce_chunk_size": overrides.get("ce_chunk_size", defaults.ce_chunk_size), "base_dtype": overrides.get("dtype", "bf16"),
            "low_memory_malloc": overrides.get("low_memory_malloc", defaults.low_memory_malloc)}


def _estimate_flags(settings: dict) -> str:
    """The `tunesmith estimate` options that differ from its defaults, as typed on the command line."""
    flags = {"checkpoint_every": ("--checkpoint-every", 0), "ce_chunk_size": ("--ce-chunk-size", 1024),
             "base_dtype": ("--base-dtype", "bf16"), "low_memory_malloc": ("--low-memory-malloc", False)}
    out = []
    for key, (flag, default) in flags.items():
        if settings.get(key, default) != default:
            out.append(flag if isinstance(default, bool) else f"{flag} {settings[key]}")
    return " ".join(out)


def check_estimate(args: argparse.Namespace, runs: list[dict]) -> dict:
    """`tunesmith estimate` for each tunesmith variant (with its checkpointing, CE chunk, dtype) vs its measured
    peak RSS (target: within 25%; SFT jobs). Top-level keys: the default variant; `variants`: every variant."""
    from tunesmith.estimate import estimate

    job = JOBS[args.job]
    if job["objective"] != "sft":
        return {"skipped": f"estimate covers SFT only, not {job['objective']}"}
    config = json.loads((Path(args.model) / "config.json").read_text())
    checks: dict[str, dict] = {}
    for name in dict.fromkeys(["tunesmith", *(r["impl"] for r in runs if r.get("impl") in VARIANTS)]):
        settings = estimate_settings(VARIANTS[name])
        if settings is None:
            checks[name] = {"skipped": "torch.compile is not modelled"}
            continue
        est = estimate(config, job["method"], job["batch"], JOB["max_length"], "cpu", JOB["r"], peak_flops=1.0, **settings)
        check = {"estimate_gib": est.total_gib, "breakdown_gib": est.memory_gib, "flags": _estimate_flags(settings)}
        measured = [r["peak_rss_mb"] for r in runs if r.get("impl") == name and "error" not in r]
        if measured:
            peak_gib = statistics.median(measured) / 1024
            check.update(measured_peak_rss_gib=round(peak_gib, 3), relative_error=round(est.total_gib / peak_gib - 1, 3),
                         within_25pct=abs(est.total_gib / peak_gib - 1) <= 0.25)
        checks[name] = check
    return {**{k: v for k, v in checks["tunesmith"].items() if k != "flags"}, "variants": checks}


def estimate_lines(record: dict, job: str) -> list[str]:
    """README lines: one per variant whose estimate was checked against a measured peak (older records: one)."""
    est = record["estimate_check"]
    checks = est.get("variants") or {"tunesmith": est}
    measured = {n: c for n, c in checks.items() if "measured_peak_rss_gib" in c}
    lines = []
    for name, c in measured.items():
        options = f", {c['flags']}" if c.get("flags") else ""
        variant = "" if list(measured) == ["tunesmith"] else f"{name}: "
        lines.append(f"{'- ' if variant else ''}{variant}`tunesmith estimate` ({JOBS[job]['method']}, batch {JOBS[job]['batch']} x 512{options}): "
                     f"{c['estimate_gib']} GiB vs measured peak RSS {c['measured_peak_rss_gib']} GiB "
                     f"({c['relative_error']:+.0%}; within 25%: {c['within_25pct']}).")
    return lines


def summarise(runs: list[dict]) -> dict:
    table: dict[str, dict] = {}
    for name in dict.fromkeys(r["impl"] for r in runs):
        ok = [r for r in runs if r["impl"] == name and "error" not in r]
        if not ok:
            table[name] = {"error": next(r["error"] for r in runs if r["impl"] == name)[-500:]}
            continue
        med = lambda key: statistics.median(r[key] for r in ok)  # noqa: E731
        table[name] = {"runs": len(ok), "tokens_per_s": round(med("tokens_per_s_median"), 1),
                       "tokens_per_s_aggregate": round(med("tokens_per_s_aggregate"), 1),
                       "sec_per_step": round(med("sec_per_step_median"), 2), "peak_rss_mb": round(med("peak_rss_mb")),
                       "final_loss": round(med("final_loss"), 4), "first_step_s": round(med("first_step_s"), 1),
                       "max_step_tokens": max(r.get("max_step_tokens", 0) for r in ok)}
        if all("compile_s" in r for r in ok):  # torch.compile: its cost, apart from steady-state throughput
            steady = [r["tokens_per_s_steady"] for r in ok if r["tokens_per_s_steady"] is not None]
            table[name].update(compile_s=round(med("compile_s"), 1),
                               tokens_per_s_steady=round(statistics.median(steady), 1) if steady else None)
    trl = table.get("trl", {})
    for name, row in table.items():
        if name != "trl" and "tokens_per_s" in row and "tokens_per_s" in trl:
            row["speedup_vs_trl"] = round(row["tokens_per_s"] / trl["tokens_per_s"], 2)
            row["rss_vs_trl"] = round(row["peak_rss_mb"] / trl["peak_rss_mb"], 2)
    return table


MARK_START, MARK_END = "<!-- results:start -->", "<!-- results:end -->"


def markers(job: str) -> tuple[str, str]:
    """README markers of a job's table (the LoRA job keeps the original ones)."""
    return (MARK_START, MARK_END) if job == "lora" else (f"<!-- results-{job}:start -->", f"<!-- results-{job}:end -->")


def update_readme(readme: Path, record: dict, result_file: str) -> None:
    """Replace the job's table between its markers with this run's summary (appended when missing)."""
    job = record.get("job_name", "lora")
    start, end = markers(job)
    lines = [start, "", *([f"Job: `--job {job}` ({JOBS[job]['objective']}, {JOBS[job]['method']})", ""] if job != "lora" else []),
             f"Latest: `{result_file}` — {record['machine']['cpu']}, {record['machine']['cores']} cores, "
             f"{record['steps']} steps ({record['warmup']} warm-up), load average before runs "
             f"{min(record['load_before'])}–{max(record['load_before'])} (1-min average on {record['machine']['cores']} cores; "
             "above the core count the timings measure the other work as much as ours).", "",
             "| implementation | real tokens/s (median) | aggregate tokens/s | s/step | peak RSS (MB) | final loss | vs TRL speed | vs TRL RSS |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, row in record["summary"].items():
        if "error" in row:
            lines.append(f"| {name} | failed | | | | | | |")
            continue
        lines.append(f"| {name} | {row['tokens_per_s']} | {row['tokens_per_s_aggregate']} | {row['sec_per_step']} | "
                     f"{row['peak_rss_mb']} | {row['final_loss']} | {row.get('speedup_vs_trl', '—')}x | {row.get('rss_vs_trl', '—')}x |")
    compiled = {n: r for n, r in record["summary"].items() if r.get("compile_s") is not None}
    for name, row in compiled.items():
        lines += ["", f"{name}: torch.compile took {row['compile_s']} s (dynamo + AOT backward timers, median of runs); "
                      f"steady-state {row['tokens_per_s_steady']} tokens/s over post-warm-up steps that compiled nothing."]
    checked = estimate_lines(record, job)
    if checked:
        lines += ["", *checked]
    lines += ["", end]
    text = readme.read_text() if readme.exists() else f"# bench\n\n{start}\n{end}\n"
    if start not in text:
        text += f"\n{start}\n{end}\n"
    head, rest = text.split(start, 1)
    readme.write_text(head + "\n".join(lines) + rest.split(end, 1)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description="tunesmith vs TRL: LoRA SFT, full fine-tuning, LoRA DPO")
    parser.add_argument("--job", choices=tuple(JOBS), default=os.environ.get("BENCH_JOB", "lora"))
    parser.add_argument("--steps", type=int, default=int(os.environ.get("STEPS", 12)))
    parser.add_argument("--warmup", type=int, default=int(os.environ.get("WARMUP", 2)))
    parser.add_argument("--rounds", type=int, default=int(os.environ.get("ROUNDS", 1)))
    parser.add_argument("--variants", default=os.environ.get("VARIANTS", "tunesmith,trl"))
    parser.add_argument("--model", default=None, help="HF folder (default: the bundled SmolLM2-135M-Instruct)")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument("--no-readme", action="store_true", help="do not rewrite the table in bench/README.md")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.data_dir, args.work = Path(args.data_dir), Path(args.work)
        return run_worker(args)
    from tunesmith.models.load import BUNDLED_ALIAS, resolve_model_path

    args.model = str(resolve_model_path(args.model or BUNDLED_ALIAS))
    args.work = args.work or Path(tempfile.mkdtemp(prefix="tunesmith-bench-"))
    args.data_dir = args.data_dir or args.work / "data"
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [n for n in names if n != "trl" and n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: trl, {', '.join(VARIANTS)}")
    rows = prepare_data(args.data_dir)
    runs = []
    for round_ in range(args.rounds):
        for name in names if round_ % 2 == 0 else names[::-1]:  # alternate who goes first
            print(f"round {round_ + 1}/{args.rounds}: {name} ...", file=sys.stderr, flush=True)
            runs.append(spawn(name, args))
            r = runs[-1]
            print(f"  {r.get('tokens_per_s_median', 0):.1f} tok/s, {r.get('peak_rss_mb', 0):.0f} MB, "
                  f"loss {r.get('final_loss', float('nan')):.4f} {r.get('error', '')[:60]} {r.get('error', '')[-240:]}",
                  file=sys.stderr, flush=True)
    info = machine()
    record = {"date": dt.date.today().isoformat(), "machine": info, "job_name": args.job,
              "job": {**JOB, **JOBS[args.job], "rows": rows, "lora_dropout": 0.0},
              "steps": args.steps, "warmup": args.warmup, "rounds": args.rounds, "variants": {n: VARIANTS.get(n) for n in names},
              "load_before": [round(r["load_before"], 2) for r in runs], "runs": runs, "summary": summarise(runs)}
    record["estimate_check"] = check_estimate(args, runs)
    args.results.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.job == "lora" else f"-{args.job}"
    out = args.results / f"{record['date']}-{info['slug']}{suffix}.json"
    out.write_text(json.dumps(record, indent=1))
    if not args.no_readme:
        update_readme(HERE / "README.md", record, f"results/{out.name}")
    print(json.dumps({"result": str(out), "summary": record["summary"], "estimate_check": record["estimate_check"]}, indent=1))


if __name__ == "__main__":
    main()
