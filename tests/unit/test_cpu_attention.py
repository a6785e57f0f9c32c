"""The bf16 CPU attention (models/cpu_attention.py): SDPA's forward unchanged, a matmul backward whose gradients
are as close to an fp32 reference as PyTorch's flash backward is (same order), for every mask shape transformers
hands it; outside its case (fp32, no gradients) and outside a run, transformers' own SDPA runs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tunesmith.models.cpu_attention import _FlashForwardMatmulBackward, attention_backward


def _masks(b: int, lq: int) -> dict[str, torch.Tensor | None]:
    causal = torch.ones(lq, lq, dtype=torch.bool).tril()
    right = causal.expand(b, 1, lq, lq).clone()
    right[0, :, :, lq // 2:] = False  # row 0 right-padded: keys past half are padding
    left = causal.expand(b, 1, lq, lq).clone()
    left[1, :, :, :3] = False  # row 1 left-padded: its first 3 queries see nothing
    packed = torch.zeros(b, 1, lq, lq, dtype=torch.bool)
    cut = lq // 3  # two documents per row, no attention across them
    packed[:, :, :cut, :cut], packed[:, :, cut:, cut:] = causal[:cut, :cut], causal[cut:, cut:]
    return {"causal": None, "right": right, "left": left, "packed": packed}


def _rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    return ((a.float() - ref).norm() / ref.norm()).item()


@pytest.mark.parametrize("kind", ["causal", "right", "left", "packed"])
@pytest.mark.parametrize("lq", [37, 96])
def test_gradients_match_fp32_like_flash(kind, lq):
    b, h, d = 3, 4, 32
    torch.manual_seed(lq)
    q, k, v = (torch.randn(b, h, lq, d, dtype=torch.bfloat16) for _ in range(3))
    go = torch.randn(b, h, lq, d, dtype=torch.bfloat16)
    mask = _masks(b, lq)[kind]
    additive = None if mask is None else torch.zeros(mask.shape, dtype=torch.bfloat16).masked_fill_(~mask, float("-inf"))

    def grads(dtype, ours=False):
        leaves = [t.to(dtype, copy=True).requires_grad_() for t in (q, k, v)]
        if ours:
            out = _FlashForwardMatmulBackward.apply(*leaves, additive, d ** -0.5, mask is None, 1)
        else:
            out = F.scaled_dot_product_attention(*leaves, attn_mask=mask, is_causal=mask is None)
        out.backward(go.to(dtype))
        return out.detach(), [t.grad for t in leaves]

    out_ref, ref = grads(torch.float32)
    out_flash, flash = grads(torch.bfloat16)
    out_ours, ours = grads(torch.bfloat16, ours=True)
    valid = torch.ones(b, 1, lq, 1, dtype=torch.bool) if mask is None else mask.any(-1, keepdim=True)
    assert torch.equal(out_ours * valid, out_flash * valid)  # the forward is SDPA's own kernel
    for name, mine, theirs, exact in zip("qkv", ours, flash, ref):
        assert torch.isfinite(mine).all(), name
        assert _rel(mine, exact) < min(3 * _rel(theirs, exact), 0.01), (name, _rel(mine, exact), _rel(theirs, exact))
    if kind == "left":  # queries that see no key get no gradient, and pass none to the keys
        assert ours[0][1, :, :3].abs().max() == 0


def _bf16_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16, attn_implementation="sdpa")


def _batch():
    torch.manual_seed(0)
    ids = torch.randint(3, 500, (3, 29))
    mask = torch.ones_like(ids)
    mask[0, 20:], mask[2, 11:] = 0, 0  # right padding, as the SFT collator makes it
    return ids, mask, ids.masked_fill(mask == 0, -100)


def _nodes(fn) -> set[str]:
    seen, todo = set(), [fn]
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        todo.extend(n for n, _ in node.next_functions)
    return {type(n).__name__ for n in seen}


def test_model_loss_same_and_gradients_close_inside_a_run(tiny_model_dir):
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    model = _bf16_model(tiny_model_dir)
    ids, mask, labels = _batch()
    stock = ALL_ATTENTION_FUNCTIONS["sdpa"]

    def run():
        model.zero_grad(set_to_none=True)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        graph = _nodes(loss.grad_fn)
        loss.backward()
        return loss.detach(), {n: p.grad.float() for n, p in model.named_parameters()}, graph

    loss_sdpa, grads_sdpa, graph_sdpa = run()
    with attention_backward("matmul"):
        assert ALL_ATTENTION_FUNCTIONS["sdpa"] is not stock
        loss_ours, grads_ours, graph_ours = run()
    assert ALL_ATTENTION_FUNCTIONS["sdpa"] is stock  # restored after the run
    assert "_FlashForwardMatmulBackwardBackward" in graph_ours and "_FlashForwardMatmulBackwardBackward" not in graph_sdpa
    assert torch.equal(loss_ours, loss_sdpa)
    for name in ("model.layers.0.self_attn.q_proj.weight", "model.layers.1.self_attn.k_proj.weight", "model.embed_tokens.weight"):
        assert _rel(grads_ours[name], grads_sdpa[name]) < 0.03, name


def test_other_cases_fall_back_to_sdpa(tiny_model_dir):
    model = _bf16_model(tiny_model_dir)
    ids, mask, labels = _batch()
    with attention_backward("matmul"):
        with torch.no_grad():  # evaluation and generation
            assert torch.equal(model(input_ids=ids, attention_mask=mask).logits, _bf16_model(tiny_model_dir)(input_ids=ids, attention_mask=mask).logits)
        fp32 = _bf16_model(tiny_model_dir).float()
        loss = fp32(input_ids=ids, attention_mask=mask, labels=labels).loss
        assert "_FlashForwardMatmulBackwardBackward" not in _nodes(loss.grad_fn)
    with attention_backward("sdpa"):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        assert "_FlashForwardMatmulBackwardBackward" not in _nodes(loss.grad_fn)


@pytest.mark.parametrize("kv_heads", [6, 2])
def test_backward_in_row_chunks_equals_one_piece(monkeypatch, kv_heads):
    import tunesmith.models.cpu_attention as cpu_attention

    torch.manual_seed(0)
    q = torch.randn(5, 6, 40, 16, dtype=torch.bfloat16)
    k, v = (torch.randn(5, kv_heads, 40, 16, dtype=torch.bfloat16) for _ in range(2))
    go = torch.randn(5, 6, 40, 16, dtype=torch.bfloat16)
    mask = _masks(5, 40)["right"]
    additive = torch.zeros(mask.shape, dtype=torch.bfloat16).masked_fill_(~mask, float("-inf"))

    def grads(chunk_bytes):
        monkeypatch.setattr(cpu_attention, "_CHUNK_BYTES", chunk_bytes)
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        _FlashForwardMatmulBackward.apply(*leaves, additive, 0.25, False, 6 // kv_heads).backward(go)
        return [t.grad for t in leaves]

    for whole, chunked in zip(grads(1 << 40), grads(2 * 6 * 40 * 40 * 2)):  # 2 rows per chunk: 2 + 2 + 1
        assert torch.equal(whole, chunked)


@pytest.mark.parametrize("kind", ["causal", "right"])
def test_grouped_query_heads_keep_their_own_count_and_match_repeated_heads(kind):
    """K and V with fewer heads than Q (GQA): the same output and gradients as repeating them before attention
    (transformers' repeat_kv), while backward keeps only the un-repeated K and V."""
    b, lq, d, groups = 2, 33, 16, 3
    torch.manual_seed(1)
    q = torch.randn(b, 2 * groups, lq, d, dtype=torch.bfloat16)
    k, v = (torch.randn(b, 2, lq, d, dtype=torch.bfloat16) for _ in range(2))
    go = torch.randn(b, 2 * groups, lq, d, dtype=torch.bfloat16)
    mask = _masks(b, lq)[kind]
    additive = None if mask is None else torch.zeros(mask.shape, dtype=torch.bfloat16).masked_fill_(~mask, float("-inf"))

    def run(grouped: bool):
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        kk, vv = leaves[1:] if grouped else (t.repeat_interleave(groups, dim=1) for t in leaves[1:])
        saved: list[tuple] = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(tuple(t.shape)) or t, lambda t: t):
            out = _FlashForwardMatmulBackward.apply(leaves[0], kk, vv, additive, d ** -0.5, mask is None, groups if grouped else 1)
        out.backward(go)
        return out.detach(), [t.grad for t in leaves], saved

    out_grouped, grads_grouped, saved = run(True)
    out_repeated, grads_repeated, _ = run(False)
    assert torch.equal(out_grouped, out_repeated)
    for mine, theirs in zip(grads_grouped, grads_repeated):  # the group sum is rounded once per chunk, as autograd's
        assert _rel(mine, theirs.float()) < 0.005
    assert (b, 2, lq, d) in saved and (b, 2 * groups, lq, d) in saved  # K, V at 2 heads; Q and the output at 6
    assert sum(shape == (b, 2, lq, d) for shape in saved) == 2
