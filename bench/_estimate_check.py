"""`tunesmith estimate` against the bench's measured peaks: each tunesmith variant's config overrides as estimate
arguments, the matching CLI flags, and the within-25% check (SFT jobs on CPU)."""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def estimate_settings(overrides: dict) -> dict | None:
    """`estimate()` keyword arguments for a tunesmith variant's config overrides (None: a variant it does not model)."""
    from tunesmith.config.schema import ModelConfig, TrainConfig

    if overrides.get("compile"):
        return None  # torch.compile's fused graphs save other tensors than eager mode
    defaults = TrainConfig()
    checkpointing = overrides.get("gradient_checkpointing", defaults.gradient_checkpointing)
    return {"checkpoint_every": overrides.get("checkpoint_every", defaults.checkpoint_every) if checkpointing else 0,
            "ce_chunk_size": overrides.get("ce_chunk_size", defaults.ce_chunk_size),
            "base_dtype": overrides.get("dtype", ModelConfig().dtype),
            "low_memory_malloc": overrides.get("low_memory_malloc", defaults.low_memory_malloc),
            "mmap_threshold_kib": overrides.get("mmap_threshold_kib", defaults.mmap_threshold_kib),
            "mixed_precision": overrides.get("mixed_precision", False),
            "lean_activations": overrides.get("lean_activations", defaults.lean_activations)}


def estimate_flags(settings: dict, method: str = "", job_method: str = "") -> str:
    """The `tunesmith estimate` options that differ from its defaults, as typed on the command line."""
    flags = {"checkpoint_every": ("--checkpoint-every", 0), "ce_chunk_size": ("--ce-chunk-size", 1024),
             "base_dtype": ("--base-dtype", "auto"), "low_memory_malloc": ("--low-memory-malloc", False),
             "mmap_threshold_kib": ("--mmap-threshold-kib", 4096), "mixed_precision": ("--mixed-precision", False),
             "lean_activations": ("--plain-activations", True)}
    out = [f"--method {method}"] if method and method != job_method else []
    for key, (flag, default) in flags.items():
        if settings.get(key, default) != default:
            out.append(flag if isinstance(default, bool) else f"{flag} {settings[key]}")
    return " ".join(out)


def check_estimate(args: argparse.Namespace, runs: list[dict], shared: dict, jobs: dict, variants: dict) -> dict:
    """`tunesmith estimate` for each tunesmith variant (with its checkpointing, CE chunk, dtype, method) vs its
    measured peak RSS (target: within 25%; SFT jobs on CPU). Top-level keys: the default variant; `variants`: all."""
    from tunesmith.estimate import estimate

    job = jobs[args.job]
    if job["objective"] != "sft":
        return {"skipped": f"estimate covers SFT only, not {job['objective']}"}
    if getattr(args, "device", "cpu") != "cpu":
        return {"skipped": "on CUDA the bench reports peak allocated GPU memory but does not check the estimate against it yet"}
    config = json.loads((Path(args.model) / "config.json").read_text())
    checks: dict[str, dict] = {}
    for name in dict.fromkeys(["tunesmith", *(r["impl"] for r in runs if r.get("impl") in variants)]):
        settings = estimate_settings(variants[name])
        if settings is None:
            checks[name] = {"skipped": "torch.compile is not modelled"}
            continue
        method = variants[name].get("method", job["method"])
        est = estimate(config, method, job["batch"], shared["max_length"], "cpu", shared["r"], peak_flops=1.0, **settings)
        check = {"estimate_gib": est.total_gib, "breakdown_gib": est.memory_gib, "method": method,
                 "base_dtype": est.base_dtype, "flags": estimate_flags(settings, method, job["method"])}
        measured = [r["peak_rss_mb"] for r in runs if r.get("impl") == name and "error" not in r]
        if measured:
            peak_gib = statistics.median(measured) / 1024
            check.update(measured_peak_rss_gib=round(peak_gib, 3), relative_error=round(est.total_gib / peak_gib - 1, 3),
                         within_25pct=abs(est.total_gib / peak_gib - 1) <= 0.25)
        checks[name] = check
    return {**{k: v for k, v in checks["tunesmith"].items() if k != "flags"}, "variants": checks}
