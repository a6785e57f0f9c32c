"""Preference suite on the tiny model: log-prob, DPO implicit-reward and reward-model accuracy, checked against a
direct unbatched computation from full logits / hidden states."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from tunesmith.errors import DataError

PAIRS = [
    ("What is the capital of France?", "Paris is the capital of France.", "I like turtles."),
    ("Name a colour.", "Blue.", "The number seven, probably."),
    ("What is 2 + 2?", "4", "2 + 2 is 5."),
    ("Say hello.", "Hello!", "Goodbye forever."),
    ("Which animal barks?", "A dog barks.", "A fish barks loudly."),
    ("Is ice cold?", "Yes, ice is cold.", "No, ice is hot."),
]


def _lora(tiny_model_dir, seed: int, head: bool = False):
    from tunesmith.config.schema import LoraConfig, MethodConfig, ModelConfig
    from tunesmith.models.adapters import apply_method
    from tunesmith.models.heads import attach_head
    from tunesmith.models.load import load_model

    model = apply_method(load_model(ModelConfig(name_or_path=str(tiny_model_dir), dtype="fp32")),
                         MethodConfig(kind="lora", lora=LoraConfig(r=4, alpha=8)))
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    if head:
        attach_head(model, seed=seed)
    return model


@pytest.fixture(scope="module")
def folders(tmp_path_factory, tiny_model_dir):
    """A policy adapter (stands in for a DPO run's output) and a reward-model run folder with its head."""
    from tunesmith.models.adapters import save_adapter
    from tunesmith.models.heads import save_head

    root = tmp_path_factory.mktemp("pref")
    policy = save_adapter(_lora(tiny_model_dir, 1), root / "dpo" / "adapter")
    rm = _lora(tiny_model_dir, 2, head=True)
    rm_dir = save_adapter(rm, root / "rm" / "adapter")
    save_head(rm, rm_dir)
    data = root / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": p, "chosen": c, "rejected": r}) + "\n" for p, c, r in PAIRS))
    return {"policy": policy, "rm": rm_dir, "data": data}


def _direct_logp(model, ids: list[int], labels: list[int]) -> float:
    logits = model(input_ids=torch.tensor([ids])).logits[0].float()
    logps = torch.log_softmax(logits, dim=-1)
    return sum(float(logps[t - 1, ids[t]]) for t in range(1, len(ids)) if labels[t] != -100)


@torch.no_grad()
def _direct(tiny_model_dir, folders, tokenizer):
    """Per pair, one row at a time: policy / reference log-probs and RM scores, without the suite's batching."""
    from tunesmith.config.schema import ModelConfig
    from tunesmith.data.preference import load_preference_examples
    from tunesmith.models.adapters import load_adapter
    from tunesmith.models.heads import get_head, load_head
    from tunesmith.models.load import load_model
    from tunesmith.serving.engine import load_for_inference

    pairs = load_preference_examples(str(folders["data"]), tokenizer, "pairwise")
    policy, _ = load_for_inference(str(tiny_model_dir), str(folders["policy"]), dtype="fp32")
    rm = load_adapter(load_model(ModelConfig(name_or_path=str(tiny_model_dir), dtype="fp32")), str(folders["rm"]), trainable=False).eval()
    load_head(rm, folders["rm"])
    out = {"logp": [], "reward": [], "rm": []}
    for pair in pairs:
        sides = (pair.chosen, pair.rejected)
        lp = [_direct_logp(policy, e.input_ids, e.labels) for e in sides]
        with policy.disable_adapter():
            ref = [_direct_logp(policy, e.input_ids, e.labels) for e in sides]
        score = [float(get_head(rm)(rm.get_base_model().model(input_ids=torch.tensor([e.input_ids])).last_hidden_state[0, -1])) for e in sides]
        out["logp"].append(float(lp[0] > lp[1]))
        out["reward"].append(float(lp[0] - ref[0] > lp[1] - ref[1]))
        out["rm"].append(float(score[0] > score[1]))
        out.setdefault("margin", []).append(0.1 * ((lp[0] - ref[0]) - (lp[1] - ref[1])))
    return out


def test_preference_suite_matches_a_direct_computation(tmp_path, tiny_model_dir, folders, tokenizer):
    from tunesmith.cli.main import main

    cfg = {"models": [{"name": "base", "model": str(tiny_model_dir), "dtype": "fp32"},
                      {"name": "dpo", "model": str(tiny_model_dir), "adapter": str(folders["policy"]), "dtype": "fp32"}],
           "suites": [{"name": "prefs", "kind": "preference", "data": str(folders["data"]), "reward_model": str(folders["rm"]), "beta": 0.1}],
           "output_dir": str(tmp_path / "out")}
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump(cfg))
    main(["eval", str(tmp_path / "eval.yaml"), "--quiet"])
    report = json.loads((tmp_path / "out" / "results.json").read_text())
    dpo, base = report["results"]["dpo"]["prefs"], report["results"]["base"]["prefs"]
    direct = _direct(tiny_model_dir, folders, tokenizer)
    n = len(PAIRS)
    assert [i["scores"]["logp_accuracy"] for i in dpo["items"]] == direct["logp"]
    assert [i["scores"]["reward_accuracy"] for i in dpo["items"]] == direct["reward"]
    assert [i["scores"]["rm_accuracy"] for i in dpo["items"]] == direct["rm"]
    for key, name in (("logp", "logp_accuracy"), ("reward", "reward_accuracy"), ("rm", "rm_accuracy")):
        assert 0 <= dpo["metrics"][name] <= 1 and dpo["metrics"][name] == pytest.approx(sum(direct[key]) / n)
    assert dpo["metrics"]["reward_margin"] == pytest.approx(sum(direct["margin"]) / n, abs=1e-4)
    assert dpo["reference"] == "adapters disabled" and dpo["metrics"]["pairs"] == n
    assert "reward_accuracy" not in base["metrics"] and base["metrics"]["rm_accuracy"] == dpo["metrics"]["rm_accuracy"]
    assert base["metrics"]["logp_accuracy"] != dpo["metrics"]["logp_accuracy"] or base["metrics"]["logp_margin"] != dpo["metrics"]["logp_margin"]
    comp = report["comparisons"][0]["suites"]["prefs"]["metrics"]
    assert set(comp) == {"logp_accuracy", "rm_accuracy"} and comp["logp_accuracy"]["test"] == "mcnemar_exact"


def test_bad_pairs_stop_before_any_model_loads(tmp_path):
    from tunesmith.evaluation.preference import check_pairs

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "a", "chosen": "b", "rejected": "c"}) + "\n" + json.dumps({"prompt": "a", "chosen": "b"}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl:2: field 'rejected' is missing"):
        check_pairs(str(bad))
    with pytest.raises(Exception, match="need a data file of held-out pairs"):
        check_pairs(None)
