"""Plumbing shared by bench/sft_vs_trl.py: per-run subprocesses, step-time summaries, torch.compile timers, the
machine record (CPU, its torch capability and whether bf16 is native, the GPU) and the README table writer.

Nothing here knows the jobs: workers and job definitions live in sft_vs_trl.py; what the table needs about a
job (name, objective, method, batch) is read from the run record.
"""

from __future__ import annotations

import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMPILE_TIMERS = ("_compile.compile_inner", "compile_fx.<locals>.bw_compiler")  # forward graphs, lazy backward graphs
MARK_START, MARK_END = "<!-- results:start -->", "<!-- results:end -->"


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


def compile_summary(times: list[float], tokens: list[int], compile_s: list[float], warmup: int) -> dict:
    """torch.compile cost apart from steady state: total compile seconds, the steps that compiled, and the
    median rate over post-warm-up steps that compiled nothing (dynamic-shape recompiles hit later steps too)."""
    quiet = [n / t for i, (n, t, c) in enumerate(zip(tokens, times, compile_s)) if i >= warmup and c < 0.05]
    return {"compile_s": round(sum(compile_s), 2), "compile_steps": [i + 1 for i, c in enumerate(compile_s) if c >= 0.05],
            "compile_s_per_step": [round(c, 2) for c in compile_s],
            "tokens_per_s_steady": statistics.median(quiet) if quiet else None, "steady_steps": len(quiet)}


def unused_path(path: Path) -> Path:
    """`path`, or `<stem>-2<suffix>`, `-3`, ... when that exists: a second run of the day never overwrites a
    committed result file."""
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return candidate


def _slug(text: str, n: int = 24) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:n]


