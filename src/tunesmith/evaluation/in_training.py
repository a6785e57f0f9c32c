"""Eval suites during training, and best-checkpoint selection by a chosen metric.

`train.eval_suites` names suites that run on the model being trained every `train.eval_suites_every` steps
(and at the last step; on a fresh start also at step 0, as the before-training baseline). An entry is
  - the name of a suite in `train.eval_suites_config` (an eval YAML; its generation settings are used),
  - a bundled suite kind that needs no data file (ifeval, likelihood, safety),
  - "KIND=FILE" (e.g. "quickstart_json=data/generated/quickstart/eval.jsonl"), or
  - an inline suite spec {name, kind, data, limit, ...} exactly as in an eval config.
Their metrics go to metrics.jsonl with split "suite" and keys "<suite>/<metric>" (TensorBoard tag
"suite/<suite>/<metric>"). `train.best_metric` ("eval_loss", "eval_<metric>" or "suite/<suite>/<metric>")
picks the best checkpoint; the loop saves a checkpoint whenever it improves and keep-last-N never deletes it.
"""

from __future__ import annotations

import difflib
import math
import time
from dataclasses import dataclass, field

from rich.console import Console

from tunesmith.errors import TunesmithError
from tunesmith.evaluation.config import SUITE_KINDS, GenerationSettings, SuiteSpec

console = Console(stderr=True)
BUNDLED = ("ifeval", "likelihood", "safety")  # kinds that run without a data file
_LOWER_IS_BETTER = ("loss", "perplexity", "bits_per_byte", "nll")


def _suggest(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f" — did you mean '{close[0]}'?" if close else ""


def _from_config(path: str) -> tuple[dict[str, SuiteSpec], GenerationSettings]:
    from tunesmith.evaluation.config import load_eval_config

    cfg = load_eval_config(path)
    return {s.name: s for s in cfg.suites}, cfg.generation


def _one_spec(entry: str | dict, where: str, named: dict[str, SuiteSpec], config: str | None) -> SuiteSpec:
    if isinstance(entry, dict):
        try:
            return SuiteSpec.model_validate(entry)
        except ValueError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in getattr(exc, "errors", lambda: [])())
            raise TunesmithError(f"{where}: invalid inline suite: {problems or exc}") from None
    kind, eq, file = entry.partition("=")
    if eq:
        if kind not in SUITE_KINDS:
            raise TunesmithError(f"{where}: unknown suite kind '{kind}' in '{entry}'; use one of {', '.join(SUITE_KINDS)}{_suggest(kind, list(SUITE_KINDS))}")
        return SuiteSpec(name=kind, kind=kind, data=file)
    if entry in named:
        return named[entry]
    if entry in BUNDLED:
        return SuiteSpec(name=entry, kind=entry)
    options = list(named) + list(BUNDLED)
    source = f"the suites of {config} ({', '.join(named)}), " if config else "(no train.eval_suites_config given) "
    raise TunesmithError(f"{where}: unknown suite '{entry}'{_suggest(entry, options)}; name one of {source}a bundled suite "
                         f"({', '.join(BUNDLED)}), 'KIND=FILE', or give an inline suite {{name, kind, data, ...}}")


