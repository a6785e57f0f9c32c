"""Memory and throughput estimate for a model x method x batch x sequence length, before launch.

Reads only the model's config.json (no weights). Memory terms, in bytes:
- weights: full = 4 B/param (fp32 master weights); lora = base in bf16 (2 B) + adapters fp32;
  qlora = linear weights in NF4 with double quantisation (~4.13 bits, Dettmers et al. 2023) + the rest bf16.
- gradients: 4 B per trainable parameter; optimizer: AdamW's two fp32 moments, 8 B per trainable parameter.
- activations: tensors saved for backward, per token and layer (bf16 autocast; LoRA adds the inputs its
  adapters save); with gradient checkpointing only block inputs plus one block's activations.
- logits: the LM head at supervised positions in chunks of `ce_chunk_size` (fp32 logits + bf16 gradient).
- runtime: the framework itself (Python, torch, kernels; CPU process RSS or CUDA context).
Throughput: FLOPs per token ~ 6N (full) or ~4N (LoRA/QLoRA: forward 2N + input gradients 2N; the adapters'
weight gradients are negligible; Kaplan et al. 2020) plus attention, divided into the device's sustained
matmul rate times an efficiency measured for tunesmith on that device class.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

GIB = 1024**3
METHODS = ("full", "lora", "qlora")
# bf16 dense matmul peak (FLOP/s) and the share of it a training step sustains (calibrated by bench/).
DEVICES: dict[str, dict[str, float]] = {
    "cpu": {"peak_flops": 0.0, "efficiency": 0.30, "runtime_bytes": 0.75 * GIB},  # peak measured at run time
    "h100": {"peak_flops": 989e12, "efficiency": 0.35, "runtime_bytes": 0.6 * GIB},
    "h200": {"peak_flops": 989e12, "efficiency": 0.35, "runtime_bytes": 0.6 * GIB},
    "a100": {"peak_flops": 312e12, "efficiency": 0.35, "runtime_bytes": 0.6 * GIB},
    "rtx4090": {"peak_flops": 165e12, "efficiency": 0.30, "runtime_bytes": 0.5 * GIB},
}
NF4_BYTES = 4.127 / 8  # 4-bit NormalFloat + double-quantised absmax scales


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

    @classmethod
    def from_config(cls, cfg: dict) -> Shape:
        heads = cfg["num_attention_heads"]
        head_dim = cfg.get("head_dim") or cfg["hidden_size"] // heads
        return cls(cfg["vocab_size"], cfg["hidden_size"], cfg["num_hidden_layers"], cfg["intermediate_size"],
                   heads * head_dim, cfg.get("num_key_value_heads", heads) * head_dim, bool(cfg.get("tie_word_embeddings", False)))

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


def activation_bytes_per_token_layer(s: Shape, method: str, r: int = 16) -> float:
    """Bytes saved for backward per token per block under bf16 autocast.

    Calibrated with torch's saved-tensor hooks on a SmolLM2 block (tests/unit/test_estimate.py): the two
    RMSNorms' fp32 inputs (8h), rotary q and k, v and the attention output (2 B each), and three
    intermediate-wide bf16 tensors of the gated MLP (6i). LoRA adds only its rank-r intermediates, because
    tunesmith lets adapters reuse the bf16 input their base layer saved.
    """
    h, i, q, kv = s.hidden, s.intermediate, s.q_dim, s.kv_dim
    adapters = 2 * r * len(s.linears()) if method in ("lora", "qlora") else 0
    return float(8 * h + 4 * (q + kv) + 6 * i + adapters)


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

    def as_dict(self) -> dict:
        return asdict(self)


def memory_terms(s: Shape, method: str, batch: int, seq_len: int, r: int, checkpoint_every: int,
                 ce_chunk_size: int, runtime_bytes: float) -> tuple[dict[str, float], int]:
    """Memory breakdown in bytes and the trainable parameter count (`checkpoint_every`: 0 = no activation
    checkpointing, n = every n-th block recomputed in backward)."""
    n = s.params()
    trainable = n if method == "full" else s.lora_params(r)
    linear = s.layers * s.block_linear_params()
    weights = {"full": 4 * n, "lora": 2 * n + 4 * trainable, "qlora": NF4_BYTES * linear + 2 * (n - linear) + 4 * trainable}[method]
    tokens = batch * seq_len
    per_layer = activation_bytes_per_token_layer(s, method, r)
    recomputed = -(-s.layers // checkpoint_every) if checkpoint_every > 0 else 0  # ceil(L / n) blocks
    kept = s.layers - recomputed
    activations = tokens * (recomputed * 2 * s.hidden + kept * per_layer + (per_layer if recomputed else 0))
    chunk = min(tokens, ce_chunk_size) if ce_chunk_size > 0 else tokens
    logits = chunk * s.vocab * (4 + 2) + tokens * s.hidden * 2 * 2  # one chunk's logits + saved dL/dh
    terms = {"weights": weights, "gradients": 4 * trainable, "optimizer": 8 * trainable,
             "activations": activations, "logits": logits, "runtime": runtime_bytes}
    return terms, trainable


def flops_per_token(s: Shape, method: str, seq_len: int) -> float:
    """~6N (full) or ~4N (adapters) for the matmuls, plus causal attention (QK^T and AV) on the same basis."""
    body = s.layers * s.block_linear_params() + s.vocab * s.hidden
    attention = s.layers * 2 * 2 * s.q_dim * seq_len / 2  # forward, causal half, per token
    factor = 6 if method == "full" else 4
    return factor * body + 3 * attention


def measure_cpu_bf16_flops(size: int = 1024, seconds: float = 1.0) -> float:
    """Sustained bf16 matmul FLOP/s of this CPU (all threads torch uses)."""
    import torch

    a = torch.randn(size, size, dtype=torch.bfloat16)
    b = torch.randn(size, size, dtype=torch.bfloat16)
    a @ b
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        runs += 1
    return 2 * size**3 * runs / (time.perf_counter() - start)


def read_model_config(model: str) -> tuple[str, dict]:
    """config.json of an HF folder or the bundled alias (converted on first use)."""
    from tunesmith.models.load import resolve_model_path

    path = resolve_model_path(model)
    return str(path), json.loads((Path(path) / "config.json").read_text())


def estimate(model_config: dict, method: str, batch: int, seq_len: int, device: str = "cpu", r: int = 16,
             checkpoint_every: int = 0, ce_chunk_size: int = 1024, peak_flops: float | None = None,
             name: str = "") -> Estimate:
    """The full estimate; `peak_flops` overrides the device table (for CPU it is measured when not given)."""
    from tunesmith.errors import TunesmithError

    if method not in METHODS:
        raise TunesmithError(f"--method: unknown method '{method}' (use {', '.join(METHODS)})")
    if device not in DEVICES:
        raise TunesmithError(f"--device: unknown device '{device}' (known: {', '.join(DEVICES)})")
    spec = DEVICES[device]
    s = Shape.from_config(model_config)
    terms, trainable = memory_terms(s, method, batch, seq_len, r, checkpoint_every, ce_chunk_size, spec["runtime_bytes"])
    peak = peak_flops or spec["peak_flops"] or measure_cpu_bf16_flops()
    recompute = 1 / checkpoint_every if checkpoint_every > 0 else 0.0  # share of blocks run forward twice
    fpt = flops_per_token(s, method, seq_len) * (1 + recompute * (2 / (6 if method == "full" else 4)))
    return Estimate(name, method, device, s.params(), trainable, batch * seq_len,
                    {k: round(v / GIB, 3) for k, v in terms.items()}, round(sum(terms.values()) / GIB, 3),
                    fpt, peak / 1e12, peak * spec["efficiency"] / fpt)
