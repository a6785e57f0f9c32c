"""Compute ceiling of the sft_vs_trl.py jobs on this machine: the most real tokens/s any implementation could reach
if every matmul ran at the rate this CPU sustains on the model's own linear layers, and so the largest speedup over
TRL's measured rate that the hardware allows.

Work counted is the least the job needs, whoever runs it: the model's matmuls on the real (unpadded) tokens, the
LM head only at supervised positions, a DPO pair's shared prompt once (data/pair_layout.py), causal attention;
LoRA forward + input gradients (4 x linear FLOPs) plus the adapters' own, full fine-tuning forward + both gradients
(6x, the tied embedding trained as the LM head), DPO the LoRA policy plus a reference forward (2x). Elementwise
ops, the optimizer and allocation are left out, so the ceiling cannot be reached; measured / ceiling is how much
of the matmul rate a step turns into training.

    python bench/ceiling.py --measured results/<lora>.json results/<full>.json results/<dpo>.json

writes results/<date>-<machine>-ceiling.json and prints a Markdown table for bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import sft_vs_trl as bench  # noqa: E402
from _harness import machine, unused_path  # noqa: E402


def layer_matmul_rate(shape, dtype: str, tokens: int = 2048, seconds: float = 0.5) -> float:
    """Sustained FLOP/s of F.linear over one block's layer shapes with `tokens` rows (the mix a step runs)."""
    from tunesmith.estimate import time_linear
    from tunesmith.models.load import DTYPES

    timed = [time_linear(tokens, fan_in, fan_out, DTYPES[dtype], seconds) for fan_in, fan_out in shape.linears()]
    return sum(f for f, _ in timed) / sum(t for _, t in timed)


def _supervised(labels: list[int]) -> int:
    return sum(1 for t in labels[1:] if t != -100)


def _causal_pairs(n: int) -> int:
    return n * (n + 1) // 2


def job_work(items: list, shape, job: dict, r: int) -> dict:
    """Real tokens and least FLOPs of one epoch of the job's rows (SFT examples or preference pairs)."""
    import torch

    from tunesmith.data.pair_layout import common_prefix

    linear = 2 * shape.layers * shape.block_linear_params()  # forward FLOPs per token
    adapter = 2 * shape.lora_params(r)
    head = 2 * shape.vocab * shape.hidden  # forward FLOPs per supervised position
    attention = 4 * shape.layers * shape.q_dim  # forward FLOPs per attending (query, key) pair: QK^T and AV
    real = flops = 0
    for item in items:
        if job["objective"] == "dpo":
            c, rej = item.chosen, item.rejected
            shared = common_prefix(torch.tensor(c.input_ids), torch.tensor(rej.input_ids))
            tail = len(rej.input_ids) - shared
            computed = len(c.input_ids) + tail
            pairs = _causal_pairs(len(c.input_ids)) + tail * shared + _causal_pairs(tail)
            supervised = _supervised(c.labels) + _supervised(rej.labels)
            real += len(c.input_ids) + len(rej.input_ids)
            # LoRA policy (forward + input grads, adapters x3) and the reference forward
            flops += computed * (3 * linear + 3 * adapter) + supervised * 3 * head + pairs * 4 * attention
            continue
        n, supervised = len(item.input_ids), _supervised(item.labels)
        real += n
        if job["method"] == "full":
            flops += n * 3 * linear + supervised * 3 * head + _causal_pairs(n) * 3 * attention
        else:
            flops += n * (2 * linear + 3 * adapter) + supervised * 2 * head + _causal_pairs(n) * 3 * attention
    return {"real_tokens": real, "flops": float(flops), "flops_per_real_token": flops / max(real, 1)}


def measured_rates(paths: list[Path]) -> dict[str, dict]:
    """job name -> {variant: real tokens/s, "files": [...]} from sft_vs_trl.py result files; several files of a job
    merge (a later file's row for the same variant wins), so a peer re-run can join an earlier invocation."""
    rates: dict[str, dict] = {}
    for path in paths:
        record = json.loads(path.read_text())
        seen = rates.setdefault(record["job_name"], {"files": [], "baseline": record.get("baseline", "trl")})
        seen["files"].append(path.name)
        seen.update({k: v["tokens_per_s"] for k, v in record["summary"].items() if "tokens_per_s" in v})
    return rates


def _best_tunesmith(seen: dict) -> tuple[str, float] | None:
    ours = {k: v for k, v in seen.items() if k.startswith("tunesmith") and isinstance(v, (int, float))}
    return max(ours.items(), key=lambda kv: kv[1]) if ours else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--measured", type=Path, nargs="*", default=[], help="sft_vs_trl.py result files to compare")
    parser.add_argument("--results", type=Path, default=HERE / "results")
    args = parser.parse_args()
    from tunesmith.estimate import Shape, read_model_config
    from tunesmith.models.load import BUNDLED_ALIAS, dtype_name

    model_path, config = read_model_config(BUNDLED_ALIAS)
    shape = Shape.from_config(config)
    dtype = dtype_name("auto", "cpu")
    rate = layer_matmul_rate(shape, dtype)
    info = machine("cpu")
    measured = measured_rates(args.measured)
    data_dir = Path(tempfile.mkdtemp(prefix="tunesmith-ceiling-"))
    bench.prepare_data(data_dir)
    jobs = {}
    for name, job in bench.JOBS.items():
        ns = argparse.Namespace(job=name, steps=1, model=model_path, data_dir=data_dir, work=data_dir, device="cpu")
        work = job_work(bench.tunesmith_data(ns)[2].train, shape, job, bench.JOB["r"])
        ceiling = rate / work["flops_per_real_token"]
        jobs[name] = {**work, "ceiling_tokens_per_s": round(ceiling, 1)}
        if name in measured:
            seen = measured[name]
            peer = seen.get(seen["baseline"])
            jobs[name]["measured"] = seen
            jobs[name]["ceiling_vs_peer"] = round(ceiling / peer, 2) if peer else None
            jobs[name]["share_of_ceiling"] = {k: round(v / ceiling, 2) for k, v in seen.items()
                                              if isinstance(v, (int, float))}
    record = {"date": dt.date.today().isoformat(), "machine": info, "dtype": dtype,
              "matmul_flops_per_s": rate, "jobs": jobs}
    out = unused_path(args.results / f"{record['date']}-{info['slug']}-ceiling.json")
    out.write_text(json.dumps(record, indent=1))
    print(f"matmul rate on the model's layers ({dtype}): {rate / 1e9:.1f} GFLOP/s; written {out}\n")
    print("| job | least GFLOP per real token | ceiling (real tokens/s) | peer measured | ceiling / peer | "
          "fastest tunesmith measured | its share of the ceiling |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, j in jobs.items():
        seen = j.get("measured", {})
        peer, best = seen.get(seen.get("baseline", "")), _best_tunesmith(seen)
        ours = f"{best[1]} (`{best[0]}`)" if best else "—"
        share = f"{best[1] / j['ceiling_tokens_per_s']:.2f}" if best else "—"
        print(f"| {name} | {j['flops_per_real_token'] / 1e9:.3f} | {j['ceiling_tokens_per_s']} | {peer or '—'} | "
              f"{j.get('ceiling_vs_peer') or '—'}x | {ours} | {share} |")


if __name__ == "__main__":
    main()
