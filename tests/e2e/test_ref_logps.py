"""Precomputed reference log-probs (align.precompute_ref_logps): same DPO losses as a reference forward per
step, cached on disk and reused on rerun, recomputed when an input changes."""

from __future__ import annotations

import pytest

from tests.e2e.test_align import FACTS, rows, write_align_config, write_pairs
from tunesmith.cli.main import main
from tunesmith.training import ref_logps


def _run(tmp_path, model_dir, data, eval_file, precompute: bool, out: str, **align) -> list[dict]:
    config = write_align_config(
        tmp_path, model_dir, data, "dpo", eval_file=eval_file, train={"max_steps": 4, "lr": 2e-2, "eval_every": 2},
        align={"precompute_ref_logps": precompute, "ref_logps_cache": str(tmp_path / "cache"), "beta": 0.5, **align},
        output={"dir": str(tmp_path / out), "tensorboard": False})
    main(["train", str(config), "--quiet", "--fresh"])
    return rows(tmp_path / out, "train") + rows(tmp_path / out, "eval")


def test_precomputed_reference_matches_on_the_fly_and_is_reused(tmp_path, tiny_model_dir, monkeypatch):
    data = write_pairs(tmp_path / "pairs.jsonl", FACTS[:16])
    evals = write_pairs(tmp_path / "eval.jsonl", FACTS[16:])
    live = _run(tmp_path, tiny_model_dir, data, evals, False, "live")
    cached = _run(tmp_path, tiny_model_dir, data, evals, True, "cached")
    files = sorted((tmp_path / "cache").glob("ref_logps-*.pt"))
    assert len(files) == 2  # train pairs and eval pairs
    assert len(live) == len(cached) == 6  # 4 train rows + 2 evaluations
    assert live[-1]["rewards/margins"] > 0.05  # the policy moved away from the reference: a real comparison
    for a, b in zip(live, cached):
        for key in ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"):
            assert b[key] == pytest.approx(a[key], abs=1e-6), (a["step"], key)

    def no_recompute(*args, **kwargs):
        raise AssertionError("the cached reference log-probs were computed again")

    monkeypatch.setattr(ref_logps, "compute_ref_logps", no_recompute)
    again = _run(tmp_path, tiny_model_dir, data, evals, True, "again")
    assert [r["loss"] for r in again] == [r["loss"] for r in cached]
    assert sorted((tmp_path / "cache").glob("ref_logps-*.pt")) == files

    monkeypatch.undo()  # a different max_length is a different key: computed anew, old files kept
    config_calls = []
    real = ref_logps.compute_ref_logps
    monkeypatch.setattr(ref_logps, "compute_ref_logps", lambda *a, **k: config_calls.append(1) or real(*a, **k))
    config = write_align_config(tmp_path, tiny_model_dir, data, "dpo", train={"max_steps": 1},
                                data={"max_length": 96}, output={"dir": str(tmp_path / "short"), "tensorboard": False},
                                align={"precompute_ref_logps": True, "ref_logps_cache": str(tmp_path / "cache")})
    main(["train", str(config), "--quiet"])
    assert config_calls == [1] and len(list((tmp_path / "cache").glob("ref_logps-*.pt"))) == 3
    # so is the other batch layout (two rows per pair instead of one shared-prefix row)
    config = write_align_config(tmp_path, tiny_model_dir, data, "dpo", train={"max_steps": 1},
                                output={"dir": str(tmp_path / "two-rows"), "tensorboard": False},
                                align={"precompute_ref_logps": True, "ref_logps_cache": str(tmp_path / "cache"),
                                       "shared_prefix": False})
    main(["train", str(config), "--quiet"])
    assert config_calls == [1, 1] and len(list((tmp_path / "cache").glob("ref_logps-*.pt"))) == 4


def test_precompute_with_an_objective_without_pairs_is_a_clean_error(tmp_path, tiny_model_dir, capsys):
    from tests.e2e.test_align import write_unpaired

    data = write_unpaired(tmp_path / "kto.jsonl", FACTS[:8])
    config = write_align_config(tmp_path, tiny_model_dir, data, "kto", train={"max_steps": 1},
                                align={"precompute_ref_logps": True, "ref_logps_cache": str(tmp_path / "cache")})
    with pytest.raises(SystemExit) as exc:
        main(["train", str(config), "--quiet"])
    assert exc.value.code == 2
    assert "precompute_ref_logps works with pairwise objectives" in capsys.readouterr().err


def test_rejected_to_divergence_scores_only_the_first_wrong_token_live_and_precomputed(tmp_path, tiny_model_dir):
    def write(path, facts):  # answers that share a prefix, so the cut falls inside the rejected answer
        rows = [{"prompt": q, "chosen": f"The answer is {a}", "rejected": "The answer is unknown to me, sorry."} for q, a in facts]
        path.write_text("".join(__import__("json").dumps(r) + "\n" for r in rows))
        return path

    data, evals = write(tmp_path / "pairs.jsonl", FACTS[:16]), write(tmp_path / "eval.jsonl", FACTS[16:])
    full = _run(tmp_path, tiny_model_dir, data, evals, True, "full")
    cut = _run(tmp_path, tiny_model_dir, data, evals, True, "cut", rejected_tokens="to_divergence")
    live = _run(tmp_path, tiny_model_dir, data, evals, False, "live", rejected_tokens="to_divergence")
    assert len(list((tmp_path / "cache").glob("ref_logps-*.pt"))) == 4  # the cut pairs are keyed apart
    assert cut[0]["logps/chosen"] == pytest.approx(full[0]["logps/chosen"], abs=1e-5)
    # "The answer is" (shared) + " unknown" (first difference) instead of the whole refusal: far fewer nats
    assert cut[0]["logps/rejected"] > full[0]["logps/rejected"] + 10
    for a, b in zip(live, cut):
        for key in ("loss", "rewards/margins", "logps/rejected"):
            assert b[key] == pytest.approx(a[key], abs=1e-5), (a["step"], key)
