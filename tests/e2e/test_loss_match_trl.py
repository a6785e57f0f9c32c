"""tunesmith's loop and TRL's SFTTrainer, fp32, same model init and same batches: the loss curves, grad
norms and final weights agree (bench/loss_match.py on a tiny model). Slow: TRL's trainer start-up."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def loss_match():
    pytest.importorskip("trl", reason="TRL is a bench/test extra (pip install -e '.[bench]')")
    sys.path.insert(0, str(BENCH))
    try:
        import loss_match as module
        from make_stdlib_data import docstring_rows, write
    finally:
        sys.path.remove(str(BENCH))
    return module, docstring_rows, write


@pytest.mark.slow
@pytest.mark.parametrize("method,lr", [("lora", 1e-2), ("full", 1e-3)])
def test_fp32_loss_curve_matches_trl_on_the_same_batches(loss_match, tiny_model_dir, tmp_path, method, lr):
    module, docstring_rows, write = loss_match
    data = tmp_path / "d.jsonl"
    write(data, docstring_rows(0)[:32])
    # batch 4 x accumulation 2: exercises the window normalisation (TRL: num_items_in_batch; tunesmith: window weight)
    r = module.match(str(tiny_model_dir), data, tmp_path, steps=4, batch=4, accum=2, max_length=256, method=method, lr=lr)
    ours, theirs = r["tunesmith"], r["trl"]
    assert len(ours["losses"]) == len(theirs["losses"]) == 4
    assert theirs["num_items_in_batch_used"]
    assert ours["losses"][-1] < ours["losses"][0]  # the curve moves, so matching it means something
    assert r["max_abs_diff"] < 1e-5 and r["max_rel_diff"] < 1e-6, r["per_step_abs_diff"]
    assert r["grad_norm_max_rel_diff"] < 1e-5
    assert r["final_weight_max_abs_diff"] < 2e-4 * (lr / 1e-3)  # Adam: ~1e-2 of one step's size
    assert ours["lrs"] == pytest.approx(theirs["lrs"], rel=1e-9)