def resolve_suites(train) -> tuple[list[SuiteSpec], GenerationSettings]:
    """The SuiteSpecs `train.eval_suites` names (validated, unique), and the generation settings they use."""
    named, settings = ({}, GenerationSettings())
    if train.eval_suites_config:
        named, settings = _from_config(train.eval_suites_config)
    specs = [_one_spec(e, f"train.eval_suites[{i}]", named, train.eval_suites_config) for i, e in enumerate(train.eval_suites)]
    names = [s.name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise TunesmithError(f"train.eval_suites: suite names must be unique; repeated: {', '.join(dupes)} (give inline suites distinct names)")
    for s in specs:
        if s.kind == "judge" and s.judge is None:
            raise TunesmithError(f"train.eval_suites: suite '{s.name}' (judge) needs `judge:` (a model or endpoint)")
    return specs, settings


@dataclass
class TrainingSuites:
    """Callable run by the loop: every suite on the current model -> {"<suite>/<metric>": value}."""

    model: object
    tokenizer: object
    specs: list[SuiteSpec]
    prepared: dict
    settings: GenerationSettings
    template: str
    directions: dict[str, bool] = field(default_factory=dict)  # "suite/<suite>/<metric>" -> higher is better
    errors: dict[str, int] = field(default_factory=dict)

    def __call__(self) -> dict[str, float]:
        from tunesmith.evaluation.suites import SUITES, settings_for
        from tunesmith.training.loop import autocast_context

        out: dict[str, float] = {}
        for spec in self.specs:
            started = time.perf_counter()
            try:
                with autocast_context(self.model):
                    result = SUITES[spec.kind].run(self.model, self.tokenizer, self.prepared[spec.name], spec,
                                                   settings_for(spec, self.settings), self.template)
            except TunesmithError as exc:  # one failing suite (e.g. a judge endpoint down) does not stop training
                self.errors[spec.name] = self.errors.get(spec.name, 0) + 1
                console.print(f"[yellow]eval suite '{spec.name}' failed: {exc}")
                continue
            for metric, value in result["metrics"].items():
                if isinstance(value, (int, float)):
                    out[f"{spec.name}/{metric}"] = float(value)
                    self.directions[f"suite/{spec.name}/{metric}"] = result["directions"].get(metric, metric not in _LOWER_IS_BETTER)
            out[f"{spec.name}/seconds"] = round(time.perf_counter() - started, 3)
        return out


def build_training_suites(cfg, tokenizer) -> TrainingSuites | None:
    """Resolve and prepare (read + validate items) the configured suites; None when there are none.

    Runs before the model loads (bad names or data stop cheaply); the caller sets `.model` afterwards."""
    from tunesmith.evaluation.suites import SUITES

    if not cfg.train.eval_suites:
        if cfg.train.eval_suites_every:
            raise TunesmithError("train.eval_suites_every is set but train.eval_suites names no suite")
        return None
    specs, settings = resolve_suites(cfg.train)
    prepared = {s.name: SUITES[s.kind].prepare(s) for s in specs}
    return TrainingSuites(None, tokenizer, specs, prepared, settings, cfg.data.template)


def setup(cfg, tokenizer, has_eval: bool) -> tuple[TrainingSuites | None, BestTracker | None]:
    """In-training suites and the best-checkpoint tracker for a run, validated before the model loads."""
    suites = build_training_suites(cfg, tokenizer)
    return suites, build_best_tracker(cfg.train, has_eval, suites)


@dataclass
class BestTracker:
    """Follows `metric` over evaluations; `__call__(state, metrics)` is True when this step is a new best."""

    metric: str
    mode: str  # "min" | "max" | "auto" (resolved on first sight)
    suites: TrainingSuites | None = None

    def __call__(self, state, metrics: dict[str, float]) -> bool:
        if self.metric not in metrics:
            self._check_present(metrics)
            return False
        value = metrics[self.metric]
        if not math.isfinite(value):  # a diverged evaluation is never the best
            return False
        mode = self._mode()
        better = state.best_value is None or (value < state.best_value if mode == "min" else value > state.best_value)
        if better and state.step > 0:
            state.best_value, state.best_step = value, state.step
        return better and state.step > 0

    def _mode(self) -> str:
        if self.mode != "auto":
            return self.mode
        if self.suites is not None and self.metric in self.suites.directions:
            self.mode = "max" if self.suites.directions[self.metric] else "min"
        else:
            self.mode = "min" if any(w in self.metric for w in _LOWER_IS_BETTER) else "max"
        return self.mode

    def _check_present(self, metrics: dict[str, float]) -> None:
        """The metric's source ran at this step but did not report it: a typo in train.best_metric."""
        prefix = "eval_" if self.metric.startswith("eval_") else self.metric.rsplit("/", 1)[0] + "/"
        seen = sorted(k for k in metrics if k.startswith(prefix))
        if seen and not (self.suites and self.suites.errors and not self.metric.startswith("eval_")):
            raise TunesmithError(f"train.best_metric: '{self.metric}' is not reported{_suggest(self.metric, seen)}; "
                                 f"available: {', '.join(seen)}")


def build_best_tracker(train, has_eval: bool, suites: TrainingSuites | None) -> BestTracker | None:
    """Validate train.best_metric / best_mode against what this run evaluates; None when unset."""
    metric = train.best_metric
    if not metric:
        return None
    if metric.startswith("eval_"):
        if not has_eval:
            raise TunesmithError(f"train.best_metric '{metric}' needs evaluation data: set data.eval or data.eval_fraction")
        if train.best_mode == "auto" and not any(w in metric for w in _LOWER_IS_BETTER):
            raise TunesmithError(f"train.best_mode: cannot tell whether a higher '{metric}' is better; set best_mode: max or min")
    elif metric.startswith("suite/") and metric.count("/") >= 2:
        name = metric.split("/")[1]
        names = [s.name for s in suites.specs] if suites else []
        if name not in names:
            raise TunesmithError(f"train.best_metric '{metric}': suite '{name}' is not in train.eval_suites"
                                 f"{_suggest(name, names)} ({', '.join(names) or 'none configured'})")
    else:
        raise TunesmithError(f"train.best_metric '{metric}': use eval_<metric> (e.g. eval_loss) or suite/<suite>/<metric> "
                             "(e.g. suite/quickstart_json/exact_match)")
    return BestTracker(metric, train.best_mode, suites)


def run_at_start(suites: TrainingSuites, best: BestTracker | None, writer) -> dict[str, float]:
    """Step-0 baseline on a fresh run: the untrained model's suite metrics (also checks best_metric's name)."""
    from tunesmith.training.checkpoint import TrainState

    values = suites()
    suites.model.train()
    if writer is not None:
        writer.write(0, values, prefix="suite")
    if best is not None:
        best(TrainState(), {f"suite/{k}": v for k, v in values.items()})  # step 0: validates, never a "best"
    return values


def best_summary(best: BestTracker | None, state, ckpt_root) -> dict | None:
    """summary.json's record of the best checkpoint."""
    if best is None:
        return None
    path = ckpt_root / f"checkpoint-{state.best_step}" if state.best_step else None
    adapter = path / "adapter" if path is not None and (path / "adapter").is_dir() else None
    return {"metric": best.metric, "mode": best._mode(), "value": state.best_value, "step": state.best_step,
            "checkpoint": str(path) if path else None, "adapter": str(adapter) if adapter else None}


def last_suite_metrics(history: list[dict]) -> dict | None:
    """The last logged suite metrics ("<suite>/<metric>": value), for summary.json."""
    rows = [h for h in history if any(k.startswith("suite/") for k in h)]
    return {k[len("suite/"):]: v for k, v in rows[-1].items() if k.startswith("suite/")} if rows else None
