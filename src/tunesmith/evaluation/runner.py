"""Run every suite on every model, with a result cache, then compare each model against the baseline.

Cache key = sha256(model weight + adapter files, dtype, template) x sha256(suite spec, data file bytes,
generation settings). Each (model, suite) result is written to the cache the moment it finishes, so an
interrupted or failed run keeps what it did and a rerun only computes what is missing.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Callable

from tunesmith.data.versioning import file_sha256
from tunesmith.errors import TunesmithError
from tunesmith.evaluation.config import EvalConfig, ModelSpec, SuiteSpec
from tunesmith.evaluation.suites import SUITES, settings_for

SUITE_VERSION = 1  # bump when a suite's scoring changes, so old cache entries are not reused
_HASHED_SUFFIXES = (".safetensors", ".bin", ".json", ".model", ".gguf", ".txt", ".jinja")
_digests: dict[tuple[str, int, int], str] = {}
_NOT_HASHED = ("batch_size", "head_to_head")  # do not change a model's suite result (batching is exact; head-to-head is a comparison)


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes (memoised by path, size and mtime within the process)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _digests:
        _digests[key] = file_sha256(path)
    return _digests[key]


def _folder_digest(folder: Path) -> str:
    h = hashlib.sha256()
    files = [folder] if folder.is_file() else sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in _HASHED_SUFFIXES)
    for p in files:
        h.update(f"{p.name}:{file_digest(p)}\n".encode())
    return h.hexdigest()


def model_hash(spec: ModelSpec) -> str:
    """Digest of the model's weights and config (and the adapter's files), dtype and template."""
    from tunesmith.models.load import dtype_name, resolve_model_path

    parts = [_folder_digest(resolve_model_path(spec.model)), dtype_name(spec.dtype), spec.template]
    if spec.adapter:
        adapter = Path(spec.adapter)
        if not adapter.is_dir():
            raise TunesmithError(f"model '{spec.name}': adapter folder '{spec.adapter}' not found")
        parts.append(_folder_digest(adapter))
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def suite_hash(spec: SuiteSpec, settings) -> str:
    """Digest of what decides a suite's result: its spec (not its label), data bytes and generation settings."""
    body = spec.model_dump(exclude={"name", "probe", "generation", *_NOT_HASHED})
    body["data_digest"] = file_digest(Path(spec.data)) if spec.data else None
    body["settings"] = settings.model_dump() if settings is not None else None
    body["version"] = SUITE_VERSION
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