def machine(device: str = "cpu") -> dict:
    """CPU model, cores, ISA flags, torch's CPU kernel capability (AVX2 / AVX512 / AMX...), whether bf16 matmuls
    are native here (`fast_bf16`: what model.dtype auto follows), the GPU when `device` is cuda, versions, and
    the slug that names the results file (the GPU's when running on one)."""
    cpu = platform.processor() or platform.machine()
    flags = ""
    try:
        flags = Path("/proc/cpuinfo").read_text()
        cpu = next(line.split(":", 1)[1].strip() for line in flags.splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    isa = [f for f in ("amx_bf16", "avx512_bf16", "avx512f", "avx2") if f in flags]
    import torch

    from tunesmith.models.load import fast_bf16

    gpu = torch.cuda.get_device_name(0) if device == "cuda" and torch.cuda.is_available() else None
    versions = {}
    for pkg in ("torch", "transformers", "peft", "trl", "tunesmith", "bitsandbytes"):
        try:
            from importlib.metadata import version

            versions[pkg] = version(pkg)
        except Exception:  # noqa: BLE001 - a missing package is reported, not fatal
            versions[pkg] = None
    capability = torch.backends.cpu.get_cpu_capability()  # in the slug: VMs often name only "AMD EPYC"
    slug = f"{_slug(gpu)}-{torch.cuda.device_count()}gpu" if gpu else f"{_slug(cpu)}-{os.cpu_count()}c-{_slug(capability)}"
    return {"cpu": cpu, "cores": os.cpu_count(), "isa": isa, "cpu_capability": capability,
            "bf16_native": fast_bf16("cpu"), "gpu": gpu, "device": device, "python": platform.python_version(),
            "versions": versions, "slug": slug}


def machine_line(info: dict) -> str:
    """How the README names the machine a table was measured on (older records lack the capability keys)."""
    text = f"{info['cpu']}, {info['cores']} cores"
    if info.get("cpu_capability"):
        native = info.get("bf16_native")
        bf16 = "native bf16" if native else "bf16 emulated, so model.dtype auto = fp32" if native is not None else ""
        text += f" (torch CPU capability {info['cpu_capability']}{', ' + bf16 if bf16 else ''})"
    elif info.get("isa"):
        text += f" (ISA flags {', '.join(info['isa'])})"
    if info.get("gpu"):
        text += f", GPU {info['gpu']}"
    return text


def spawn(script: Path, name: str, args, flags: list[str]) -> dict:
    """Run one variant in a fresh `script --worker NAME` subprocess; its result dict, with the load average."""
    result = args.work / f"{name}-{time.monotonic_ns()}.json"
    cmd = [sys.executable, str(script), "--worker", name, "--result", str(result), *flags]
    load = os.getloadavg()[0]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    if proc.returncode != 0:
        killed = " (SIGKILL: out of memory?)" if proc.returncode == -9 else ""
        return {"impl": name, "error": f"exit {proc.returncode}{killed}: {proc.stderr[-3000:]}", "load_before": load}
    out = json.loads(result.read_text())
    out["load_before"], out["load_after"] = load, os.getloadavg()[0]  # 1-min load average: others' work skews timings
    return out


def summarise(runs: list[dict], baseline: str = "trl") -> dict:
    """Median over rounds per implementation; speed and memory ratios against `baseline` (when it ran)."""
    table: dict[str, dict] = {}
    for name in dict.fromkeys(r["impl"] for r in runs):
        ok = [r for r in runs if r["impl"] == name and "error" not in r]
        if not ok:
            failed = next(r for r in runs if r["impl"] == name)
            table[name] = {"error": failed["error"][-500:], **({"refused": True} if failed.get("refused") else {})}
            continue
        med = lambda key: statistics.median(r[key] for r in ok)  # noqa: E731
        table[name] = {"runs": len(ok), "tokens_per_s": round(med("tokens_per_s_median"), 1),
                       "tokens_per_s_aggregate": round(med("tokens_per_s_aggregate"), 1),
                       "sec_per_step": round(med("sec_per_step_median"), 2), "peak_rss_mb": round(med("peak_rss_mb")),
                       "final_loss": round(med("final_loss"), 4), "first_step_s": round(med("first_step_s"), 1),
                       "max_step_tokens": max(r.get("max_step_tokens", 0) for r in ok)}
        if all("peak_cuda_mb" in r for r in ok):
            table[name]["peak_cuda_mb"] = round(med("peak_cuda_mb"))
        if all("compile_s" in r for r in ok):  # torch.compile: its cost, apart from steady-state throughput
            steady = [r["tokens_per_s_steady"] for r in ok if r["tokens_per_s_steady"] is not None]
            table[name].update(compile_s=round(med("compile_s"), 1),
                               tokens_per_s_steady=round(statistics.median(steady), 1) if steady else None)
    base = table.get(baseline, {})
    memory = "peak_cuda_mb" if "peak_cuda_mb" in base else "peak_rss_mb"
    for name, row in table.items():
        if name != baseline and "tokens_per_s" in row and "tokens_per_s" in base:
            row["speedup_vs_trl"] = round(row["tokens_per_s"] / base["tokens_per_s"], 2)
            if memory in row:
                row["rss_vs_trl"] = round(row[memory] / base[memory], 2)
    return table


def markers(job: str, tag: str = "") -> tuple[str, str]:
    """README markers of a job's table (the LoRA job on the bundled model keeps the original ones); `tag` names
    a non-default model or device, so those rows get a table of their own."""
    if job == "lora" and not tag:
        return MARK_START, MARK_END
    name = f"{job}-{tag}" if tag else job
    return f"<!-- results-{name}:start -->", f"<!-- results-{name}:end -->"


def estimate_lines(record: dict) -> list[str]:
    """README lines: one per variant whose estimate was checked against a measured peak (older records: one)."""
    est = record.get("estimate_check", {})
    checks = est.get("variants") or {"tunesmith": est}
    measured = {n: c for n, c in checks.items() if "measured_peak_rss_gib" in c}
    job = record.get("job", {})
    lines = []
    for name, c in measured.items():
        options = f", {c['flags']}" if c.get("flags") else ""
        variant = "" if list(measured) == ["tunesmith"] else f"{name}: "
        method = c.get("method", job.get("method", "lora"))
        lines.append(f"{'- ' if variant else ''}{variant}`tunesmith estimate` ({method}, batch {job.get('batch', 8)} x "
                     f"{job.get('max_length', 512)}{options}): {c['estimate_gib']} GiB vs measured peak RSS "
                     f"{c['measured_peak_rss_gib']} GiB ({c['relative_error']:+.0%}; within 25%: {c['within_25pct']}).")
    return lines


def table_lines(record: dict, result_file: str) -> list[str]:
    """The job's README block: what ran, on which machine (named, with its CPU capability), then one row each."""
    job_name, job, tag = record.get("job_name", "lora"), record.get("job", {}), record.get("tag", "")
    loads = record.get("load_before") or [0.0]
    cores = record["machine"]["cores"]
    lines = []
    if job_name != "lora" or tag:
        model = f", model `{record['model_label']}`" if record.get("model_label") else ""
        lines += [f"Job: `--job {job_name}` ({job.get('objective', 'sft')}, {job.get('method', 'lora')}{model}, "
                  f"device {record.get('device', 'cpu')})", ""]
    lines += [f"Latest: `{result_file}` — {machine_line(record['machine'])}; {record['steps']} steps ({record['warmup']} "
              f"warm-up), load average before runs {min(loads)}–{max(loads)} (1-min average on {cores} cores; "
              "above the core count the timings measure the other work as much as ours). "
              "Rows from other machines are in their own results files, not in this table.", ""]
    gpu = any("peak_cuda_mb" in row for row in record["summary"].values())
    memory = "peak GPU memory (MB)" if gpu else "peak RSS (MB)"
    peer = record.get("baseline", "trl")
    lines += [f"| implementation | real tokens/s (median) | aggregate tokens/s | s/step | {memory} | final loss | vs {peer} speed | vs {peer} memory |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, row in record["summary"].items():
        if "error" in row:
            why = row["error"].splitlines()[0][:160] if row.get("refused") else "failed"
            lines.append(f"| {name} | {'not run: ' + why if row.get('refused') else why} | | | | | | |")
            continue
        mem = row.get("peak_cuda_mb", row["peak_rss_mb"]) if gpu else row["peak_rss_mb"]
        lines.append(f"| {name} | {row['tokens_per_s']} | {row['tokens_per_s_aggregate']} | {row['sec_per_step']} | "
                     f"{mem} | {row['final_loss']} | {row.get('speedup_vs_trl', '—')}x | {row.get('rss_vs_trl', '—')}x |")
    for name, row in record["summary"].items():
        if row.get("compile_s") is not None:
            lines += ["", f"{name}: torch.compile took {row['compile_s']} s (dynamo + AOT backward timers, median of runs); "
                          f"steady-state {row['tokens_per_s_steady']} tokens/s over post-warm-up steps that compiled nothing."]
    checked = estimate_lines(record)
    return lines + (["", *checked] if checked else [])


def update_readme(readme: Path, record: dict, result_file: str) -> None:
    """Replace the job's table between its markers with this run's summary (appended when missing)."""
    start, end = markers(record.get("job_name", "lora"), record.get("tag", ""))
    lines = [start, "", *table_lines(record, result_file), "", end]
    text = readme.read_text() if readme.exists() else f"# bench\n\n{start}\n{end}\n"
    if start not in text:
        text += f"\n{start}\n{end}\n"
    head, rest = text.split(start, 1)
    readme.write_text(head + "\n".join(lines) + rest.split(end, 1)[1])
