"""Eval suites during training (train.eval_suites) and best-checkpoint selection (train.best_metric), on the tiny model."""

from __future__ import annotations

import json

import pytest

from tests.e2e.test_cli_errors import run_cli
from tests.e2e.test_train import write_chat_data, write_config
from tunesmith.cli.main import main
from tunesmith.training.metrics import read_metrics


def _suite_rows(out) -> dict[int, dict]:
    return {r["step"]: r for r in read_metrics(out / "metrics.jsonl") if r["split"] == "suite"}


def test_suites_logged_at_their_steps_and_best_checkpoint_kept_when_not_last(tmp_path, tiny_model_dir):
    data = write_chat_data(tmp_path / "train.jsonl")
    suites = [{"name": "lik", "kind": "likelihood", "data": str(data)},
              {"name": "if", "kind": "ifeval", "limit": 2, "generation": {"max_new_tokens": 4, "batch_size": 2}}]
    # Training lowers the loss on its own data, so the MAX of that loss after step 0 is an early step:
    # a best checkpoint that is not the last one, which keep_last=1 would otherwise delete.
    config = write_config(tmp_path, tiny_model_dir, data, train={"max_steps": 8, "keep_last": 1, "eval_suites": suites,
                                                                 "eval_suites_every": 3, "best_metric": "suite/lik/loss",
                                                                 "best_mode": "max"})
    main(["train", str(config), "--quiet"])
    out = tmp_path / "run"
    rows = _suite_rows(out)
    assert sorted(rows) == [0, 3, 6, 8]  # step-0 baseline, every 3 steps, and the last step
    assert {"lik/loss", "lik/perplexity", "lik/bits_per_byte", "if/prompt_strict", "if/instruction_loose", "if/seconds"} <= set(rows[3])
    losses = {step: rows[step]["lik/loss"] for step in (3, 6, 8)}
    assert losses[3] > losses[6] > losses[8] and rows[0]["lik/loss"] > losses[3]  # training really moved the suite metric
    summary = json.loads((out / "summary.json").read_text())
    best = summary["best_checkpoint"]
    assert (best["metric"], best["mode"], best["step"]) == ("suite/lik/loss", "max", 3)
    assert best["value"] == pytest.approx(losses[3])
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-3", "checkpoint-8"]  # best survives keep_last=1
    assert best["adapter"] == str(out / "checkpoints" / "checkpoint-3" / "adapter")
    assert summary["final_suites"]["lik/loss"] == pytest.approx(losses[8])

    from tunesmith.evaluation.likelihood import run_likelihood  # the kept checkpoint really is the step-3 model
    from tunesmith.serving.engine import load_for_inference

    model, tok = load_for_inference(str(tiny_model_dir), best["adapter"], dtype="fp32")
    assert run_likelihood(model, tok, str(data))["metrics"]["loss"] == pytest.approx(losses[3], abs=1e-5)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("suite/lik/loss")] == [0, 3, 6, 8]


def test_best_by_eval_loss_defaults_to_min(tmp_path, tiny_model_dir):
    data = write_chat_data(tmp_path / "train.jsonl")
    config = write_config(tmp_path, tiny_model_dir, data, data={"eval": [{"path": str(data)}]},
                          train={"max_steps": 6, "eval_every": 2, "keep_last": 1, "best_metric": "eval_loss"})
    main(["train", str(config), "--quiet"])
    evals = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["split"] == "eval"}
    best = json.loads((tmp_path / "run" / "summary.json").read_text())["best_checkpoint"]
    assert best["mode"] == "min" and best["step"] == min(evals, key=evals.get) and best["value"] == pytest.approx(min(evals.values()))


def test_bad_suite_names_and_best_metric_are_clear_errors(tmp_path, tiny_model_dir, capsys):
    data = write_chat_data(tmp_path / "train.jsonl")
    eval_cfg = tmp_path / "eval.yaml"
    eval_cfg.write_text(json.dumps({"models": [{"name": "m"}], "suites": [{"name": "booking", "kind": "likelihood", "data": str(data)}]}))

    def run(**train) -> str:
        code, text = run_cli(["train", str(write_config(tmp_path, tiny_model_dir, data, train={"max_steps": 2, **train})), "--quiet"], capsys)
        assert code == 2 and "Traceback" not in text
        return text

    text = run(eval_suites=["bookin"], eval_suites_config=str(eval_cfg))
    assert "train.eval_suites[0]: unknown suite 'bookin'" in text and "did you mean 'booking'" in text and "ifeval" in text
    assert "unknown suite kind 'perplexity'" in run(eval_suites=["perplexity=x.jsonl"])
    text = run(eval_suites=["ifeval"], best_metric="suite/ifevl/prompt_strict")
    assert "suite 'ifevl' is not in train.eval_suites" in text and "did you mean 'ifeval'" in text
    assert "needs evaluation data" in run(best_metric="eval_loss")
    assert "use eval_<metric>" in run(best_metric="loss")
    text = run(eval_suites=[{"name": "lik", "kind": "likelihood", "data": str(data)}], best_metric="suite/lik/los")
    assert "'suite/lik/los' is not reported" in text and "did you mean 'suite/lik/loss'" in text  # caught at the step-0 baseline
    assert not (tmp_path / "run" / "checkpoints").exists()
