"""Chunked LM head + cross-entropy equals the plain one: value and gradients within 1e-5 (fp32)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tunesmith.objectives.sft import chunked_ce_sum, supervised_ce_sum


def _case(seed: int = 0, n: int = 37, hidden: int = 24, vocab: int = 101, bias: bool = False):
    torch.manual_seed(seed)
    head = torch.nn.Linear(hidden, vocab, bias=bias)
    h = torch.randn(n, hidden, requires_grad=True)
    y = torch.randint(0, vocab, (n,))
    return head, h, y


@pytest.mark.parametrize("chunk", [1, 8, 37, 1000])
@pytest.mark.parametrize("bias", [False, True])
def test_chunked_equals_plain_value_and_grads(chunk, bias):
    head, h, y = _case(bias=bias)
    plain = F.cross_entropy(head(h).float(), y, reduction="sum")
    g_h, g_w = torch.autograd.grad(plain * 0.7, (h, head.weight))
    chunked = chunked_ce_sum(h, head, y, chunk)
    c_h, c_w = torch.autograd.grad(chunked * 0.7, (h, head.weight))
    assert torch.allclose(plain, chunked, rtol=1e-6, atol=1e-5)
    assert torch.allclose(g_h, c_h, atol=1e-5)
    assert torch.allclose(g_w, c_w, atol=1e-5)


def test_frozen_head_gets_no_gradient_and_no_grad_mode_works():
    head, h, y = _case(seed=1)
    head.weight.requires_grad_(False)
    loss = chunked_ce_sum(h, head, y, 5)
    (g,) = torch.autograd.grad(loss, (h,))
    assert g.shape == h.shape and head.weight.grad is None
    with torch.no_grad():
        assert torch.allclose(chunked_ce_sum(h, head, y, 5), loss.detach())


def test_bf16_autocast_close_to_plain():
    head, h, y = _case(seed=2, n=64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain = F.cross_entropy(head(h).float(), y, reduction="sum")
        chunked = chunked_ce_sum(h, head, y, 16)
    assert chunked.dtype == torch.float32
    assert torch.allclose(plain, chunked, rtol=2e-3)


def test_supervised_ce_chunked_equals_unchunked_on_tiny_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    torch.manual_seed(0)
    ids = torch.randint(3, 500, (3, 12))
    labels = ids.clone()
    labels[:, :4] = -100
    mask = torch.ones_like(ids)
    results = []
    for chunk in (0, 7):
        model.zero_grad(set_to_none=True)
        loss, count = supervised_ce_sum(model, ids, mask, labels, chunk_size=chunk)
        (loss / count).backward()  # the loop trains on the token mean
        results.append((loss.detach(), count, [p.grad.clone() for p in model.parameters()]))
    (a, na, ga), (b, nb, gb) = results
    assert na == nb == 3 * 8
    assert torch.allclose(a, b, rtol=1e-6, atol=1e-5)
    assert all(torch.allclose(x, z, rtol=1e-5, atol=1e-5) for x, z in zip(ga, gb))
    reference = F.cross_entropy(model(input_ids=ids).logits[:, :-1].reshape(-1, model.config.vocab_size),
                                labels[:, 1:].reshape(-1), reduction="sum")
    assert torch.allclose(a, reference, rtol=1e-5)


def test_workspace_reused_across_calls_and_after_inference_mode():
    from tunesmith.objectives.sft import CEWorkspace

    head, h, y = _case(seed=3, n=20)
    plain = F.cross_entropy(head(h).float(), y, reduction="sum")
    ws = CEWorkspace()
    with torch.inference_mode():  # an evaluation pass leaves inference tensors in the workspace
        first = chunked_ce_sum(h.detach(), head, y, 8, ws)
    buffer = ws.low
    again = chunked_ce_sum(h, head, y, 8, ws)  # training afterwards: fresh buffers, then reused
    (g,) = torch.autograd.grad(again, (h,))
    assert ws.low is not buffer and not ws.low.is_inference()
    reused = ws.low
    assert torch.allclose(chunked_ce_sum(h, head, y, 8, ws), plain, atol=1e-5) and ws.low is reused
    assert torch.allclose(first, plain, atol=1e-5) and torch.allclose(again, plain, atol=1e-5)
    assert torch.allclose(g, torch.autograd.grad(plain, (h,))[0], atol=1e-5)
