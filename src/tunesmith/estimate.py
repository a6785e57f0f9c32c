"""Memory and throughput estimate for a model x method x batch x sequence length, before launch.

Reads only the model's config.json (no weights). The memory figure is the steady-state peak of a training step
(optimizer state allocated, longest batch), as process RSS on CPU. Terms, in bytes (h hidden, i intermediate,
q/kv attention widths, V vocab, T tokens = batch x seq_len, L blocks, e activation element size):
- dtypes: `base_dtype` is model.dtype: bf16, fp32 or auto (bf16 where it is native: a CUDA GPU, or a CPU with AMX
  or AVX512-BF16; fp32 elsewhere, e.g. an AVX2-only CPU, where torch emulates bf16 ~100x slower than fp32).
  lora/qlora compute in the base dtype (bf16 autocast on a bf16 base); full trains every weight in fp32 and
  computes in fp32, unless `mixed_precision` (`method.mixed_precision`) runs its fp32 master weights under bf16
  autocast on a bf16 base. The compute dtype sets the activation element size and the matmul rate.
- weights: full = 4 B/param fp32 master weights, plus with mixed precision the bf16 copies of the matmul weights
  (blocks' linears and the LM head) that autocast casts once per step and backward keeps; lora = base in
  the base dtype (2 B bf16, 4 B fp32) + adapters fp32; qlora (bitsandbytes, as `method.kind: qlora`) = block
  linear weights in NF4 with double quantisation (~4.13 bits, Dettmers et al. 2023), the rest (embeddings / LM
  head, norms) in the compute dtype, adapters fp32, plus one transient dequantised copy of the largest linear
  weight in the compute dtype (bitsandbytes dequantises each 4-bit weight before every matmul on CPU).
- gradients: those alive at the peak. The peak is at the end of the forward pass (LM head chunk, below), when the
  only gradient in memory is the LM head's, which the chunked CE computes during forward (full: 4Vh fp32). Block
  gradients (4 B per trainable parameter) appear in backward as the activations they replace are freed, so they
  count only beyond those, or all of them when `grad_accum` > 1 (earlier micro-batches' gradients stay).
- optimizer: AdamW's two fp32 moments, 8 B per trainable parameter.
- activations: tensors saved for backward per token and block, measured with saved-tensor hooks
  (tests/unit/test_estimate.py): both RMSNorms' fp32 inputs (8h), their outputs that the next linears save
  (2eh), rotary q and k, v and the attention output (2e(q+kv)), four intermediate-wide MLP tensors (gate out,
  SiLU out, up out, their product: 4ei), SDPA's fp32 log-sum-exp (4 x heads); full adds the normalised fp32
  inputs that the trainable norm weights multiply (8h), and with mixed precision its fp32 norm outputs are cast
  and saved by each of the five linears that read them (5eh instead of 2eh); LoRA adds its rank-r
  intermediates (e r per adapter; adapters reuse the input their base layer saved). e = 2 under bf16 autocast,
  4 in fp32. SmolLM2-135M: 22.5 KB per token and block for LoRA, 44.6 KB for full in fp32, 30.6 KB for full
  with mixed precision. With `train.lean_activations` (default; Llama-family blocks, models/lean_blocks.py) each
  norm keeps its input as it came (2eh; full: its fp32 residual, 8h) plus 1/rms per token instead of fp32
  copies, full no longer keeps the normalised inputs, and the MLP keeps two intermediate-wide tensors (gate and
  up; SiLU's output and the down projection's input are recomputed; three for QLoRA): 14.1, 27.7 and 19.6 KB.
  With gradient checkpointing a recomputed block keeps only its input (eh; 4h for full, whose
  residual stream stays fp32) and backward rebuilds one block at a time (counted on top).
- logits: the LM head at every position in chunks of `ce_chunk_size`, in two buffers reused chunk after chunk
  (objectives/sft.py CEWorkspace): the chunk's logits in the compute dtype and their fp32 copy, in which the
  softmax is built in place, so 6 B per chunk position x V under bf16 (4 B in fp32, where one buffer serves; 12 B
  for `ce_chunk_size=0`, where backward holds the saved log-probs, their gradient and its input gradient); plus
  the hidden states and dL/dh (2 x 2h per token).
- allocator: CPU only. glibc's malloc serves the per-block tensors (< 32 MiB) from its heap and keeps the holes
  that a block's freed temporaries leave between the tensors that stay alive; the next block cannot reuse all
  of them, so the heap grows beyond the live tensors. Measured on SmolLM2-135M (RSS minus live tensor bytes
  from torch.profiler): 6.9 KB per token and block with checkpointing, 11.5 KB for LoRA, 8.4 KB for full,
  proportional to tokens; modelled as 4(h + i) B per token and block. Adapters on an fp32 base (lora/qlora
  with no autocast, model.dtype auto on an AVX2-only CPU) retain far more: 35 KB (lora) and 41 KB (qlora) per
  token and block, measured as RSS with minus without `train.low_memory_malloc` on a 2-core AVX2 EPYC
  (2026-12-01; live bytes matched the estimate to 0.5%); modelled as 4 x 4(h + i), not measured with
  checkpointing. `train.low_memory_malloc` pins the mmap threshold (`train.mmap_threshold_kib`): tensors at least
  that big go back to the OS on free; at 128 KiB the term vanishes (RSS then matches live bytes to 1%), at the
  default 4 MiB a share stays (`heap_retention_share`).
- runtime: the framework itself (Python, torch, transformers, peft, the tokenizer and the tokenised data; CPU
  process RSS before the first step minus the weights, measured 0.43 GiB; or the CUDA context).
Measured against tunesmith runs of the bench job (bench/sft_vs_trl.py, SmolLM2-135M, batch 8 x 512 tokens):
LoRA 5.31 GiB peak RSS (estimate -8%), with checkpointing 2.17 GiB (+16%), full 7.81 GiB (+11%: its peak
came in step 1, before the optimizer state exists; the estimate is the steady state), full with checkpointing
4.63 GiB (-13%); LoRA with train.low_memory_malloc 3.88 GiB (+1%) (all on an avx512_bf16 EPYC, bf16 base).
fp32 base (AVX2 EPYC, model.dtype auto): LoRA 10.35 GiB (-3%), with train.low_memory_malloc 6.23 GiB (-0.5%),
QLoRA (NF4, fp32 compute) 10.72 GiB (-9%).
Throughput: FLOPs per token ~ 6N (full) or ~4N (LoRA/QLoRA: forward 2N + input gradients 2N; the adapters'
weight gradients are negligible; Kaplan et al. 2020) plus attention, divided into the device's sustained
matmul rate **in the compute dtype** (CPU: measured at run time with that dtype; GPUs: the table's bf16 tensor
core or plain fp32 peak, as torch's default fp32 matmul precision uses no TF32) times an efficiency measured
for tunesmith on that device class. QLoRA counts the same FLOPs as LoRA; its per-matmul dequantisation is not
modelled, so the figure is an upper bound (real QLoRA runs are slower than LoRA).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

GIB = 1024**3
METHODS = ("full", "lora", "qlora")
BASE_DTYPES = ("auto", "bf16", "fp32")
# Dense matmul peak (FLOP/s) in bf16 (tensor cores) and plain fp32 (no TF32: torch's default fp32 matmul
# precision), the share of it a training step sustains (calibrated by bench/ on CPU), the framework's own memory,
# and whether glibc's heap retention applies (CPU processes only). CPU peaks are measured at run time.
DEVICES: dict[str, dict[str, float]] = {
    "cpu": {"peak_flops": 0.0, "peak_flops_fp32": 0.0, "efficiency": 0.30, "runtime_bytes": 0.45 * GIB, "allocator": 1.0},
    "h100": {"peak_flops": 989e12, "peak_flops_fp32": 67e12, "efficiency": 0.35, "runtime_bytes": 0.6 * GIB, "allocator": 0.0},
    "h200": {"peak_flops": 989e12, "peak_flops_fp32": 67e12, "efficiency": 0.35, "runtime_bytes": 0.6 * GIB, "allocator": 0.0},
    "a100": {"peak_flops": 312e12, "peak_flops_fp32": 19.5e12, "efficiency": 0.35, "runtime_bytes": 0.6 * GIB, "allocator": 0.0},
    "rtx4090": {"peak_flops": 165e12, "peak_flops_fp32": 82.6e12, "efficiency": 0.30, "runtime_bytes": 0.5 * GIB, "allocator": 0.0},
}
NF4_BYTES = 4.127 / 8  # 4-bit NormalFloat + double-quantised absmax scales
CE_BYTES_UNCHUNKED = 12  # bytes per (position x vocab) entry of the plain LM head + cross-entropy


@dataclass
class Shape:
    """The sizes of a decoder-only transformer that memory and FLOPs depend on."""

    vocab: int
    hidden: int
    layers: int
    intermediate: int
    q_dim: int  # heads * head_dim
    kv_dim: int  # kv heads * head_dim
    tied: bool
    heads: int = 0  # attention heads (SDPA keeps a fp32 log-sum-exp per head and token)
    lean_blocks: bool = False  # Llama-family RMSNorm + SwiGLU blocks, which train.lean_activations applies to

    @classmethod
    def from_config(cls, cfg: dict) -> Shape:
        from tunesmith.models.lean_blocks import LEAN_MODEL_TYPES

        heads = cfg["num_attention_heads"]
        head_dim = cfg.get("head_dim") or cfg["hidden_size"] // heads
        lean = cfg.get("model_type") in LEAN_MODEL_TYPES and cfg.get("hidden_act", "silu") == "silu"
        return cls(cfg["vocab_size"], cfg["hidden_size"], cfg["num_hidden_layers"], cfg["intermediate_size"],
                   heads * head_dim, cfg.get("num_key_value_heads", heads) * head_dim, bool(cfg.get("tie_word_embeddings", False)),
                   heads, lean)

    def linears(self) -> list[tuple[int, int]]:
        """(in, out) of every linear layer in one block: q, k, v, o, gate, up, down."""
        h, i = self.hidden, self.intermediate
        return [(h, self.q_dim), (h, self.kv_dim), (h, self.kv_dim), (self.q_dim, h), (h, i), (h, i), (i, h)]

    def block_linear_params(self) -> int:
        return sum(a * b for a, b in self.linears())

    def params(self) -> int:
        embed = self.vocab * self.hidden * (1 if self.tied else 2)
        return self.layers * (self.block_linear_params() + 2 * self.hidden) + embed + self.hidden

    def lora_params(self, r: int) -> int:
        return self.layers * sum(r * (a + b) for a, b in self.linears())


def resolve_base_dtype(base_dtype: str = "auto", device: str = "cpu") -> str:
    """'bf16' or 'fp32': what model.dtype `base_dtype` means on `device` ('auto': bf16 where native; every GPU in
    DEVICES runs bf16 natively, the CPU is asked via `tunesmith.models.load.dtype_name`)."""
    from tunesmith.errors import TunesmithError

    if base_dtype not in BASE_DTYPES:
        raise TunesmithError(f"--base-dtype: unknown dtype '{base_dtype}' (use {', '.join(BASE_DTYPES)})")
    if base_dtype != "auto":
        return base_dtype
    if device != "cpu":
        return "bf16"
    from tunesmith.models.load import dtype_name

    return dtype_name("auto", "cpu")


def compute_dtype(method: str, base_dtype: str = "auto", device: str = "cpu", mixed_precision: bool = False) -> str:
    """The dtype the step's matmuls run in: fp32 for full fine-tuning (fp32 master weights, no autocast) unless
    `mixed_precision`, and for an fp32 base; bf16 (autocast) for adapters, or mixed-precision full, on a bf16 base."""
    if method == "full" and not mixed_precision:
        return "fp32"
    return resolve_base_dtype(base_dtype, device)


def activation_element_bytes(method: str, base_dtype: str = "auto", mixed_precision: bool = False) -> int:
    """Bytes per saved activation element: 2 under bf16 autocast, else 4."""
    return 2 if compute_dtype(method, base_dtype, mixed_precision=mixed_precision) == "bf16" else 4


def activation_bytes_per_token_layer(s: Shape, method: str, r: int = 16, base_dtype: str = "auto",
                                     mixed_precision: bool = False, lean_activations: bool = True) -> float:
    """Bytes saved for backward per token per block (terms in the module docstring).

    Measured with torch's saved-tensor hooks on SmolLM2-shaped blocks (tests/unit/test_estimate.py): LoRA on a
    bf16 base 22.5 KB, full 44.6 KB in fp32 and 30.6 KB with mixed precision per token on SmolLM2-135M; with
    `train.lean_activations` (Llama-family blocks) 14.1, 27.7 and 19.6 KB.
    """
    h, i, q, kv = s.hidden, s.intermediate, s.q_dim, s.kv_dim
    e = activation_element_bytes(method, base_dtype, mixed_precision)
    # A full model under autocast keeps fp32 norm outputs, which each consumer linear (q, k, v; gate, up) casts
    # and saves separately: 5 bf16 copies instead of the 2 shared outputs of a bf16 base.
    outputs = 5 if method == "full" and e == 2 else 2
    lean = lean_activations and s.lean_blocks
    if lean:  # models/lean_blocks.py: each norm keeps its input as it came (full: fp32 residual) and 1/rms per token
        inputs = 2 * (4 if method == "full" else e) * h + 2 * 4
    else:  # fp32 copies of the inputs; full: also the normalised inputs its trainable norm weights multiply
        inputs = 8 * h + (8 * h if method == "full" else 0)
    attention = 2 * e * (q + kv) + 4 * s.heads
    adapters = e * r * len(s.linears()) if method in ("lora", "qlora") else 0
    # gate out, silu(gate), up out, their product; lean keeps gate and up only, and silu(gate)·up too where the
    # down projection runs inside the lean function (lora, full; not QLoRA's 4-bit base)
    mlp = ((3 if method == "qlora" else 2) if lean else 4) * e * i
    return float(inputs + outputs * e * h + attention + mlp + adapters)


FP32_ADAPTER_HEAP_FACTOR = 4  # adapters on an fp32 base: 35-41 KB vs the 8.4 KB model on SmolLM2-135M (module doc)


def allocator_bytes_per_token_layer(s: Shape, method: str = "lora", base_dtype: str = "bf16") -> float:
    """glibc heap kept beyond the live tensors, per token and block (CPU; measured 6.9-11.5 KB on SmolLM2-135M
    for a bf16 base or full fine-tuning, 35-41 KB for lora/qlora on an fp32 base)."""
    fp32_adapters = method in ("lora", "qlora") and compute_dtype(method, base_dtype) == "fp32"
    return float(4 * (s.hidden + s.intermediate) * (FP32_ADAPTER_HEAP_FACTOR if fp32_adapters else 1))


def heap_retention_share(mmap_threshold_kib: int | None) -> float:
    """How much of the heap retention stays when glibc's mmap threshold is pinned (train.low_memory_malloc): tensors
    at least that big are mmap'd and unmapped on free, the smaller ones still fragment the heap. None = glibc's own
    dynamic threshold (it climbs to 32 MiB: all retained). Fitted as sqrt((T - 2 MiB) / 30 MiB), clipped to [0, 1],
    to RSS minus live bytes of LoRA on an fp32 base (AVX2 EPYC, bench job): 128 KiB and 2 MiB ~0, 4 MiB 0.15-0.26,
    8 MiB 0.17-0.45 (with and without checkpointing; tests/unit/test_estimate.py)."""
    if mmap_threshold_kib is None:
        return 1.0
    return min(1.0, max(0.0, (mmap_threshold_kib / 1024 - 2) / 30) ** 0.5)


def logits_bytes(s: Shape, tokens: int, ce_chunk_size: int, compute_bytes: int = 2) -> float:
    """The LM head's transient at the peak: chunk logits (compute-dtype and fp32 buffers, or the unchunked
    CE_BYTES_UNCHUNKED) plus hidden states and dL/dh."""
    if ce_chunk_size <= 0:
        return float(tokens * s.vocab * CE_BYTES_UNCHUNKED + tokens * s.hidden * 2 * 2)
    per_entry = 4 if compute_bytes == 4 else compute_bytes + 4
    return float(min(tokens, ce_chunk_size) * s.vocab * per_entry + tokens * s.hidden * 2 * 2)


@dataclass
class Estimate:
    model: str
    method: str
    device: str
    params: int
    trainable: int
    tokens_per_step: int
    memory_gib: dict[str, float]
    total_gib: float
    flops_per_token: float
    peak_tflops: float
    tokens_per_s: float
    base_dtype: str = "bf16"  # model.dtype as resolved ('auto' -> bf16 or fp32)
    compute_dtype: str = "bf16"  # the dtype of the matmul rate (peak_tflops) and of the saved activations
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def memory_terms(s: Shape, method: str, batch: int, seq_len: int, r: int, checkpoint_every: int,
                 ce_chunk_size: int, runtime_bytes: float, base_dtype: str = "auto", grad_accum: int = 1,
                 allocator: float = 0.0, mixed_precision: bool = False,
                 lean_activations: bool = True) -> tuple[dict[str, float], int]:
    """Memory breakdown in bytes at the step's peak and the trainable parameter count (`checkpoint_every`: 0 = no
    activation checkpointing, n = every n-th block recomputed in backward; `allocator`: the share of glibc's heap
    retention to add (0 none, 1 all: see heap_retention_share);
    `base_dtype` 'auto' resolves for this CPU — `estimate` resolves it for its device first)."""
    base_dtype = resolve_base_dtype(base_dtype)
    n = s.params()
    trainable = n if method == "full" else s.lora_params(r)
    linear = s.layers * s.block_linear_params()
    base = 2 if base_dtype == "bf16" else 4  # lora/qlora compute dtype = base dtype
    dequantised = base * max(a * b for a, b in s.linears())  # bitsandbytes' per-matmul copy of the largest linear
    e = activation_element_bytes(method, base_dtype, mixed_precision)
    cast_copies = 2 * (linear + s.vocab * s.hidden) if e == 2 else 0  # autocast's bf16 copies of full's fp32 weights
    weights = {"full": 4 * n + cast_copies, "lora": base * n + 4 * trainable,
               "qlora": NF4_BYTES * linear + base * (n - linear) + 4 * trainable + dequantised}[method]
    tokens = batch * seq_len
    per_layer = activation_bytes_per_token_layer(s, method, r, base_dtype, mixed_precision, lean_activations)
    recomputed = -(-s.layers // checkpoint_every) if checkpoint_every > 0 else 0  # ceil(L / n) blocks
    kept = s.layers - recomputed
    residual = 4 if method == "full" else e  # a recomputed block keeps its input: full's residual stream is fp32
    activations = tokens * (recomputed * residual * s.hidden + kept * per_layer + (per_layer if recomputed else 0))
    logits = logits_bytes(s, tokens, ce_chunk_size, e)
    head_grad = 4 * s.vocab * s.hidden if method == "full" else 0  # computed in forward by the chunked CE
    blocks_grad = 4 * trainable - head_grad
    gradients = head_grad + (blocks_grad if grad_accum > 1 else max(0.0, blocks_grad - activations - logits))
    retained = allocator * tokens * s.layers * allocator_bytes_per_token_layer(s, method, base_dtype)
    terms = {"weights": weights, "gradients": gradients, "optimizer": 8 * trainable, "activations": activations,
             "logits": logits, "allocator": retained, "runtime": runtime_bytes}
    return terms, trainable


def flops_per_token(s: Shape, method: str, seq_len: int) -> float:
    """~6N (full) or ~4N (adapters) for the matmuls, plus causal attention (QK^T and AV) on the same basis."""
    body = s.layers * s.block_linear_params() + s.vocab * s.hidden
    attention = s.layers * 2 * 2 * s.q_dim * seq_len / 2  # forward, causal half, per token
    factor = 6 if method == "full" else 4
    return factor * body + 3 * attention


def measure_cpu_matmul_flops(dtype: str = "fp32", size: int | None = None, seconds: float = 1.0) -> float:
    """Sustained FLOP/s of this CPU's linear layers in `dtype` ('bf16' or 'fp32'; all threads torch uses), timed
    with `F.linear` as nn.Linear runs it (on an AVX2-only EPYC bf16 `F.linear` ran at ~9 GFLOP/s, fp32 at ~77 per
    core, a bf16 `a @ b` at ~1). Where bf16 is emulated a smaller matrix keeps the measurement near `seconds`."""
    from tunesmith.models.load import DTYPES, fast_bf16

    if size is None:
        size = 1024 if dtype == "fp32" or fast_bf16("cpu") else 512
    flops, elapsed = time_linear(size, size, size, DTYPES[dtype], seconds)
    return flops / elapsed


def time_linear(rows: int, fan_in: int, fan_out: int, dtype, seconds: float) -> tuple[float, float]:
    """(FLOPs done, seconds taken) by repeated `F.linear` of a (rows, fan_in) input and a (fan_out, fan_in) weight
    for at least `seconds`, after one untimed call."""
    import torch
    import torch.nn.functional as F

    x, w = torch.randn(rows, fan_in, dtype=dtype), torch.randn(fan_out, fan_in, dtype=dtype)
    F.linear(x, w)
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or runs == 0:
        F.linear(x, w)
        runs += 1
    return 2.0 * rows * fan_in * fan_out * runs, time.perf_counter() - start


def read_model_config(model: str) -> tuple[str, dict]:
    """config.json of an HF folder or the bundled alias (converted on first use)."""
    from tunesmith.models.load import resolve_model_path

    path = resolve_model_path(model)
    return str(path), json.loads((Path(path) / "config.json").read_text())


def estimate(model_config: dict, method: str, batch: int, seq_len: int, device: str = "cpu", r: int = 16,
             checkpoint_every: int = 0, ce_chunk_size: int = 1024, peak_flops: float | None = None,
             name: str = "", base_dtype: str = "auto", grad_accum: int = 1, low_memory_malloc: bool = False,
             mmap_threshold_kib: int = 4096, mixed_precision: bool = False, lean_activations: bool = True) -> Estimate:
    """The full estimate; `peak_flops` (the matmul rate in the run's compute dtype) overrides the device table
    (for CPU it is measured when not given, in that dtype). `base_dtype`: model.dtype (auto | bf16 | fp32; full
    trains fp32, and computes in it unless `mixed_precision`); `low_memory_malloc` / `mmap_threshold_kib`: the
    train options that cut glibc's heap retention on CPU; `lean_activations`: train.lean_activations."""
    from tunesmith.errors import TunesmithError

    if method not in METHODS:
        raise TunesmithError(f"--method: unknown method '{method}' (use {', '.join(METHODS)})")
    if device not in DEVICES:
        raise TunesmithError(f"--device: unknown device '{device}' (known: {', '.join(DEVICES)})")
    base = resolve_base_dtype(base_dtype, device)
    compute = compute_dtype(method, base, device, mixed_precision)
    spec = DEVICES[device]
    s = Shape.from_config(model_config)
    terms, trainable = memory_terms(s, method, batch, seq_len, r, checkpoint_every, ce_chunk_size, spec["runtime_bytes"],
                                    base, grad_accum, spec["allocator"] * heap_retention_share(
                                        mmap_threshold_kib if low_memory_malloc else None), mixed_precision,
                                    lean_activations)
    table = spec["peak_flops"] if compute == "bf16" else spec["peak_flops_fp32"]
    peak = peak_flops or table or measure_cpu_matmul_flops(compute)
    notes = []
    if method == "qlora":
        notes.append(f"qlora: bitsandbytes dequantises every 4-bit weight to {compute} before each matmul (forward, and "
                     "again for the input gradient); that time is not modelled, so expect fewer tokens/s than lora")
    if device == "cpu" and compute == "bf16" and peak_flops is None:
        from tunesmith.models.load import fast_bf16

        if not fast_bf16("cpu"):
            notes.append("bf16 is emulated on this CPU (no AMX / AVX512-BF16): model.dtype auto would pick fp32")
    recompute = 1 / checkpoint_every if checkpoint_every > 0 else 0.0  # share of blocks run forward twice
    fpt = flops_per_token(s, method, seq_len) * (1 + recompute * (2 / (6 if method == "full" else 4)))
    return Estimate(name, method, device, s.params(), trainable, batch * seq_len,
                    {k: round(v / GIB, 3) for k, v in terms.items()}, round(sum(terms.values()) / GIB, 3),
                    fpt, peak / 1e12, peak * spec["efficiency"] / fpt, base, compute, notes)
