"""Reward sources for online RL: Python reward functions / built-in verifiers, and trained reward models.

A reward function is `fn(completion: str, row: dict) -> float`: the decoded response (stop token removed) and
the prompt's data row as read from the file (so it can use fields such as `target`). It is named in the config
as a built-in (`json_fields`, `json_valid`), as "package.module:function", or as "path/to/file.py:function".
A function that raises, or returns something that is not a finite number, is counted per function and the
sample gets `rl.reward_fallback` instead: a bad reward never stops a run midway.

A reward model is a folder written by an `rm` run (`<out>/adapter` or `<out>/model`) holding
reward_head.safetensors (models/heads.py). It scores prompt + response rendered with the same chat template
the reward model was trained on, read at the last real token; a batch that raises, or a score that is not
finite, is counted as a `reward_model` failure and gets the fallback too. Scores of all sources are summed;
the failure counts reach the metrics (`reward_failed_rate`) and the run's summary.json / end-of-run line.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from tunesmith.errors import TunesmithError
from tunesmith.tasks.scoring import parse_json_object, same_value

RewardFn = Callable[[str, dict], float]


def json_valid(completion: str, row: dict) -> float:
    """1.0 when the response is one JSON object (a ```json fence is tolerated), else 0.0."""
    return float(parse_json_object(completion) is not None)


def json_fields(completion: str, row: dict) -> float:
    """Quickstart verifier: 0 for no JSON object, else 0.2 + 0.8 x the share of the row's `target` fields that
    are right (same value and type, tasks/scoring.py), minus 0.2 x the share of extra keys. Needs row['target']."""
    target = row.get("target")
    if not isinstance(target, dict) or not target:
        raise ValueError("json_fields needs a 'target' object in the data row")
    parsed = parse_json_object(completion)
    if parsed is None:
        return 0.0
    right = sum(k in parsed and same_value(parsed[k], v) for k, v in target.items())
    extra = sum(k not in target for k in parsed)
    return 0.2 + 0.8 * right / len(target) - 0.2 * extra / max(len(parsed), 1)


BUILTIN_REWARDS: dict[str, RewardFn] = {"json_fields": json_fields, "json_valid": json_valid}


def resolve_reward_function(spec: str, where: str = "rl.reward_functions") -> RewardFn:
    """A built-in name, 'module:function' or 'file.py:function' -> the callable (errors at start-up, not mid-run)."""
    if ":" not in spec:
        if spec not in BUILTIN_REWARDS:
            raise TunesmithError(f"{where}: unknown reward '{spec}'; built-ins: {', '.join(BUILTIN_REWARDS)}, "
                                 "or name your own as 'module:function' / 'file.py:function'")
        return BUILTIN_REWARDS[spec]
    module_name, _, fn_name = spec.rpartition(":")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise TunesmithError(f"{where}: reward file '{path}' not found")
            module_spec = importlib.util.spec_from_file_location(f"tunesmith_reward_{path.stem}", path)
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except TunesmithError:
        raise
    except Exception as exc:  # the user's module failed to import: say which and why
        raise TunesmithError(f"{where}: cannot import '{module_name}' for reward '{spec}' ({type(exc).__name__}: {exc})") from exc
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise TunesmithError(f"{where}: '{module_name}' has no function '{fn_name}'")
    return fn


@dataclass
class RewardStats:
    """Calls and failures per reward source, with the first few failure messages."""

    calls: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    def fail(self, name: str, message: str) -> None:
        self.failures[name] = self.failures.get(name, 0) + 1
        if len(self.examples) < 10:
            self.examples.append(f"{name}: {message}")

    def summary(self) -> str:
        if not self.failures:
            return f"{self.calls} rewards computed, no failures"
        parts = ", ".join(f"{name} {n}" for name, n in sorted(self.failures.items()))
        return f"{self.calls} rewards computed; failed (fallback used): {parts}; e.g. {self.examples[0]}"


def _as_reward(value: object) -> float:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"returned {type(value).__name__} {value!r:.60}, not a number")
    if not math.isfinite(value):
        raise ValueError(f"returned {value}, not a finite number")
    return float(value)


class FunctionReward:
    """One Python reward function; failures are counted and replaced by `fallback`."""

    def __init__(self, name: str, fn: RewardFn, fallback: float = 0.0):
        self.name, self.fn, self.fallback = name, fn, fallback

    def score(self, completions: list[str], rows: list[dict], stats: RewardStats) -> tuple[torch.Tensor, torch.Tensor]:
        """(N,) rewards and (N,) bool flags of the samples that got the fallback."""
        scores, failed = [], []
        for completion, row in zip(completions, rows):
            try:
                scores.append(_as_reward(self.fn(completion, row)))
                failed.append(False)
            except Exception as exc:  # any error in user code is counted, never fatal
                stats.fail(self.name, f"{type(exc).__name__}: {exc}")
                scores.append(self.fallback)
                failed.append(True)
        return torch.tensor(scores, dtype=torch.float32), torch.tensor(failed, dtype=torch.bool)


class ModelReward:
    """A trained Bradley-Terry reward model (rm run output folder) scoring template-rendered conversations."""

    name = "reward_model"

    def __init__(self, folder: str, base: str, tokenizer, dtype: str = "fp32", batch_size: int = 16, max_length: int = 1024,
                 fallback: float = 0.0):
        from tunesmith.config.schema import ModelConfig
        from tunesmith.models.adapters import load_adapter
        from tunesmith.models.heads import load_head
        from tunesmith.models.load import load_model

        path = Path(folder)
        if not (path / "reward_head.safetensors").is_file():
            raise TunesmithError(f"rl.reward_model: {path} holds no reward_head.safetensors (train one with objective rm)")
        if (path / "adapter_config.json").is_file():
            model = load_adapter(load_model(ModelConfig(name_or_path=base, dtype=dtype)), str(path), trainable=False)
        else:
            model = load_model(ModelConfig(name_or_path=str(path), dtype=dtype))
        load_head(model, path)
        self.model = model.eval().requires_grad_(False)
        self.tokenizer, self.batch_size, self.max_length, self.fallback = tokenizer, batch_size, max_length, fallback

    def checked_score(self, completions: list[str], conversations: list[list[dict]],
                      stats: RewardStats) -> tuple[torch.Tensor, torch.Tensor]:
        """(N,) scores and (N,) bool failures: a batch that raises, or a non-finite score, gets the fallback."""
        scores, failed = [], []
        for start in range(0, len(completions), self.batch_size):
            chunk = slice(start, start + self.batch_size)
            try:
                part = self.score(completions[chunk], conversations[chunk]).float()
                bad = ~torch.isfinite(part)
                for value in part[bad].tolist():
                    stats.fail(self.name, f"returned {value}, not a finite number")
            except Exception as exc:  # e.g. a conversation the template cannot render: counted, never fatal
                part = torch.zeros(len(completions[chunk]))
                bad = torch.ones(len(part), dtype=torch.bool)
                for _ in range(len(part)):
                    stats.fail(self.name, f"{type(exc).__name__}: {exc}")
            scores.append(torch.where(bad, torch.full_like(part, self.fallback), part))
            failed.append(bad)
        empty = torch.zeros(0)
        return (torch.cat(scores), torch.cat(failed)) if scores else (empty, empty.bool())

    @torch.no_grad()
    def score(self, completions: list[str], conversations: list[list[dict]]) -> torch.Tensor:
        """(N,) scores of prompt + completion, rendered as in RM training and read at the last real token."""
        from tunesmith.data.collate import pad_batch
        from tunesmith.data.formats import Record
        from tunesmith.data.templates import render
        from tunesmith.models.heads import reward_scores

        examples = [render(Record(messages=messages + [{"role": "assistant", "content": text}]), self.tokenizer,
                           "last_assistant", self.max_length) for text, messages in zip(completions, conversations)]
        device = next(self.model.parameters()).device
        out = []
        for start in range(0, len(examples), self.batch_size):
            batch = pad_batch(examples[start : start + self.batch_size], self.tokenizer.pad_token_id)
            out.append(reward_scores(self.model, batch["input_ids"].to(device), batch["attention_mask"].to(device)).cpu())
        return torch.cat(out) if out else torch.zeros(0)


class RewardSource:
    """Sum of the configured reward functions and reward model; keeps failure statistics."""

    def __init__(self, functions: list[FunctionReward], model: ModelReward | None = None):
        if not functions and model is None:
            raise TunesmithError("online RL needs a reward: set rl.reward_functions (e.g. [json_fields]) and/or rl.reward_model")
        self.functions, self.model, self.stats = functions, model, RewardStats()

    def score(self, completions: list[str], rows: list[dict], conversations: list[list[dict]]) -> tuple[torch.Tensor, torch.Tensor]:
        """(N,) summed rewards and (N,) bool: some function failed on that sample (fallback used)."""
        total = torch.zeros(len(completions))
        failed = torch.zeros(len(completions), dtype=torch.bool)
        for fn in self.functions:
            scores, bad = fn.score(completions, rows, self.stats)
            total, failed = total + scores, failed | bad
        if self.model is not None:
            scores, bad = self.model.checked_score(completions, conversations, self.stats)
            total, failed = total + scores, failed | bad
        self.stats.calls += len(completions)
        return total, failed


def build_reward_source(rl, model_cfg, tokenizer, max_length: int = 1024) -> RewardSource:
    """The reward source the `rl` config section describes (imports and loads everything up front)."""
    functions = [FunctionReward(spec, resolve_reward_function(spec, f"rl.reward_functions[{i}]"), rl.reward_fallback)
                 for i, spec in enumerate(rl.reward_functions)]
    model = None
    if rl.reward_model:
        base = rl.reward_model_base or model_cfg.name_or_path
        model = ModelReward(rl.reward_model, base, tokenizer, model_cfg.dtype, rl.generation_batch_size, max_length,
                            rl.reward_fallback)
    return RewardSource(functions, model)
