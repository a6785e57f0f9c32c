"""`tunesmith estimate`: parameter counts against real models, memory terms by method, the CLI."""

from __future__ import annotations

import json

import pytest
import torch

from tunesmith.cli.main import main
from tunesmith.errors import TunesmithError
from tunesmith.estimate import DEVICES, GIB, NF4_BYTES, Shape, estimate, flops_per_token, memory_terms

SMOLLM2 = {"vocab_size": 49152, "hidden_size": 576, "num_hidden_layers": 30, "intermediate_size": 1536,
           "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64, "tie_word_embeddings": True,
           "model_type": "llama", "hidden_act": "silu"}


def test_param_counts_match_a_real_model(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    shape = Shape.from_config(json.loads((tiny_model_dir / "config.json").read_text()))
    assert shape.params() == sum(p.numel() for p in model.parameters())
    lora = get_peft_model(model, LoraConfig(r=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    assert shape.lora_params(8) == sum(p.numel() for p in lora.parameters() if p.requires_grad)


def test_smollm2_counts_and_method_ordering():
    shape = Shape.from_config(SMOLLM2)
    assert shape.params() == 134_515_008  # SmolLM2-135M, tied embeddings
    assert shape.lora_params(16) == 4_884_480  # what peft reports for r=16 all-linear
    full, _ = memory_terms(shape, "full", 8, 512, 16, 0, 1024, 0, base_dtype="fp32")
    lora, trainable = memory_terms(shape, "lora", 8, 512, 16, 0, 1024, 0, base_dtype="bf16")
    qlora, _ = memory_terms(shape, "qlora", 8, 512, 16, 0, 1024, 0, base_dtype="bf16")
    assert full["weights"] == 4 * shape.params() and full["optimizer"] == 8 * shape.params()
    assert lora["optimizer"] == 8 * trainable and lora["gradients"] == 0  # not alive at the peak (see below)
    assert qlora["weights"] < lora["weights"] < full["weights"]
    lora32, _ = memory_terms(shape, "lora", 8, 512, 16, 0, 1024, 0, base_dtype="fp32")
    qlora32, _ = memory_terms(shape, "qlora", 8, 512, 16, 0, 1024, 0, base_dtype="fp32")
    assert qlora32["weights"] < full["weights"] < lora32["weights"]  # an fp32 base + fp32 adapters outweigh full
    ckpt, _ = memory_terms(shape, "lora", 8, 512, 16, 1, 1024, 0, base_dtype="bf16")
    half, _ = memory_terms(shape, "lora", 8, 512, 16, 2, 1024, 0, base_dtype="bf16")
    assert ckpt["activations"] < lora["activations"] / 5
    assert ckpt["activations"] < half["activations"] < 0.6 * lora["activations"]
    plain, _ = memory_terms(shape, "lora", 8, 512, 16, 0, 0, 0, base_dtype="bf16")
    assert plain["logits"] > 3 * lora["logits"]


def test_flops_and_throughput_scale_with_method_and_device():
    shape = Shape.from_config(SMOLLM2)
    assert flops_per_token(shape, "full", 1) / flops_per_token(shape, "lora", 1) == pytest.approx(1.5, rel=0.01)  # 6N vs 4N
    assert flops_per_token(shape, "lora", 2048) > flops_per_token(shape, "lora", 512)  # attention grows with length
    cpu = estimate(SMOLLM2, "lora", 8, 512, "cpu", peak_flops=2e12)
    h100 = estimate(SMOLLM2, "lora", 8, 512, "h100")
    assert h100.tokens_per_s > 100 * cpu.tokens_per_s
    assert cpu.total_gib == pytest.approx(sum(cpu.memory_gib.values()), abs=0.01)
    with pytest.raises(TunesmithError, match="--method"):
        estimate(SMOLLM2, "prefix", 8, 512)
    with pytest.raises(TunesmithError, match="--device"):
        estimate(SMOLLM2, "lora", 8, 512, "tpu")


def _one_block_saved_bytes(bundled_path, method: str, base_dtype: str, lean: bool) -> tuple[int, Shape, int]:
    """Bytes saved for backward by the second block of a 2-block SmolLM2-shaped model, as tunesmith runs it
    (the first block's input has no gradient, as after a frozen embedding), and the token count."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    from tunesmith.models.cpu_attention import attention_backward
    from tunesmith.models.fused_lora import fuse_lora_layers
    from tunesmith.models.lean_blocks import lean_block_ops
    from tunesmith.objectives.sft import adapter_inputs_as_is
    from tunesmith.training.loop import autocast_context

    config = AutoConfig.from_pretrained(bundled_path)
    config.num_hidden_layers, config.vocab_size = 2, 512  # the vocabulary does not touch block activations
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16 if base_dtype == "bf16" else torch.float32,
                                             attn_implementation="sdpa")
    if method == "full":
        from tunesmith.config.schema import MethodConfig
        from tunesmith.models.adapters import apply_method

        # fp32 master weights; a bf16-loaded model runs them under autocast only with method.mixed_precision
        model = apply_method(model, MethodConfig(kind="full", mixed_precision=base_dtype == "bf16"))
    else:
        model = get_peft_model(model, LoraConfig(r=16, target_modules="all-linear", task_type="CAUSAL_LM"))
        for p in model.parameters():
            if p.requires_grad:
                p.data = p.data.float()
        fuse_lora_layers(model)  # method.lora.fused, the default
    if lean:
        lean_block_ops(model)
    weight_shapes = {tuple(p.shape) for p in model.parameters()} | {tuple(p.shape)[::-1] for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t):  # autocast's bf16 weight copies are weights, not activations
        if tuple(t.shape) not in weight_shapes:
            saved.setdefault(t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        return t

    hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
    block = (model.base_model.model if method != "full" else model).model.layers[1]
    block.register_forward_pre_hook(lambda *_: hooks.__enter__())
    block.register_forward_hook(lambda *_: hooks.__exit__(None, None, None))
    ids = torch.randint(3, 500, (3, 128))
    with autocast_context(model), adapter_inputs_as_is(model), attention_backward():  # as the SFT objective runs it
        (model.base_model.model if method != "full" else model).model(input_ids=ids)
    return sum(saved.values()), Shape.from_config(config.to_dict()), ids.numel()


@pytest.mark.parametrize("lean", [True, False])
@pytest.mark.parametrize("method,base_dtype", [("lora", "bf16"), ("lora", "fp32"), ("full", "fp32"), ("full", "bf16")])
def test_activation_estimate_tracks_measured_saved_tensors(bundled_path, method, base_dtype, lean):
    """Saved-tensor bytes of one block vs the per-token formula: norms' inputs (fp32 copies unless lean) and saved
    outputs, rotary q/k, v, attention output and log-sum-exp, three or four intermediate-wide MLP tensors, LoRA's
    rank-r tensors."""
    from tunesmith.estimate import activation_bytes_per_token_layer

    measured, shape, tokens = _one_block_saved_bytes(bundled_path, method, base_dtype, lean)
    assert shape.lean_blocks  # SmolLM2 is a Llama
    predicted = activation_bytes_per_token_layer(shape, method, r=16, base_dtype=base_dtype, lean_activations=lean,
                                                 mixed_precision=method == "full" and base_dtype == "bf16") * tokens
    assert 0.97 < predicted / measured < 1.03, (predicted, measured)


def _peak_live_bytes(fn) -> int:
    """Peak CPU tensor bytes allocated by `fn` above what was live before (torch.profiler's allocation events)."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()

    def walk(nodes):
        for n in nodes:
            yield n
            yield from walk(n.children)

    events = sorted((n for n in walk(prof.profiler.kineto_results.experimental_event_tree())
                     if n.typed[0] == _EventType.Allocation), key=lambda n: n.start_time_ns)
    start = events[0].typed[1].total_allocated - events[0].typed[1].alloc_size
    return max(n.typed[1].total_allocated for n in events) - start


@pytest.mark.parametrize("positions,chunk", [(600, 200), (150, 200), (300, 0)])
def test_logits_term_tracks_the_lm_head_peak(positions, chunk):
    """6 B per chunk position x vocab under bf16, one chunk or several (the two reused CEWorkspace buffers; 12 B
    for the unchunked path, whose backward holds log-probs, their gradient and its input gradient)."""
    import torch.nn.functional as F

    from tunesmith.estimate import logits_bytes
    from tunesmith.objectives.sft import chunked_ce_sum

    vocab, hidden_size = 8000, 64
    torch.manual_seed(0)
    head = torch.nn.Linear(hidden_size, vocab, bias=False).to(torch.bfloat16).requires_grad_(False)
    hidden = torch.randn(positions, hidden_size, dtype=torch.bfloat16, requires_grad=True)
    targets = torch.randint(0, vocab, (positions,))

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = (chunked_ce_sum(hidden, head, targets, chunk) if chunk else
                    F.cross_entropy(head(hidden).float(), targets, reduction="sum"))  # as supervised_ce_sum with 0
        loss.backward()

    rows = min(positions, chunk or positions)
    # oneDNN's matmul scratchpad (AMX CPUs: ~1 MB for the input-gradient product), not logits
    grad_logits = torch.zeros(rows, vocab, dtype=torch.bfloat16)
    scratch = _peak_live_bytes(lambda: grad_logits @ head.weight) - rows * hidden_size * 2
    measured = _peak_live_bytes(step) - scratch
    shape = Shape(vocab, hidden_size, 1, 128, 64, 64, True, 1)
    predicted = logits_bytes(shape, positions, chunk)
    assert 0.95 < predicted / measured < 1.05, (predicted, measured)


def test_peak_terms_gradients_allocator_and_dtype():
    shape = Shape.from_config(SMOLLM2)
    lora, trainable = memory_terms(shape, "lora", 8, 512, 16, 0, 1024, 0, base_dtype="bf16")
    assert lora["gradients"] == 0  # LoRA gradients appear in backward, after far larger activations are freed
    accum, _ = memory_terms(shape, "lora", 8, 512, 16, 0, 1024, 0, grad_accum=4)
    assert accum["gradients"] == 4 * trainable  # earlier micro-batches' gradients stay during the next forward
    full, n = memory_terms(shape, "full", 8, 512, 16, 0, 1024, 0, base_dtype="fp32")
    assert full["gradients"] == 4 * SMOLLM2["vocab_size"] * SMOLLM2["hidden_size"]  # the LM head's, from forward
    assert full["activations"] > 1.9 * lora["activations"]  # fp32 with no autocast, trainable norm weights
    assert memory_terms(shape, "full", 8, 512, 16, 0, 1024, 0, base_dtype="bf16") == (full, n)  # fp32 compute
    mixed, _ = memory_terms(shape, "full", 8, 512, 16, 0, 1024, 0, base_dtype="bf16", mixed_precision=True)
    assert lora["activations"] < mixed["activations"] < 0.75 * full["activations"]
    plain, _ = memory_terms(shape, "lora", 8, 512, 16, 0, 1024, 0, base_dtype="bf16", lean_activations=False)
    assert lora["activations"] < 0.65 * plain["activations"]  # lean: 14.1 vs 22.5 KB per token and block
    assert mixed["weights"] > full["weights"] == 4 * shape.params()  # + the bf16 copies autocast makes
    fp32, _ = memory_terms(shape, "lora", 8, 512, 16, 0, 1024, 0, base_dtype="fp32")
    assert fp32["weights"] == 4 * shape.params() + 4 * trainable and fp32["activations"] > 1.7 * lora["activations"]
    assert lora["allocator"] == 0
    heap, _ = memory_terms(shape, "lora", 8, 512, 16, 0, 1024, 0, base_dtype="bf16", allocator=True)
    assert heap["allocator"] == 8 * 512 * 30 * 4 * (576 + 1536)
    cpu = estimate(SMOLLM2, "lora", 8, 512, "cpu", peak_flops=1.0)
    assert cpu.memory_gib["allocator"] > 0 and estimate(SMOLLM2, "lora", 8, 512, "h100").memory_gib["allocator"] == 0
    assert estimate(SMOLLM2, "lora", 8, 512, "cpu", peak_flops=1.0, low_memory_malloc=True,
                    mmap_threshold_kib=128).memory_gib["allocator"] == 0
    with pytest.raises(TunesmithError, match="--base-dtype"):
        estimate(SMOLLM2, "lora", 8, 512, base_dtype="fp16")


# SmolLM2-135M by hand: per block q 576x576, k and v 576x192, o 576x576, gate/up/down 576x1536 (30 blocks).
SMOLLM2_LINEAR = 30 * (576 * 576 + 2 * 576 * 192 + 576 * 576 + 3 * 576 * 1536)  # 106,168,320 NF4 weights
SMOLLM2_LARGEST_LINEAR = 576 * 1536  # gate/up/down: the one weight bitsandbytes holds dequantised at a time


@pytest.mark.parametrize("base_dtype,element", [("bf16", 2), ("fp32", 4)])
def test_qlora_weights_are_nf4_linears_plus_the_rest_in_the_compute_dtype(base_dtype, element):
    """method.kind qlora (bitsandbytes NF4 + double quant, compute dtype = model.dtype): block linears 4-bit,
    embeddings and norms in the compute dtype, fp32 adapters, one transient dequantised largest linear."""
    shape = Shape.from_config(SMOLLM2)
    assert shape.layers * shape.block_linear_params() == SMOLLM2_LINEAR
    qlora, trainable = memory_terms(shape, "qlora", 8, 512, 16, 0, 1024, 0, base_dtype=base_dtype)
    lora, _ = memory_terms(shape, "lora", 8, 512, 16, 0, 1024, 0, base_dtype=base_dtype)
    expected = (4.127 / 8 * SMOLLM2_LINEAR + element * (134_515_008 - SMOLLM2_LINEAR) + 4 * 4_884_480
                + element * SMOLLM2_LARGEST_LINEAR)
    assert NF4_BYTES == 4.127 / 8 and trainable == 4_884_480
    assert qlora["weights"] == pytest.approx(expected)
    # same compute dtype, same saved tensors, but the 4-bit down projection runs its own forward (lean MLP): its input stays
    assert qlora["activations"] == lora["activations"] + 8 * 512 * 30 * element * 1536
    result = estimate(SMOLLM2, "qlora", 8, 512, "cpu", peak_flops=1.0, base_dtype=base_dtype)
    assert result.compute_dtype == base_dtype and any("dequantises" in note for note in result.notes)
    assert result.flops_per_token == estimate(SMOLLM2, "lora", 8, 512, "cpu", peak_flops=1.0, base_dtype=base_dtype).flops_per_token


@pytest.mark.parametrize("native", [True, False])
def test_auto_base_dtype_follows_native_bf16(monkeypatch, native):
    """'auto' (the default) = bf16 where the CPU runs it natively (AMX / AVX512-BF16), else fp32; GPUs: bf16."""
    import tunesmith.models.load as load

    monkeypatch.setattr(load, "fast_bf16", lambda device="cpu": native)
    resolved = "bf16" if native else "fp32"
    auto = estimate(SMOLLM2, "lora", 8, 512, "cpu", peak_flops=1.0)
    assert auto.base_dtype == auto.compute_dtype == resolved
    assert auto.memory_gib == estimate(SMOLLM2, "lora", 8, 512, "cpu", peak_flops=1.0, base_dtype=resolved).memory_gib
    shape = Shape.from_config(SMOLLM2)
    assert memory_terms(shape, "lora", 8, 512, 16, 0, 1024, 0) == memory_terms(shape, "lora", 8, 512, 16, 0, 1024, 0,
                                                                               base_dtype=resolved)
    assert estimate(SMOLLM2, "lora", 8, 512, "h100").base_dtype == "bf16"  # every table GPU runs bf16 natively


@pytest.mark.parametrize("method,base_dtype,rate_dtype", [("lora", "bf16", "bf16"), ("lora", "fp32", "fp32"),
                                                          ("qlora", "bf16", "bf16"), ("full", "bf16", "fp32"),
                                                          ("full", "fp32", "fp32")])
def test_throughput_uses_the_matmul_rate_of_the_compute_dtype(monkeypatch, method, base_dtype, rate_dtype):
    """full trains fp32 without autocast whatever the base (unless method.mixed_precision: test_cli_...); adapters
    compute in the base dtype. The CPU rate is
    measured in that dtype; GPUs use the table's bf16 or plain-fp32 peak."""
    import tunesmith.estimate as est

    asked = []
    monkeypatch.setattr(est, "measure_cpu_matmul_flops", lambda dtype="fp32", *a, **k: asked.append(dtype) or 3e11)
    cpu = estimate(SMOLLM2, method, 8, 512, "cpu", base_dtype=base_dtype)
    assert asked == [rate_dtype] and cpu.compute_dtype == rate_dtype
    assert cpu.tokens_per_s == pytest.approx(3e11 * DEVICES["cpu"]["efficiency"] / cpu.flops_per_token)
    h100 = estimate(SMOLLM2, method, 8, 512, "h100", base_dtype=base_dtype)
    peak = DEVICES["h100"]["peak_flops" if rate_dtype == "bf16" else "peak_flops_fp32"]
    assert h100.peak_tflops == peak / 1e12 and asked == [rate_dtype]  # no CPU measurement for a GPU estimate
    assert h100.tokens_per_s == pytest.approx(peak * DEVICES["h100"]["efficiency"] / h100.flops_per_token)


def test_cpu_linear_rate_is_measured_in_the_asked_dtype():
    from tunesmith.estimate import measure_cpu_matmul_flops

    assert measure_cpu_matmul_flops("fp32", size=64, seconds=0.02) > 0
    assert measure_cpu_matmul_flops("bf16", size=64, seconds=0.02) > 0


# Peak RSS (GiB) of tunesmith on the bench job (bench/sft_vs_trl.py: SmolLM2-135M, batch 8 x 512, 1-6 steps,
# longest batch first): (method, checkpoint_every, ce_chunk_size, mmap threshold KiB with train.low_memory_malloc
# or 0 without, base_dtype). bf16 rows: 2026-11-23 on a 2-core avx512_bf16 EPYC; fp32 rows: 2026-12-01 on a
# 2-core AVX2-only EPYC (model.dtype auto = fp32 there; MB from bench/results/2026-12-01-amd-epyc-2c-avx2*.json;
# the 2 and 8 MiB rows set MALLOC_MMAP_THRESHOLD_ in the environment, the 4 MiB row is train.low_memory_malloc
# itself, with torch's huge pages). All before train.lean_activations (transformers' own RMSNorm and MLP forward).
MEASURED_PEAK_GIB = {("lora", 0, 1024, 0, "bf16"): 5.31, ("lora", 1, 1024, 0, "bf16"): 2.17,
                     ("full", 0, 1024, 0, "bf16"): 7.81, ("full", 1, 1024, 0, "bf16"): 4.63,
                     ("lora", 0, 0, 0, "bf16"): 6.84, ("lora", 0, 1024, 128, "bf16"): 3.88,
                     ("lora", 0, 1024, 0, "fp32"): 10599.9 / 1024, ("lora", 0, 1024, 128, "fp32"): 6379.3 / 1024,
                     ("lora", 0, 1024, 8192, "fp32"): 7035 / 1024, ("lora", 1, 1024, 0, "fp32"): 5424 / 1024,
                     ("lora", 1, 1024, 128, "fp32"): 1918 / 1024, ("lora", 1, 1024, 8192, "fp32"): 3837 / 1024,
                     ("lora", 2, 1024, 0, "fp32"): 7901 / 1024, ("lora", 2, 1024, 8192, "fp32"): 5707 / 1024,
                     ("lora", 2, 1024, 4096, "fp32"): 4460 / 1024, ("lora", 2, 1024, 2048, "fp32"): 4155 / 1024,
                     ("qlora", 0, 1024, 0, "fp32"): 10975.7 / 1024}


@pytest.mark.parametrize("case", list(MEASURED_PEAK_GIB))
def test_estimate_within_25_percent_of_measured_runs(case):
    method, every, chunk, threshold_kib, base_dtype = case
    result = estimate(SMOLLM2, method, 8, 512, "cpu", checkpoint_every=every, ce_chunk_size=chunk, peak_flops=1.0,
                      low_memory_malloc=bool(threshold_kib), mmap_threshold_kib=threshold_kib or 4096, base_dtype=base_dtype,
                      lean_activations=False)
    assert abs(result.total_gib / MEASURED_PEAK_GIB[case] - 1) < 0.25, result.memory_gib


def test_heap_retention_share_falls_with_the_mmap_threshold():
    from tunesmith.estimate import heap_retention_share

    shares = [heap_retention_share(t) for t in (128, 2048, 4096, 8192, 32768)]
    assert shares[0] == shares[1] == 0.0 and shares[-1] == 1.0 == heap_retention_share(None)
    assert shares == sorted(shares) and 0.2 < shares[2] < shares[3] < 0.5


def test_fp32_base_adapters_retain_more_heap():
    """lora/qlora on an fp32 base (no autocast) keep ~4x the glibc heap of a bf16 base or of full fine-tuning
    (RSS with minus without train.low_memory_malloc, AVX2 EPYC: 4.12 GiB over 4096 tokens x 30 blocks)."""
    from tunesmith.estimate import FP32_ADAPTER_HEAP_FACTOR, allocator_bytes_per_token_layer

    shape = Shape.from_config(SMOLLM2)
    plain = 4 * (576 + 1536)
    assert allocator_bytes_per_token_layer(shape, "lora", "bf16") == allocator_bytes_per_token_layer(shape, "full", "fp32") == plain
    assert allocator_bytes_per_token_layer(shape, "lora", "fp32") == FP32_ADAPTER_HEAP_FACTOR * plain
    measured = (10599.9 - 6379.3) * 2**20 / (8 * 512 * 30)  # bytes per token and block
    assert 0.75 < allocator_bytes_per_token_layer(shape, "lora", "fp32") / measured < 1.25


@pytest.mark.slow
def test_estimate_matches_a_real_lora_step(tmp_path):
    """One LoRA step of the bench job (longest batch, 8 x 512) in a fresh process vs the estimate (slow: ~1 min)."""
    import subprocess
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parents[2] / "bench"
    script = f"""
import argparse, json, sys
sys.path.insert(0, {str(bench)!r})
import sft_vs_trl as bench
from pathlib import Path
from tunesmith.models.load import BUNDLED_ALIAS, resolve_model_path
work = Path({str(tmp_path)!r})
bench.prepare_data(work / "data")
args = argparse.Namespace(job="lora", steps=1, warmup=0, model=str(resolve_model_path(BUNDLED_ALIAS)), data_dir=work / "data", work=work)
out = bench.worker_tunesmith(args, {{}})
print(json.dumps({{"peak_mb": bench._peak_rss_mb(), "tokens": out["max_step_tokens"]}}))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    run = json.loads(proc.stdout.strip().splitlines()[-1])
    assert run["tokens"] == 8 * 512  # the longest batch comes first
    result = estimate(SMOLLM2, "lora", 8, 512, "cpu", peak_flops=1.0)  # model.dtype auto on both sides
    assert abs(result.total_gib / (run["peak_mb"] / 1024) - 1) < 0.25, (result.memory_gib, run)


def test_cli_prints_breakdown_and_json(capsys):
    main(["estimate", "--method", "full", "--device", "h100", "--batch", "4", "--seq-len", "256", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert data["method"] == "full" and data["tokens_per_step"] == 1024
    assert set(data["memory_gib"]) == {"weights", "gradients", "optimizer", "activations", "logits", "allocator", "runtime"}
    assert data["memory_gib"]["allocator"] == 0  # glibc heap retention is a CPU term
    assert data["memory_gib"]["weights"] == pytest.approx(4 * 134_515_008 / GIB, abs=0.01)
    main(["estimate", "--method", "lora", "--device", "h100", "--base-dtype", "fp32", "--grad-accum", "2", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert data["memory_gib"]["weights"] == pytest.approx((4 * 134_515_008 + 4 * 4_884_480) / GIB, abs=0.01)
    assert data["memory_gib"]["gradients"] == pytest.approx(4 * 4_884_480 / GIB, abs=0.01)
    assert (data["base_dtype"], data["compute_dtype"]) == ("fp32", "fp32")
    main(["estimate", "--method", "full", "--device", "h100", "--json"])  # --base-dtype auto: bf16 on a GPU
    data = json.loads(capsys.readouterr().out)
    assert (data["base_dtype"], data["compute_dtype"]) == ("bf16", "fp32")  # full trains fp32 without autocast
    assert data["peak_tflops"] == pytest.approx(DEVICES["h100"]["peak_flops_fp32"] / 1e12)
    main(["estimate", "--method", "full", "--device", "h100", "--mixed-precision", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert (data["base_dtype"], data["compute_dtype"]) == ("bf16", "bf16")  # fp32 master weights, bf16 autocast
    assert data["peak_tflops"] == pytest.approx(DEVICES["h100"]["peak_flops"] / 1e12)
    assert data["memory_gib"]["weights"] == pytest.approx(6 * 134_515_008 / GIB, abs=0.01)  # + autocast's bf16 copies
    main(["estimate", "--method", "qlora", "--device", "h100"])
    out = " ".join(capsys.readouterr().out.split())
    assert "bf16 matmul (table peak)" in out and "dequantises" in out


def test_cli_bad_method_is_a_clean_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["estimate", "--method", "everything", "--device", "h100"])
    assert exit_.value.code == 2
    assert "unknown method" in capsys.readouterr().err
