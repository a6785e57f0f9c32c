"""Run metrics: one JSONL line per logged step plus TensorBoard scalars, and the rich progress bar."""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class MetricsWriter:
    """Appends metrics to `metrics.jsonl` (resumes append) and mirrors them to TensorBoard."""

    def __init__(self, out_dir: Path, tensorboard: bool = True, resume_step: int = 0):
        out_dir.mkdir(parents=True, exist_ok=True)
        self.path = out_dir / "metrics.jsonl"
        _keep_rows_up_to(self.path, resume_step)
        self._file = self.path.open("a", encoding="utf-8")
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(out_dir / "tensorboard"))

    def write(self, step: int, values: dict[str, float], prefix: str = "train") -> None:
        row = {"step": step, "split": prefix, "time": round(time.time(), 3), **values}
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)):
                    self._tb.add_scalar(f"{prefix}/{key}", value, step)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def _keep_rows_up_to(path: Path, step: int) -> None:
    """On (re)start, drop rows logged after the checkpoint we resume from, and any line cut by a kill."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if row.get("step", 0) <= step:
            kept.append(line)
    path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")


def read_metrics(path: Path) -> list[dict]:
    """All rows of a metrics.jsonl file."""
    with Path(path).open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


# Objective metrics shown in the progress bar when a step reports them: metric key -> (label, format), in
# display order. DPO family (dpo, simpo, orpo): implicit-reward accuracy and margin; rm: pair accuracy and
# margin; kto: its KL reference point; ppo/grpo: score, KL to the reference (and its adaptive coefficient),
# clip fraction, GRPO's in-group reward std, the share of rewards that failed and got the fallback.
PROGRESS_METRICS: dict[str, tuple[str, str]] = {
    "rewards/accuracies": ("acc", ".2f"),
    "rewards/margins": ("margin", ".3f"),
    "accuracy": ("acc", ".2f"),
    "margin": ("margin", ".3f"),
    "score": ("score", ".3f"),
    "group_reward_std": ("std", ".3f"),
    "kl": ("kl", ".3f"),
    "kl_coef": ("beta", ".3f"),
    "clipfrac": ("clip", ".2f"),
    "reward_failed_rate": ("rfail", ".2f"),
}


def progress_fields(metrics: dict[str, float]) -> str:
    """'acc 0.75  margin 0.120'-style text of the PROGRESS_METRICS a step reported ('' for plain SFT)."""
    return "  ".join(f"{label} {metrics[key]:{fmt}}" for key, (label, fmt) in PROGRESS_METRICS.items()
                     if isinstance(metrics.get(key), (int, float)))


def training_progress(enabled: bool = True) -> Progress:
    """Progress bar showing step, loss, lr, tokens/s, the objective's key metrics (task field `extra`,
    see progress_fields) and ETA."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}  lr {task.fields[lr]}  {task.fields[tps]} tok/s"),
        TextColumn("{task.fields[extra]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=False,
    )
