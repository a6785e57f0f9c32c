"""`clean`: stream a data file through a recipe of named stages; keep, change or remove every row.

A recipe (YAML) lists stages in order; each is a name, or a name with its settings:

    format: auto
    stages:
      - normalize
      - exact_dedup: {level: pair}
      - near_dedup: {threshold: 0.8, num_perm: 128, ngram: 5}
      - quality: {min_answer_words: 2}
      - pii: {kinds: [email, phone, secret]}
      - harmful

Outputs, next to OUT: OUT itself (kept rows, in the user's fields), OUT.removed.jsonl (every removed
row with stage, reason and detail, so nothing is lost), OUT.stats.json (per-stage counts) and a
version manifest (see versioning.py). Rows stream one at a time; only dedup state grows with the file.
"""

from __future__ import annotations

import difflib
import json
import time
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tunesmith.data.clean.dedup import ExactDedupConfig, ExactDedupStage, NearDedupConfig, NearDedupStage
from tunesmith.data.clean.fields import iter_items
from tunesmith.data.clean.harmful import HarmfulConfig, HarmfulStage
from tunesmith.data.clean.normalize import NormalizeConfig, NormalizeStage
from tunesmith.data.clean.pii import PIIConfig, PIIStage
from tunesmith.data.clean.quality import QualityConfig, QualityStage
from tunesmith.errors import DataError, SkipReport, TunesmithError

STAGES: dict[str, tuple[type[BaseModel], type]] = {
    "normalize": (NormalizeConfig, NormalizeStage),
    "exact_dedup": (ExactDedupConfig, ExactDedupStage),
    "near_dedup": (NearDedupConfig, NearDedupStage),
    "quality": (QualityConfig, QualityStage),
    "pii": (PIIConfig, PIIStage),
    "harmful": (HarmfulConfig, HarmfulStage),
}
DEFAULT_STAGES = ["normalize", "exact_dedup", "near_dedup", "quality", "pii", "harmful"]


class StageSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="stage kind: " + ", ".join(STAGES))
    settings: dict = Field(default_factory=dict, description="the stage's settings (validated by its own model)")


class Recipe(BaseModel):
    """A cleaning recipe; unknown keys anywhere are errors."""

    model_config = ConfigDict(extra="forbid")
    format: str = Field("auto", description="record format of the input: auto or a tunesmith format")
    on_error: Literal["skip", "stop"] = Field("skip", description="unreadable rows: count and skip, or stop")
    stages: list[StageSpec] = Field(default_factory=lambda: [StageSpec(name=n) for n in DEFAULT_STAGES],
                                    description="stages in order")


