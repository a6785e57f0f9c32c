"""Preference suite: how often a model ranks the chosen answer above the rejected one on held-out pairs.

Per pair (read and tokenised by data/preference.py, the same code training uses):
- logp_accuracy: log π(y_w|x) > log π(y_l|x), sequence log-probs summed over answer tokens (every model);
- reward_accuracy: DPO implicit reward r(y) = β(log π(y|x) - log π_ref(y|x)) ranks y_w above y_l (Rafailov et
  al. 2023, Eq. 5), with π_ref = the same model with its adapters disabled (objectives/logprobs.py); only for
  models evaluated with an adapter (β scales the reported margin, never the accuracy);
- rm_accuracy: a trained Bradley-Terry reward model (`reward_model:` run folder with reward_head.safetensors,
  models/heads.py) scores y_w above y_l (Ouyang et al. 2022). Ties count as wrong.
"""

from __future__ import annotations

import torch

from tunesmith.errors import DataError, SkipReport, TunesmithError

BATCH_PAIRS = 8
_REWARD_MODELS: dict[tuple, object] = {}


def check_pairs(path: str | None, limit: int | None = None) -> str:
    """Parse every row (no tokenizer needed) so bad pairs stop before any model loads."""
    from tunesmith.data.preference import detect_preference_format, parse_pairs
    from tunesmith.data.readers import read_rows

    if not path:
        raise TunesmithError("preference suites need a data file of held-out pairs: set `data:` (prompt, chosen, rejected)")
    rows = 0
    for line, row in read_rows(path, SkipReport(), on_error="stop"):
        if detect_preference_format(row) != "preference":
            raise DataError(path, line, "chosen", f"preference rows need prompt + chosen + rejected (or prompt + responses); the row has: {', '.join(map(repr, row))}")
        parse_pairs(row, path, line)
        rows += 1
        if limit and rows >= limit:
            break
    if not rows:
        raise DataError(path, None, None, "no preference pairs")
    return path


def _base_name(model) -> str:
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return inner.config._name_or_path


def reward_model(folder: str, base: str, tokenizer, dtype: str):
    """The reward model of an rm run (loaded once per process), via training.rewards.ModelReward's loader."""
    from tunesmith.training.rewards import ModelReward

    key = (folder, base, dtype)
    if key not in _REWARD_MODELS:
        _REWARD_MODELS[key] = ModelReward(folder, base, tokenizer, dtype=dtype).model
    return _REWARD_MODELS[key]


def _pair_batch(pairs: list, pad_id: int, device) -> dict:
    """Chosen rows first, then rejected rows (the pairwise batch layout of training)."""
    from tunesmith.data.collate import pad_batch

    batch = pad_batch([p.chosen for p in pairs] + [p.rejected for p in pairs], pad_id)
    return {k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor)}


@torch.inference_mode()
def pair_scores(model, pairs: list, pad_id: int, rm=None) -> dict[str, list[float]]:
    """Per pair: policy log-probs, reference log-probs (adapter models) and RM scores, chosen and rejected."""
    from tunesmith.models.heads import reward_scores
    from tunesmith.objectives.logprobs import AdapterDisabledReference, sequence_logps, split_pairs

    ref = AdapterDisabledReference(model) if hasattr(model, "disable_adapter") else None
    device = next(model.parameters()).device
    out: dict[str, list[float]] = {}

    def add(name: str, values: torch.Tensor) -> None:
        chosen, rejected = split_pairs(values.float().cpu())
        out.setdefault(f"{name}_chosen", []).extend(chosen.tolist())
        out.setdefault(f"{name}_rejected", []).extend(rejected.tolist())

    for start in range(0, len(pairs), BATCH_PAIRS):
        batch = _pair_batch(pairs[start : start + BATCH_PAIRS], pad_id, device)
        add("logp", sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["labels"])[0])
        if ref is not None:
            add("ref", ref.logps(batch))
        if rm is not None:
            rm_device = next(rm.parameters()).device
            add("rm", reward_scores(rm, batch["input_ids"].to(rm_device), batch["attention_mask"].to(rm_device)))
    return out


def _item_scores(s: dict[str, list[float]], k: int, beta: float) -> tuple[dict[str, float], dict[str, float]]:
    """(0/1 accuracies, margins) of pair k."""
    acc = {"logp_accuracy": float(s["logp_chosen"][k] > s["logp_rejected"][k])}
    margins = {"logp_margin": s["logp_chosen"][k] - s["logp_rejected"][k]}
    if "ref_chosen" in s:
        r_w = beta * (s["logp_chosen"][k] - s["ref_chosen"][k])
        r_l = beta * (s["logp_rejected"][k] - s["ref_rejected"][k])
        acc["reward_accuracy"], margins["reward_margin"] = float(r_w > r_l), r_w - r_l
    if "rm_chosen" in s:
        acc["rm_accuracy"], margins["rm_margin"] = float(s["rm_chosen"][k] > s["rm_rejected"][k]), s["rm_chosen"][k] - s["rm_rejected"][k]
    return acc, margins


def run_preference(model, tokenizer, path: str, spec) -> dict:
    """Accuracy of the model's (and the optional reward model's) preferences on the pairs in `path`."""
    from tunesmith.data.preference import load_preference_examples

    report = SkipReport()
    pairs = load_preference_examples(path, tokenizer, "pairwise", max_length=spec.max_length, report=report)
    pairs = pairs[: spec.limit] if spec.limit else pairs
    rm = None
    if spec.reward_model:
        dtype = "fp32" if next(model.parameters()).dtype == torch.float32 else "bf16"
        rm = reward_model(spec.reward_model, spec.reward_base or _base_name(model), tokenizer, dtype)
    was_training = model.training
    model.eval()
    try:
        s = pair_scores(model, pairs, tokenizer.pad_token_id, rm)
    finally:
        model.train(was_training)
    items, sums = [], {}
    for k, pair in enumerate(pairs):
        acc, margins = _item_scores(s, k, spec.beta)
        for name, v in {**acc, **margins}.items():
            sums[name] = sums.get(name, 0.0) + v
        items.append({"id": f"{path}:{pair.chosen.line}#{k}", "category": "all", "output": margins, "reference": "chosen",
                      "scores": acc})
    metrics = {name: v / len(pairs) for name, v in sums.items()}
    metrics["pairs"] = float(len(pairs))
    directions = {name: True for name in metrics}
    return {"metrics": metrics, "directions": directions, "items": items, "skipped": report.summary(),
            "reference": "adapters disabled" if "ref_chosen" in s else None}
