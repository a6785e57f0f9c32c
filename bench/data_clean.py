"""Time `tunesmith data clean` (default recipe) on N synthetic chat rows; record rows/s and peak RSS.

    python bench/data_clean.py --rows 100000 [--rows 1000000] [--keep]

The input is generated with a fixed seed: messages-format rows with 40-160-word answers from a 5000-word
vocabulary, 5% exact copies, 5% near copies (one word changed), 1% e-mails/phones, 1% refusals. Each
size runs in a fresh subprocess so the peak RSS (ru_maxrss) is that run's alone. Results are written
to bench/results/data_clean-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def make_rows(path: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(5000)]
    recent: list[tuple[str, list[str]]] = []
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            r = rng.random()
            if r < 0.05 and recent:
                q, a = rng.choice(recent)
            elif r < 0.10 and recent:
                q, a = rng.choice(recent)
                a = list(a)
                a[rng.randrange(len(a))] = rng.choice(vocab)
            else:
                q = f"Question {i}: " + " ".join(rng.choices(vocab, k=rng.randint(5, 20))) + "?"
                a = rng.choices(vocab, k=rng.randint(40, 160))
                recent = (recent + [(q, a)])[-1000:]
            answer = " ".join(a) + "."
            if r > 0.99:
                answer += f" Write to user{i}@example.com or call +1 415-555-{i % 10000:04d}."
            elif r > 0.98:
                answer = "I'm sorry, but I can't help with that."
            f.write(json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": answer}]}) + "\n")


def _child(src: str, out: str) -> None:
    import resource
    import time

    from tunesmith.data.clean.pipeline import clean_file

    start = time.perf_counter()
    stats = clean_file(src, out, manifest=False)
    seconds = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    print(json.dumps({"seconds": round(seconds, 2), "peak_rss_mib": round(rss, 1), "rows_in": stats["rows_in"],
                      "rows_out": stats["rows_out"], "stages": {s["name"]: s["removed"] or s["changed"] for s in stats["stages"]}}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, action="append", help="row counts (repeatable); default 100000")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return _child(*args.child)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.rows or [100_000]:
            src = Path(tmp) / f"chat_{n}.jsonl"
            make_rows(src, n)
            proc = subprocess.run([sys.executable, __file__, "--child", str(src), str(Path(tmp) / "out.jsonl")],
                                  capture_output=True, text=True, check=True)
            r = {"rows": n, "input_mib": round(src.stat().st_size / 2**20, 1), **json.loads(proc.stdout.strip().splitlines()[-1])}
            r["rows_per_s"] = round(n / r["seconds"], 1)
            print(json.dumps(r))
            results.append(r)
            src.unlink()
    out = HERE / "results" / f"data_clean-{dt.date.today().isoformat()}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({
        "command": "python bench/data_clean.py " + " ".join(f"--rows {r['rows']}" for r in results),
        "recipe": "default (normalize, exact_dedup pair, near_dedup 128 perm / 5-gram / 0.8, quality, pii, harmful)",
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
                    "load_average_1m_at_end": round(os.getloadavg()[0], 2)},  # shared machines: read timings with this
        "results": results,
        "peer": "none run: datatrove / text-dedup not installed in this environment",
    }, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
