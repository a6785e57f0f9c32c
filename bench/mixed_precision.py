"""Full fine-tuning in fp32 vs mixed precision (`method.mixed_precision`: fp32 master weights under bf16
autocast, TRL's `bf16=True`): held-out loss after every step on the same batches, and the step times.

Why it matters: under autocast the forward pass sees the fp32 weights rounded to bf16, whose step is ~2^-8 of
a weight's magnitude (~1e-4 for a weight of 0.03), while an AdamW update at lr 2e-5 moves a weight by ~2e-5; such an
update changes the bf16 copy only when it crosses a rounding boundary. The fp32 masters keep every update, so
the two runs converge over many steps, but early steps of a small-lr run learn less. This bench measures how
much on the issue-6 full job (SmolLM2-135M, batch 8 x 512, lr 2e-5 linear, the stdlib docstring rows; 64 rows
held out) and writes `results/<date>-<machine>-mixed-precision.json` plus a plot.

    python bench/mixed_precision.py [--steps 24] [--eval-every 4]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _harness import machine  # noqa: E402


def worker(args: argparse.Namespace) -> None:
    from tunesmith.config.schema import RunConfig
    from tunesmith.training.run import run_training

    cfg = RunConfig.model_validate({
        "model": {"dtype": "bf16" if args.mixed else "fp32"},
        "method": {"kind": "full", "mixed_precision": args.mixed},
        "data": {"train": [{"path": str(args.data)}], "max_length": 512, "eval_fraction": 0.1},
        "train": {"max_steps": args.steps, "batch_size": 8, "lr": 2e-5, "warmup_ratio": 0.0, "scheduler": "linear",
                  "seed": 0, "eval_every": args.eval_every, "save_every": 0, "keep_last": 1},
        "output": {"dir": str(args.work / ("amp" if args.mixed else "fp32")), "tensorboard": False}})
    result = run_training(cfg, fresh=True, show_progress=False)
    rows = result.history
    out = {"train": [{"step": r["step"], "loss": r["loss"], "step_time": r["step_time"], "tokens": r["tokens"]}
                     for r in rows if "step_time" in r],
           "eval": [{"step": r["step"], "loss": r["eval_loss"]} for r in rows if "eval_loss" in r]}
    Path(args.result).write_text(json.dumps(out))


def plot(runs: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, run in runs.items():
        ax.plot([e["step"] for e in run["eval"]], [e["loss"] for e in run["eval"]], marker="o", label=name)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("held-out loss")
    ax.set_title("full fine-tuning, lr 2e-5: fp32 vs bf16 mixed precision")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--eval-every", type=int, default=4)
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mixed", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    from tunesmith.models.load import fast_bf16

    if not fast_bf16("cpu"):
        raise SystemExit("bf16 is emulated on this CPU: mixed precision would only be slower; nothing to measure")
    work = Path(tempfile.mkdtemp(prefix="tunesmith-mp-"))
    data = work / "alpaca.jsonl"
    subprocess.run([sys.executable, str(HERE / "make_stdlib_data.py"), str(data)], check=True)
    runs = {}
    for name, mixed in (("fp32", False), ("mixed precision", True)):  # one subprocess each: no shared state
        result = work / f"{'amp' if mixed else 'fp32'}.json"
        cmd = [sys.executable, __file__, "--worker", "--data", str(data), "--work", str(work), "--result", str(result),
               "--steps", str(args.steps), "--eval-every", str(args.eval_every)] + (["--mixed"] if mixed else [])
        subprocess.run(cmd, check=True)
        runs[name] = json.loads(result.read_text())
        last = runs[name]["eval"][-1]
        times = sorted(r["step_time"] for r in runs[name]["train"][2:])
        print(f"{name}: held-out loss {[round(e['loss'], 4) for e in runs[name]['eval']]} "
              f"(step {last['step']}: {last['loss']:.4f}); median step {times[len(times) // 2]:.2f} s")
    info = machine()
    stem = f"{dt.date.today().isoformat()}-{info['slug']}-mixed-precision"
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"{stem}.json").write_text(json.dumps({"machine": info, "steps": args.steps, "runs": runs}, indent=1))
    plot(runs, args.results / f"{stem}.png")
    print(f"wrote {args.results / stem}.json and .png")


if __name__ == "__main__":
    main()
