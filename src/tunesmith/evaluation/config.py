"""The eval configuration: which models, which suites, how to generate, how to compare. Unknown keys are errors."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tunesmith.errors import TunesmithError

SUITE_KINDS = ("likelihood", "multiple_choice", "generation", "ifeval", "quickstart_json", "judge", "safety", "preference")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GenerationSettings(Section):
    max_new_tokens: int = Field(128, ge=1, description="longest answer in tokens")
    temperature: float = Field(0.0, ge=0, description="0 = greedy (reproducible); > 0 samples")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass (temperature > 0)")
    batch_size: int = Field(16, ge=1, description="prompts per generation batch")
    seed: int = Field(0, description="sampling seed")


class ModelSpec(Section):
    name: str = Field(..., description="label used in the report (e.g. base, sft)")
    model: str = Field("smollm2-135m-instruct", description="HF folder, .gguf file or the bundled alias")
    adapter: str | None = Field(None, description="saved adapter folder applied on top of `model`")
    dtype: Literal["auto", "bf16", "fp32"] = Field("auto", description="model dtype (auto: bf16 where native, else fp32)")
    template: str = Field("auto", description="chat template (must match training)")


class JudgeSpec(Section):
    model: str = Field("smollm2-135m-instruct", description="judge: a model tunesmith loads (HF folder, .gguf, alias) or, with `endpoint`, the served model's name")
    endpoint: str | None = Field(None, description="OpenAI-compatible base URL (POST <endpoint>/v1/chat/completions); unset = load `model` locally")
    api_key: str | None = Field(None, exclude=True, repr=False, description="bearer token for the endpoint (never written to results or cache keys)")
    adapter: str | None = Field(None, description="local judge: adapter folder applied on top of `model`")
    dtype: Literal["auto", "bf16", "fp32"] = Field("auto", description="local judge: dtype (auto: bf16 where native, else fp32)")
    template: str = Field("auto", description="local judge: chat template")
    max_new_tokens: int = Field(256, ge=1, description="longest judgement in tokens")
    timeout: float = Field(60.0, gt=0, description="endpoint: seconds to wait for one answer")
    retries: int = Field(3, ge=0, description="endpoint: retries after a timeout / 429 / 5xx (exponential backoff)")
    backoff: float = Field(1.0, ge=0, description="endpoint: first retry wait in seconds (doubles each retry)")
    concurrency: int = Field(4, ge=1, description="endpoint: requests in flight")
    cache: str | None = Field(None, exclude=True, description="verdict cache folder (default: <cache_dir>/judge); kept across runs so a rerun completes failed requests")


class SuiteSpec(Section):
    name: str = Field(..., description="label of this suite in the report (unique)")
    kind: Literal["likelihood", "multiple_choice", "generation", "ifeval", "quickstart_json", "judge", "safety", "preference"] = Field(..., description="what is measured")
    data: str | None = Field(None, description="JSONL/JSON/Parquet/CSV items; ifeval / likelihood without data use the bundled prompt set / general chat set")
    limit: int | None = Field(None, ge=1, description="evaluate only the first N items")
    max_length: int = Field(1024, ge=8, description="likelihood suites: longest tokenised row")
    batch_size: int = Field(8, ge=1, description="likelihood / multiple-choice suites: rows per forward pass (padding-aware; results do not depend on it)")
    generation: GenerationSettings | None = Field(None, description="override the global generation settings for this suite")
    probe: bool = Field(False, description="a general-ability probe for the forgetting (retention) check")
    regex: str | None = Field(None, description="generation suites: pattern an output must match (items may give their own 'pattern')")
    judge: JudgeSpec | None = Field(None, description="judge suites (required) and safety suites (optional second opinion): the judging model or endpoint")
    mode: Literal["single", "pairwise"] = Field("single", description="judge suites: 'single' grades 1-10; 'pairwise' compares each answer with the item's reference answer in both orders")
    head_to_head: bool = Field(True, description="judge suites, when the eval compares models: also judge each model's answer against the baseline's answer (both orders, disagreement = tie; win rate with CI)")
    reward_model: str | None = Field(None, description="preference suites: a reward-model run folder (reward_head.safetensors) whose accuracy on the pairs is reported")
    reward_base: str | None = Field(None, description="preference suites: base model of an adapter reward model (default: the evaluated model's base)")
    beta: float = Field(0.1, gt=0, description="preference suites: DPO beta scaling the reported implicit-reward margin")


class CompareConfig(Section):
    baseline: str | None = Field(None, description="model every other model is compared against (default: the first)")
    alpha: float = Field(0.05, gt=0, lt=1, description="significance level after Holm correction")
    bootstrap: int = Field(2000, ge=100, description="bootstrap resamples for confidence intervals")
    seed: int = Field(0, description="bootstrap seed")
    worst_examples: int = Field(5, ge=0, description="examples listed per metric where the candidate lost most")


class ForgettingConfig(Section):
    threshold: float = Field(0.95, gt=0, description="flag a probe whose retention (after / before) falls below this")


class EvalConfig(Section):
    models: list[ModelSpec] = Field(..., min_length=1, description="models to evaluate (the first is the baseline unless compare.baseline says otherwise)")
    suites: list[SuiteSpec] = Field(..., min_length=1, description="suites to run on every model")
    generation: GenerationSettings = Field(default_factory=GenerationSettings, description="generation settings for generative suites")
    compare: CompareConfig = Field(default_factory=CompareConfig, description="A/B statistics")
    forgetting: ForgettingConfig = Field(default_factory=ForgettingConfig, description="retention on probe suites")
    output_dir: str = Field("runs/eval", description="where results.json, report.html and the cache go")
    cache_dir: str | None = Field(None, description="result cache (default: <output_dir>/cache)")
    use_cache: bool = Field(True, description="reuse cached (model, suite, settings) results")

    @model_validator(mode="after")
    def _unique(self) -> "EvalConfig":
        for what, names in (("model", [m.name for m in self.models]), ("suite", [s.name for s in self.suites])):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"{what} names must be unique; repeated: {', '.join(dupes)}")
        if self.compare.baseline is not None and self.compare.baseline not in [m.name for m in self.models]:
            raise ValueError(f"compare.baseline '{self.compare.baseline}' is not one of the model names")
        for s in self.suites:
            if s.kind == "judge" and s.judge is None:
                raise ValueError(f"suite '{s.name}' (judge) needs `judge:` (a model to load, or endpoint + model)")
            if s.judge is not None and s.judge.cache is None:  # verdicts outlive a failed run, next to the result cache
                s.judge.cache = str(Path(self.cache_dir or Path(self.output_dir) / "cache") / "judge")
        return self

    @property
    def baseline(self) -> str:
        return self.compare.baseline or self.models[0].name


def _message(err: dict) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        return f"{loc}: unknown key" + _suggest(err["loc"])
    if err["type"] == "literal_error" and err["loc"][-1] == "kind":
        return f"{loc}: unknown suite kind {err['input']!r}: use one of {', '.join(SUITE_KINDS)}"
    return f"{loc}: {err['msg']}" if loc else err["msg"]


def _suggest(loc: tuple) -> str:
    model: type[BaseModel] = EvalConfig
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        info = model.model_fields.get(str(part))
        if info is None:
            return ""
        sub = info.annotation
        for cand in (sub, *getattr(sub, "__args__", ())):
            if isinstance(cand, type) and issubclass(cand, BaseModel):
                model = cand
                break
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1, cutoff=0.6)
    return f" — did you mean '{close[0]}'?" if close else f" (valid keys: {', '.join(model.model_fields)})"


def parse_config(data: dict, source: str = "config") -> EvalConfig:
    """Validate a mapping into an EvalConfig, all problems in one TunesmithError."""
    try:
        return EvalConfig.model_validate(data)
    except ValidationError as exc:
        problems = [_message(e) for e in exc.errors()]
        raise TunesmithError(f"{source}: invalid eval config:\n" + "\n".join(f"  {p}" for p in problems)) from None


def load_eval_config(path: str | Path) -> EvalConfig:
    """Read and validate an eval YAML file."""
    file = Path(path)
    if not file.is_file():
        raise TunesmithError(f"eval config '{file}' not found")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise TunesmithError(f"{file}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise TunesmithError(f"{file}: the eval config must be a mapping (models:, suites:, ...)")
    return parse_config(data, str(file))
