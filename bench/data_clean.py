"""Time `tunesmith data clean` on N synthetic chat rows next to a peer (datatrove MinHash); score both dedups.

    python bench/data_clean.py --rows 100000                      # tunesmith (default recipe) + datatrove
    python bench/data_clean.py --rows 1000000 --tools tunesmith,tunesmith-dedup,datatrove

The input is generated with a fixed seed (cached under --work): messages-format rows (a 5-20-word question,
a 40-160-word answer from a 5000-word alphabetic vocabulary), with planted duplicates of earlier plain rows:
5% exact copies and 5% near copies (one or two words substituted, or one word deleted, in the answer; the
true word-5-gram Jaccard of each is recorded), plus 1% rows with e-mails/phones and 1% refusals. Tools:

- `tunesmith`: `clean_file` with the default recipe (all six stages), per-stage times and an RSS sample
  every 50k rows, so memory growth per row is visible;
- `tunesmith-dedup`: only `exact_dedup` + `near_dedup` (what the peer does);
- `datatrove`: its four-step MinHash pipeline (signatures, buckets, clusters, filter) with the local
  executor, 1 task / 1 worker, 16 bands x 8 hashes = 128 permutations (tunesmith's banding), word 5-grams,
  the same `\\w+` word split as tunesmith (datatrove's English default needs spaCy), numbers not normalised.

Each tool runs in a fresh subprocess (peak RSS = that run's ru_maxrss). Removed rows are scored against the
planted truth (precision, recall; recall split by kind and by true Jaccard). Results are written to
bench/results/data_clean-<date>-<size>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import random
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
THRESHOLD, NUM_PERM, NGRAM, BANDS = 0.8, 128, 5, 16
SAMPLE_EVERY = 50_000


# ---------------------------------------------------------------- input with planted truth


def vocabulary(n: int = 5000, seed: int = 7) -> list[str]:
    """n distinct pronounceable letter-only words (digits would be folded by datatrove's number normalisation)."""
    syll = [c + v for c in "bcdfghjklmnprstvwxz" for v in "aeiou"]
    rng = random.Random(seed)
    out: set[str] = set()
    while len(out) < n:
        out.add("".join(rng.choices(syll, k=rng.randint(2, 3))))
    return sorted(out)


def shingle_set(text: str, n: int = NGRAM) -> set[str]:
    """Word n-grams of the case-folded `\\w+` words: what tunesmith's near_dedup compares."""
    w = re.findall(r"\w+", text.casefold())
    return {" ".join(w[i:i + n]) for i in range(max(1, len(w) - n + 1))}


def jaccard(a: str, b: str) -> float:
    x, y = shingle_set(a), shingle_set(b)
    return len(x & y) / len(x | y)


def _near_copy(rng: random.Random, a: list[str], vocab: list[str]) -> list[str]:
    a = list(a)
    kind = rng.random()
    if kind < 0.25:
        del a[rng.randrange(len(a))]
    else:
        for _ in range(1 if kind < 0.75 else 2):
            a[rng.randrange(len(a))] = rng.choice(vocab)
    return a


def make_rows(path: Path, n: int, seed: int = 0) -> dict:
    """Write n chat rows; return the planted truth {"exact": [[line, source]...], "near": [[line, source, jaccard]...]}."""
    rng, vocab = random.Random(seed), vocabulary()
    recent: list[tuple[str, list[str], int]] = []  # plain originals that copies may be made of
    truth: dict = {"exact": [], "near": []}
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            line, r = i + 1, rng.random()
            if r < 0.05 and recent:
                q, a, src = rng.choice(recent)
                answer = " ".join(a) + "."
                truth["exact"].append([line, src])
            elif r < 0.10 and recent:
                q, a, src = rng.choice(recent)
                answer = " ".join(_near_copy(rng, a, vocab)) + "."
                truth["near"].append([line, src, round(jaccard(q + "\n" + answer, q + "\n" + " ".join(a) + "."), 4)])
            else:
                q = f"Question {i}: " + " ".join(rng.choices(vocab, k=rng.randint(5, 20))) + "?"
                a = rng.choices(vocab, k=rng.randint(40, 160))
                answer = " ".join(a) + "."
                if r > 0.99:
                    answer += f" Write to user{i}@example.com or call +1 415-555-{i % 10000:04d}."
                elif r > 0.98:
                    answer = "I'm sorry, but I can't help with that."
                else:
                    recent = (recent + [(q, a, line)])[-1000:]
            f.write(json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": answer}]}) + "\n")
    return truth


def score(removed: set[int], truth: dict, threshold: float = THRESHOLD) -> dict:
    """Precision / recall of a dedup's removed lines against the planted copies (exact + near).

    Row level: a removed line that is not a planted copy is a false positive; recall is also given per kind
    and for near copies whose true Jaccard is at/above or below `threshold` (below it, removal is optional).
    Group level (`*_groups`): a planted group is a source row and its copies; removing any members but one
    is right whichever member is kept (datatrove keeps the root of its union-find, not the first row);
    removing the whole group counts one false positive."""
    exact = {line: src for line, src in truth["exact"]}
    near = {line: j for line, _, j in truth["near"]}
    above = {line for line, j in near.items() if j >= threshold}
    positives = set(exact) | set(near)
    tp = len(removed & positives)

    def rec(s: set[int]) -> float | None:
        return round(len(removed & s) / len(s), 4) if s else None

    groups: dict[int, set[int]] = {}
    for line, src in list(exact.items()) + [(line, src) for line, src, _ in truth["near"]]:
        groups.setdefault(src, {src}).add(line)
    g_tp = g_fp = 0
    for members in groups.values():
        gone = len(members & removed)
        g_tp += gone - (gone == len(members))
        g_fp += gone == len(members)
    in_groups = set().union(*groups.values()) if groups else set()
    g_fp += len(removed - in_groups)
    g_pos = sum(len(m) - 1 for m in groups.values())
    return {"removed": len(removed), "planted": len(positives), "true_positives": tp,
            "false_positives": len(removed - positives),
            "precision": round(tp / len(removed), 4) if removed else 1.0, "recall": rec(positives),
            "recall_exact": rec(set(exact)), "recall_near": rec(set(near)),
            f"recall_near_j>={threshold}": rec(above), f"recall_near_j<{threshold}": rec(set(near) - above),
            f"precision_strict_j>={threshold}": round(len(removed & (set(exact) | above)) / len(removed), 4) if removed else 1.0,
            "precision_groups": round(g_tp / (g_tp + g_fp), 4) if g_tp + g_fp else 1.0,
            "recall_groups": round(g_tp / g_pos, 4) if g_pos else None}


def _exact_sources(src: Path, truth: dict) -> dict:
    """Old truth files list exact copies as bare lines: find each one's source (first row with the same text)."""
    if not truth["exact"] or isinstance(truth["exact"][0], list):
        return truth
    copies, first, pairs = set(truth["exact"]), {}, []
    with src.open("rb") as f:
        for line, raw in enumerate(f, 1):
            key = hashlib.blake2b(raw, digest_size=16).digest()
            if line in copies:
                pairs.append([line, first[key]])
            else:
                first.setdefault(key, line)
    return {**truth, "exact": pairs}


# ---------------------------------------------------------------- children (one tool each)


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mib() -> float:
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(max(own, kids) / 1024, 1)  # KiB -> MiB on Linux


def _timed_stages(samples: list, seconds: dict) -> None:
    """Wrap every clean stage class so each call is timed; the first stage also samples RSS."""
    from tunesmith.data.clean import pipeline

    for name, (cfg_cls, stage_cls) in list(pipeline.STAGES.items()):
        def make(name=name, stage_cls=stage_cls):
            class Timed:
                def __init__(self, cfg):
                    self.inner, self.calls = stage_cls(cfg), 0

                def __call__(self, item):
                    t = time.perf_counter()
                    verdict = self.inner(item)
                    seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - t
                    self.calls += 1
                    if name == "normalize" and self.calls % SAMPLE_EVERY == 0:
                        samples.append([self.calls, round(_rss_mib(), 1)])
                    return verdict

                def __getattr__(self, attr):
                    return getattr(self.inner, attr)
            return Timed
        pipeline.STAGES[name] = (cfg_cls, make())


def run_tunesmith(src: str, work: str, dedup_only: bool) -> dict:
    from tunesmith.data.clean.pipeline import clean_file, side_paths

    samples: list = []
    seconds: dict = {}
    _timed_stages(samples, seconds)
    recipe = {"stages": ["normalize", "exact_dedup", {"near_dedup": {"threshold": THRESHOLD, "num_perm": NUM_PERM, "ngram": NGRAM}}]
              + ([] if dedup_only else ["quality", "pii", "harmful"])}
    out = Path(work) / ("clean_dedup.jsonl" if dedup_only else "clean.jsonl")
    start = time.perf_counter()
    stats = clean_file(src, out, recipe, manifest=False)
    wall = time.perf_counter() - start
    removed = []
    with side_paths(out)["removed"].open(encoding="utf-8") as f:
        for raw in f:
            rec = json.loads(raw[:raw.index(', "row": ')] + "}")
            if rec["stage"] in ("exact_dedup", "near_dedup"):
                removed.append(rec["line"])
    return {"seconds": round(wall, 1), "peak_rss_mib": _peak_mib(), "rows_in": stats["rows_in"], "rows_out": stats["rows_out"],
            "stages": {s["name"]: {"removed": s["removed"], "changed": s["changed"], "seconds": round(seconds.get(s["name"], 0.0), 1)}
                       for s in stats["stages"]},
            "rss_mib_by_rows": samples, "dedup_removed_lines": removed}


def run_datatrove(src: str, work: str) -> dict:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster,
                                                  MinhashDedupFilter, MinhashDedupSignature)
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.utils.text import TextNormConfig
    from datatrove.utils.word_tokenizers import WordTokenizer

    class Words(WordTokenizer):  # tunesmith's word split; datatrove's English default needs spaCy
        def word_tokenize(self, text):
            return re.findall(r"\w+", text)

        def sent_tokenize(self, text):
            return [text]

        def span_tokenize(self, text):
            return [(0, len(text))]

    import xxhash

    def adapter(self, data, path, id_in_file):  # the same text tunesmith compares: every turn, joined by newlines
        return {"text": "\n".join(m["content"] for m in data["messages"]), "id": id_in_file + 1, "metadata": {}}

    w = Path(work) / "datatrove"
    cfg = MinhashConfig(n_grams=NGRAM, num_buckets=BANDS, hashes_per_bucket=NUM_PERM // BANDS,
                        norm_config=TextNormConfig(norm_numbers=False))
    reader = lambda: JsonlReader(str(Path(src).parent), glob_pattern=Path(src).name, adapter=adapter)  # noqa: E731
    signer = MinhashDedupSignature(str(w / "sigs"), config=cfg, language=Words())
    signer._hash_func = lambda s: xxhash.xxh64_intdigest(s.encode())  # datatrove 0.10.1 passes str; xxhash>=4 wants bytes
    steps = [
        ("signatures", [reader(), signer], 1),
        ("buckets", [MinhashDedupBuckets(str(w / "sigs"), str(w / "buckets"), config=cfg)], BANDS),
        ("clusters", [MinhashDedupCluster(str(w / "buckets"), str(w / "remove_ids"), config=cfg)], 1),
        ("filter", [reader(), MinhashDedupFilter(str(w / "remove_ids"), exclusion_writer=JsonlWriter(str(w / "removed"))),
                    JsonlWriter(str(w / "kept"))], 1),
    ]
    seconds, start = {}, time.perf_counter()
    for name, pipe, tasks in steps:
        t = time.perf_counter()
        LocalPipelineExecutor(pipeline=pipe, tasks=tasks, workers=1, logging_dir=str(w / "logs" / name)).run()
        seconds[name] = round(time.perf_counter() - t, 1)
    wall = time.perf_counter() - start
    import gzip

    removed = []
    for p in sorted((w / "removed").glob("*")):
        with gzip.open(p, "rt", encoding="utf-8") if p.suffix == ".gz" else p.open(encoding="utf-8") as f:
            removed += [int(json.loads(raw)["id"]) for raw in f]
    return {"seconds": round(wall, 1), "peak_rss_mib": _peak_mib(), "steps": {k: {"seconds": v} for k, v in seconds.items()},
            "dedup_removed_lines": removed}


def _child(tool: str, src: str, work: str) -> None:
    Path(work).mkdir(parents=True, exist_ok=True)
    r = run_datatrove(src, work) if tool == "datatrove" else run_tunesmith(src, work, tool == "tunesmith-dedup")
    (Path(work) / "result.json").write_text(json.dumps(r))


# ---------------------------------------------------------------- parent


def _size_label(n: int) -> str:
    return f"{n // 1_000_000}m" if n % 1_000_000 == 0 else f"{n // 1000}k" if n % 1000 == 0 else str(n)


def run_tool(tool: str, src: Path, n: int, work: Path, truth: dict) -> dict:
    tw = work / f"{tool}-{n}"
    subprocess.run(["rm", "-rf", str(tw)], check=True)
    load_before = round(os.getloadavg()[0], 2)
    proc = subprocess.run([sys.executable, __file__, "--child", tool, str(src), str(tw)], capture_output=True, text=True)
    if proc.returncode != 0:
        return {"tool": tool, "error": proc.stderr.strip().splitlines()[-5:]}
    r = json.loads((tw / "result.json").read_text())
    removed = set(r.pop("dedup_removed_lines"))
    (work / f"{tool}-{n}.removed.json").write_text(json.dumps(sorted(removed)))  # for a closer look at disagreements
    r = {"tool": tool, **r, "rows_per_s": round(n / r["seconds"], 1), "load_1m_before": load_before,
         "load_1m_after": round(os.getloadavg()[0], 2), "dedup_vs_planted": score(removed, truth)}
    subprocess.run(["rm", "-rf", str(tw)], check=True)  # outputs are GBs at 1M rows
    return r


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("tunesmith", "datasketch", "datatrove", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def _input(n: int, work: Path) -> tuple[Path, dict]:
    src, truth_path = work / f"chat_{n}.jsonl", work / f"chat_{n}.truth.json"
    if not truth_path.exists():
        t = time.perf_counter()
        truth_path.write_text(json.dumps(make_rows(src, n)))
        print(f"generated {src} in {time.perf_counter() - t:.0f}s", flush=True)
    truth = json.loads(truth_path.read_text())
    fixed = _exact_sources(src, truth)
    if fixed is not truth:
        truth_path.write_text(json.dumps(fixed))
    return src, fixed


def _write(out: Path, n: int, src: Path, truth: dict, new: list[dict]) -> None:
    """Merge `new` results into `out` (re-read first: runs of other tools may have written it)."""
    doc = json.loads(out.read_text()) if out.exists() else {}
    results = {r["tool"]: r for r in doc.get("results", [])} | {r["tool"]: r for r in new}
    near_j = sorted(j for _, _, j in truth["near"])
    doc = {
        "command": f"nice -n 19 python bench/data_clean.py --rows {n} --tools {','.join(results)}",
        "input": {"rows": n, "mib": round(src.stat().st_size / 2**20, 1), "planted_exact": len(truth["exact"]),
                  "planted_near": len(near_j), f"planted_near_true_j>={THRESHOLD}": sum(j >= THRESHOLD for j in near_j),
                  "planted_near_true_j_min_median": [near_j[0], near_j[len(near_j) // 2]] if near_j else None},
        "settings": {"threshold": THRESHOLD, "num_perm": NUM_PERM, "ngram": NGRAM, "bands_x_rows": [BANDS, NUM_PERM // BANDS]},
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
                    "versions": _versions()},
        "note": "shared 2-core machine, every run at nice 19: seconds depend on the load recorded next to them; peak RSS does not",
        **{k: v for k, v in doc.items() if k in ("notes",)},
        "results": list(results.values()),
    }
    out.write_text(json.dumps(doc, indent=2) + "\n")


def _rescore(out: Path, n: int, src: Path, truth: dict, work: Path) -> None:
    """Score again every result whose removed lines were kept under --work (e.g. after the scoring changed)."""
    doc = json.loads(out.read_text())
    for r in doc["results"]:
        saved = work / f"{r['tool']}-{n}.removed.json"
        if saved.exists():
            r["dedup_vs_planted"] = score(set(json.loads(saved.read_text())), truth)
    _write(out, n, src, truth, doc["results"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--tools", default="tunesmith,datatrove", help="comma list: tunesmith, tunesmith-dedup, datatrove")
    ap.add_argument("--work", default=str(ROOT / "runs" / "bench-data-clean"), help="scratch folder (input cache, outputs)")
    ap.add_argument("--rescore", action="store_true", help="only score the saved removed lines again")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return _child(*args.child)
    n, work = args.rows, Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    src, truth = _input(n, work)
    out = HERE / "results" / f"data_clean-{dt.date.today().isoformat()}-{_size_label(n)}.json"
    if args.rescore:
        return _rescore(out, n, src, truth, work)
    for tool in args.tools.split(","):
        result = run_tool(tool, src, n, work, truth)
        print(json.dumps({k: v for k, v in result.items() if k != "rss_mib_by_rows"}), flush=True)
        _write(out, n, src, truth, [result])
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