def _stage_spec(entry: object, i: int) -> StageSpec:
    if isinstance(entry, str):
        name, settings = entry, {}
    elif isinstance(entry, dict) and len(entry) == 1:
        name, settings = next(iter(entry.items()))
        settings = settings or {}
    else:
        raise TunesmithError(f"recipe stages[{i}]: write a stage name, or {{name: {{settings}}}}; got {entry!r}")
    if name not in STAGES:
        close = difflib.get_close_matches(str(name), STAGES, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise TunesmithError(f"recipe stages[{i}]: unknown stage {name!r}{hint}; known: {', '.join(STAGES)}")
    if not isinstance(settings, dict):
        raise TunesmithError(f"recipe stages[{i}] ({name}): settings must be a mapping, got {settings!r}")
    return StageSpec(name=name, settings=settings)


def parse_recipe(data: dict | None) -> Recipe:
    """Validate a recipe dict (as read from YAML); errors name the stage and the key."""
    data = dict(data or {})
    if "stages" in data:
        if not isinstance(data["stages"], list):
            raise TunesmithError("recipe 'stages' must be a list")
        data["stages"] = [_stage_spec(e, i) for i, e in enumerate(data["stages"])]
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise TunesmithError(f"recipe {'.'.join(map(str, err['loc']))}: {err['msg']}") from None
    for i, spec in enumerate(recipe.stages):
        _build(spec, i)  # validate every stage's settings now, before any row is read
    return recipe


def load_recipe(path: str | Path | None) -> Recipe:
    if path is None:
        return Recipe()
    p = Path(path)
    if not p.is_file():
        raise TunesmithError(f"{p}: recipe file not found")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise TunesmithError(f"{p}: not valid YAML: {exc}") from None
    if data is not None and not isinstance(data, dict):
        raise TunesmithError(f"{p}: a recipe is a mapping with 'stages: [...]'")
    return parse_recipe(data)


def _build(spec: StageSpec, i: int):
    config_cls, stage_cls = STAGES[spec.name]
    try:
        cfg = config_cls.model_validate(spec.settings)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(map(str, err["loc"]))
        raise TunesmithError(f"recipe stages[{i}] ({spec.name}){'.' + where if where else ''}: {err['msg']}") from None
    return stage_cls(cfg)


def side_paths(out: str | Path) -> dict[str, Path]:
    """Where clean writes its side files for output OUT (x.jsonl -> x.removed.jsonl, x.stats.json)."""
    o = Path(out)
    stem = o.with_suffix("")
    return {"removed": Path(f"{stem}.removed.jsonl"), "stats": Path(f"{stem}.stats.json")}


def clean_file(path: str | Path, out: str | Path, recipe: Recipe | dict | None = None, manifest: bool = True) -> dict:
    """Clean `path` into `out` (JSONL) with the recipe; returns (and writes) the stats report."""
    recipe = recipe if isinstance(recipe, Recipe) else parse_recipe(recipe)
    out = Path(out)
    if out.suffix.lower() != ".jsonl":
        raise TunesmithError(f"{out}: the cleaned output is written as JSONL; name it .jsonl")
    if Path(path).resolve() == out.resolve():
        raise TunesmithError(f"{out}: the output would overwrite the input; choose another name")
    stages = [(f"{s.name}" if [t.name for t in recipe.stages].count(s.name) == 1 else f"{s.name}#{i}", _build(s, i))
              for i, s in enumerate(recipe.stages)]
    counts = {name: {"removed": 0, "changed": 0, "reasons": {}} for name, _ in stages}
    report, rejects = SkipReport(), []
    paths = side_paths(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    start, rows_in, kept = time.perf_counter(), 0, 0
    with out.open("w", encoding="utf-8") as fout, paths["removed"].open("w", encoding="utf-8") as frem:
        def drop(stage: str, reason: str, detail: str, line: int, row: dict | str) -> None:
            """One side-file record; `row` is the row as read (its JSON text when already serialised)."""
            head = json.dumps({"stage": stage, "reason": reason, "detail": detail, "line": line}, ensure_ascii=False)
            body = row if isinstance(row, str) else json.dumps(row, ensure_ascii=False)
            frem.write(f'{head[:-1]}, "row": {body}}}\n')

        for item in iter_items(path, report, recipe.format, recipe.on_error, rejects):
            for line, row, msg in rejects:
                drop("read", "bad row", msg, line, row)
            rejects.clear()
            rows_in += 1
            original = json.dumps(item.row, ensure_ascii=False)  # removed rows are kept as read, before any stage changed them
            for name, stage in stages:
                verdict = stage(item)
                if verdict is None:
                    continue
                c = counts[name]
                c["removed" if verdict.removed else "changed"] += 1
                c["reasons"][verdict.reason] = c["reasons"].get(verdict.reason, 0) + 1
                if verdict.removed:
                    drop(name, verdict.reason, verdict.detail, item.line, original)
                    break
            else:
                kept += 1
                fout.write(json.dumps(item.row, ensure_ascii=False) + "\n")
        for line, row, msg in rejects:
            drop("read", "bad row", msg, line, row)
    report.kept = rows_in
    if rows_in == 0:
        first = f"; first problem: {report.examples[0]}" if report.examples else ""
        raise DataError(path, None, None, f"no usable rows ({report.skipped} skipped, kept in {paths['removed']}){first}")
    for name, stage in stages:
        counts[name].update(stage.stats() if hasattr(stage, "stats") else {})
    stats = {
        "input": str(path), "output": str(out), "removed_file": str(paths["removed"]),
        "rows_read": report.total, "rows_skipped": report.skipped, "skip_reasons": report.reasons,
        "rows_in": rows_in, "rows_out": kept, "rows_removed": rows_in - kept,
        "stages": [{"name": name, **counts[name]} for name, _ in stages],
        "recipe": recipe.model_dump(), "seconds": round(time.perf_counter() - start, 3),
    }
    paths["stats"].write_text(json.dumps(stats, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if manifest:
        from tunesmith.data.versioning import write_manifest

        write_manifest(out, parents=[path], recipe=stats["recipe"], stats={k: stats[k] for k in ("rows_in", "rows_out", "stages")})
    return stats
