"""Atomic checkpoints and exact resume.

A checkpoint is written into a temporary folder and renamed into place, so a kill at any moment
leaves the previous checkpoint intact. It holds the trainable weights (for LoRA runs also a plain
peft adapter folder), the optimizer, the scheduler, every RNG state and the data position.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from tunesmith.errors import TunesmithError

PREFIX = "checkpoint-"


@dataclass
class TrainState:
    """Where training stands: optimizer step and the data cursor (epoch, next micro-batch)."""

    step: int = 0
    epoch: int = 0
    batch_index: int = 0
    best_eval: float | None = None
    evals_without_improvement: int = 0
    bad_steps: int = 0
    best_value: float | None = None  # train.best_metric at its best so far, and the step it was reached
    best_step: int | None = None


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # dropout / sampling on the GPU
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().contiguous().clone() for name, p in model.named_parameters() if p.requires_grad}


def checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under `root`, oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and (p / "state.json").is_file()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def save_checkpoint(root: Path, model, optimizer, scheduler, state: TrainState, keep_last: int, protect: Path | None = None) -> Path:
    """Write checkpoint-<step> atomically and prune old ones (never `protect`, the best checkpoint)."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{state.step}"
    tmp = root / f".tmp-{PREFIX}{state.step}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_file(trainable_state(model), str(tmp / "trainable.safetensors"))
    if hasattr(model, "peft_config"):
        model.save_pretrained(str(tmp / "adapter"))
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state()}, tmp / "optim.pt")
    (tmp / "state.json").write_text(json.dumps(asdict(state), indent=1))  # written last: marks completeness
    _fsync_tree(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in checkpoints(root)[:-keep_last]:
        if protect is None or old.resolve() != protect.resolve():
            shutil.rmtree(old, ignore_errors=True)
    return final


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())


def clean_partial(root: Path) -> int:
    """Remove temporary folders left by a killed save; returns how many."""
    removed = 0
    if root.is_dir():
        for path in root.glob(f".tmp-{PREFIX}*"):
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    return removed


def load_checkpoint(path: Path, model, optimizer, scheduler) -> TrainState:
    """Restore weights, optimizer, scheduler and RNG from a checkpoint folder; returns its TrainState."""
    try:
        weights = load_file(str(path / "trainable.safetensors"))
        extra = torch.load(path / "optim.pt", weights_only=False)
        state = TrainState(**json.loads((path / "state.json").read_text()))
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise TunesmithError(f"checkpoint {path} is unreadable ({exc}); start over with --fresh") from exc
    params = dict(model.named_parameters())
    missing = [name for name in weights if name not in params]
    if missing:
        raise TunesmithError(
            f"checkpoint {path} does not fit this model/method (e.g. '{missing[0]}'); use --fresh or another output dir"
        )
    with torch.no_grad():
        for name, tensor in weights.items():
            params[name].copy_(tensor)
    optimizer.load_state_dict(extra["optimizer"])
    scheduler.load_state_dict(extra["scheduler"])
    set_rng_state(extra["rng"])
    return state
