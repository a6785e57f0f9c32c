"""LoRA SFT, tunesmith vs TRL's SFTTrainer, on identical data, model, adapter, batch, steps and seeds.

Each run is a fresh subprocess (clean peak-RSS measurement); runs alternate between implementations so
slow drifts in machine load hit both. Reports real (non-padding) tokens/s as the median of per-step rates
after warm-up, the aggregate rate, step time, peak RSS and final loss; checks `tunesmith estimate`'s memory
figure against tunesmith's measured peak RSS; writes bench/results/<date>-<machine>.json and the table in
bench/README.md.

    python bench/sft_vs_trl.py [--steps 12] [--rounds 1] [--variants tunesmith,trl] [--warmup 2]

Job (issue 6): SmolLM2-135M-Instruct (bundled), LoRA r=16 alpha=32 all-linear dropout 0, batch 8,
max length 512, 587 chat rows whose answers are standard-library docstrings, lr 2e-4 linear decay, no warmup.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
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
        "step_tokens": step_tokens, "step_times": [round(t, 3) for t in step_times],
    }


def worker_tunesmith(args: argparse.Namespace, overrides: dict) -> dict:
    from tunesmith.config.schema import RunConfig
    from tunesmith.training.run import run_training

    train = {"max_steps": args.steps, "batch_size": JOB["batch"], "seed": JOB["seed"], "lr": JOB["lr"],
             "warmup_ratio": 0.0, "scheduler": "linear", "save_every": 0, "keep_last": 1}
    train.update({k: v for k, v in overrides.items() if k != "dtype"})
    cfg = RunConfig.model_validate({
        "model": {"name_or_path": args.model, "dtype": overrides.get("dtype", "bf16")},
        "method": {"kind": "lora", "lora": {"r": JOB["r"], "alpha": JOB["alpha"], "dropout": 0.0, "targets": "all-linear"}},
        "data": {"train": [{"path": str(args.data_dir / "alpaca.jsonl")}], "max_length": JOB["max_length"]},
        "train": train, "output": {"dir": str(args.work / "tunesmith-out"), "tensorboard": False}})
    started = time.perf_counter()
    result = run_training(cfg, fresh=True, show_progress=False)
    rows = [h for h in result.history if "step_time" in h]
    out = _summarise([h["step_time"] for h in rows], [int(h["tokens"]) for h in rows], [h["loss"] for h in rows], args.warmup)
    out["wall_s"] = time.perf_counter() - started
    return out


def worker_trl(args: argparse.Namespace) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    torch.manual_seed(JOB["seed"])
    rows = [json.loads(line) for line in (args.data_dir / "prompt_completion.jsonl").read_text().splitlines()]
    times: list[float] = []
    tokens: list[int] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.t0)

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    cfg = SFTConfig(output_dir=str(args.work / "trl-out"), max_steps=args.steps, per_device_train_batch_size=JOB["batch"],
                    learning_rate=JOB["lr"], logging_steps=1, save_strategy="no", report_to=[], max_length=JOB["max_length"],
                    use_cpu=True, dataloader_num_workers=0, seed=JOB["seed"], packing=False)
    lora = LoraConfig(r=JOB["r"], lora_alpha=JOB["alpha"], target_modules="all-linear", lora_dropout=0.0, task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                         peft_config=lora, callbacks=[Timer()])
    collate = trainer.data_collator

    def counting(examples):
        batch = collate(examples)
        tokens.append(int(batch["attention_mask"].sum()))
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
    return len(rows)


def spawn(name: str, args: argparse.Namespace) -> dict:
    result = args.work / f"{name}-{time.monotonic_ns()}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--result", str(result), "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--model", args.model, "--data-dir", str(args.data_dir), "--work", str(args.work)]
    load = os.getloadavg()[0]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    if proc.returncode != 0:
        return {"impl": name, "error": proc.stderr[-3000:], "load_before": load}
    out = json.loads(result.read_text())
    out["load_before"], out["load_after"] = load, os.getloadavg()[0]  # 1-min load average: others' work skews timings
    return out


def check_estimate(args: argparse.Namespace, runs: list[dict]) -> dict:
    """`tunesmith estimate` for the default tunesmith run vs its measured peak RSS (target: within 25%)."""
    from tunesmith.estimate import estimate

    config = json.loads((Path(args.model) / "config.json").read_text())
    est = estimate(config, "lora", JOB["batch"], JOB["max_length"], "cpu", JOB["r"], peak_flops=1.0)
    measured = [r["peak_rss_mb"] for r in runs if r.get("impl") == "tunesmith" and "error" not in r]
    if not measured:
        return {"estimate_gib": est.total_gib, "breakdown_gib": est.memory_gib}
    peak_gib = statistics.median(measured) / 1024
    return {"estimate_gib": est.total_gib, "breakdown_gib": est.memory_gib, "measured_peak_rss_gib": round(peak_gib, 3),
            "relative_error": round(est.total_gib / peak_gib - 1, 3), "within_25pct": abs(est.total_gib / peak_gib - 1) <= 0.25}


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
                       "final_loss": round(med("final_loss"), 4), "first_step_s": round(med("first_step_s"), 1)}
    trl = table.get("trl", {})
    for name, row in table.items():
        if name != "trl" and "tokens_per_s" in row and "tokens_per_s" in trl:
            row["speedup_vs_trl"] = round(row["tokens_per_s"] / trl["tokens_per_s"], 2)
            row["rss_vs_trl"] = round(row["peak_rss_mb"] / trl["peak_rss_mb"], 2)
    return table


MARK_START, MARK_END = "<!-- results:start -->", "<!-- results:end -->"


def update_readme(readme: Path, record: dict, result_file: str) -> None:
    """Replace the table between the markers with this run's summary."""
    lines = [MARK_START, "",
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
    est = record["estimate_check"]
    if "measured_peak_rss_gib" in est:
        lines += ["", f"`tunesmith estimate` (lora, batch 8 x 512): {est['estimate_gib']} GiB vs measured peak RSS "
                      f"{est['measured_peak_rss_gib']} GiB ({est['relative_error']:+.0%}; within 25%: {est['within_25pct']})."]
    lines += ["", MARK_END]
    text = readme.read_text() if readme.exists() else f"# bench\n\n{MARK_START}\n{MARK_END}\n"
    if MARK_START not in text:
        text += f"\n{MARK_START}\n{MARK_END}\n"
    head, rest = text.split(MARK_START, 1)
    readme.write_text(head + "\n".join(lines) + rest.split(MARK_END, 1)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description="LoRA SFT: tunesmith vs TRL")
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
                  f"loss {r.get('final_loss', float('nan')):.4f} {r.get('error', '')[-300:]}", file=sys.stderr, flush=True)
    info = machine()
    record = {"date": dt.date.today().isoformat(), "machine": info, "job": {**JOB, "rows": rows, "lora_dropout": 0.0},
              "steps": args.steps, "warmup": args.warmup, "rounds": args.rounds, "variants": {n: VARIANTS.get(n) for n in names},
              "load_before": [round(r["load_before"], 2) for r in runs], "runs": runs, "summary": summarise(runs)}
    record["estimate_check"] = check_estimate(args, runs)
    args.results.mkdir(parents=True, exist_ok=True)
    out = args.results / f"{record['date']}-{info['slug']}.json"
    out.write_text(json.dumps(record, indent=1))
    if not args.no_readme:
        update_readme(HERE / "README.md", record, f"results/{out.name}")
    print(json.dumps({"result": str(out), "summary": record["summary"], "estimate_check": record["estimate_check"]}, indent=1))


if __name__ == "__main__":
    main()