class ResultCache:
    """One JSON file per (model hash, suite hash) under `folder`; writes are atomic."""

    def __init__(self, folder: Path, enabled: bool = True):
        self.folder, self.enabled = folder, enabled

    def path(self, mhash: str, shash: str) -> Path:
        return self.folder / f"{mhash[:20]}-{shash[:20]}.json"

    def get(self, mhash: str, shash: str) -> dict | None:
        p = self.path(mhash, shash)
        if not self.enabled or not p.is_file():
            return None
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None  # a damaged entry is recomputed

    def put(self, mhash: str, shash: str, result: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        p = self.path(mhash, shash)
        tmp = p.with_suffix(".tmp")
        tmp.write_text(json.dumps(result), encoding="utf-8")
        os.replace(tmp, p)


def prepare_suites(cfg: EvalConfig) -> dict[str, object]:
    """Read and validate every suite's items before any model loads (bad input stops here, cheaply)."""
    return {spec.name: SUITES[spec.kind].prepare(spec) for spec in cfg.suites}


def _run_one(model, tokenizer, spec: SuiteSpec, prepared, settings, template: str) -> dict:
    started = time.perf_counter()
    result = SUITES[spec.kind].run(model, tokenizer, prepared, spec, settings, template)
    result["seconds"] = round(time.perf_counter() - started, 3)
    result["settings"] = settings.model_dump() if settings is not None else None
    result["kind"] = spec.kind
    return result


def _evaluate_model(spec: ModelSpec, cfg: EvalConfig, prepared: dict, cache: ResultCache, log: Callable[[str], None]) -> dict:
    """Results of every suite for one model: from the cache where possible, else computed (model loaded once)."""
    mhash = model_hash(spec)
    out: dict[str, dict] = {}
    missing = []
    for s in cfg.suites:
        settings = settings_for(s, cfg.generation)
        shash = suite_hash(s, settings)
        hit = cache.get(mhash, shash)
        if hit is not None:
            hit["cached"] = True
            out[s.name] = hit
            log(f"{spec.name} / {s.name}: cached")
        else:
            missing.append((s, settings, shash))
    if not missing:
        return out
    from tunesmith.serving.engine import load_for_inference

    model, tokenizer = load_for_inference(spec.model, spec.adapter, dtype=spec.dtype, template=spec.template)
    try:
        for s, settings, shash in missing:
            log(f"{spec.name} / {s.name}: running")
            try:
                result = _run_one(model, tokenizer, s, prepared[s.name], settings, spec.template)
            except TunesmithError as exc:
                out[s.name] = {"error": str(exc), "kind": s.kind}
                log(f"{spec.name} / {s.name}: failed: {exc}")
                continue
            cache.put(mhash, shash, result)
            result["cached"] = False
            out[s.name] = result
    finally:
        del model
        gc.collect()
    return out


def _head_to_head(cfg: EvalConfig, prepared: dict, results: dict, a: str, b: str, log: Callable[[str], None]) -> dict:
    """Judge suites with head_to_head: the judge compares model b's answers with model a's (both orders)."""
    from tunesmith.evaluation.judge import head_to_head

    out = {}
    for s in cfg.suites:
        res_a, res_b = results[a].get(s.name, {}), results[b].get(s.name, {})
        if s.kind != "judge" or not s.head_to_head or "error" in res_a or "error" in res_b or not res_a or not res_b:
            continue
        log(f"{b} vs {a} / {s.name}: judging head-to-head")
        try:
            out[s.name] = head_to_head(s, prepared[s.name], res_a, res_b, a, b, cfg.compare.bootstrap, cfg.compare.seed, cfg.compare.alpha)
        except TunesmithError as exc:
            out[s.name] = {"error": str(exc)}
            log(f"{b} vs {a} / {s.name} head-to-head: failed: {exc}")
    return out


def run_eval(cfg: EvalConfig, log: Callable[[str], None] = lambda _msg: None) -> dict:
    """Evaluate all models on all suites, compare each with the baseline, measure retention on probes."""
    from tunesmith.evaluation.compare import compare_models
    from tunesmith.evaluation.forgetting import forgetting_report

    prepared = prepare_suites(cfg)
    cache = ResultCache(Path(cfg.cache_dir) if cfg.cache_dir else Path(cfg.output_dir) / "cache", cfg.use_cache)
    results = {m.name: _evaluate_model(m, cfg, prepared, cache, log) for m in cfg.models}
    kinds = {s.name: s.kind for s in cfg.suites}
    baseline = cfg.baseline
    comparisons = [
        compare_models(results[baseline], results[m.name], kinds, baseline, m.name, cfg.compare.alpha,
                       cfg.compare.bootstrap, cfg.compare.seed, cfg.compare.worst_examples)
        for m in cfg.models if m.name != baseline
    ]
    for comp in comparisons:
        comp["head_to_head"] = _head_to_head(cfg, prepared, results, comp["a"], comp["b"], log)
    probes = [s.name for s in cfg.suites if s.probe]
    errors = [f"{m}/{s}: {r['error']}" for m, per in results.items() for s, r in per.items() if "error" in r]
    errors += [f"{c['b']} vs {c['a']} / {s} (head-to-head): {h['error']}" for c in comparisons for s, h in c["head_to_head"].items() if "error" in h]
    return {
        "config": cfg.model_dump(),
        "models": {m.name: {"model": m.model, "adapter": m.adapter, "dtype": m.dtype} for m in cfg.models},
        "suites": {s.name: {"kind": s.kind, "data": s.data or "(bundled)", "probe": s.probe,
                            "generation": (g.model_dump() if (g := settings_for(s, cfg.generation)) else None)} for s in cfg.suites},
        "results": results,
        "comparisons": comparisons,
        "forgetting": forgetting_report(results, kinds, probes, baseline, cfg.forgetting.threshold) if probes else None,
        "errors": errors,
    }
