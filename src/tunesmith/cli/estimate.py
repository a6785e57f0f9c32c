"""`tunesmith estimate`: memory breakdown and expected tokens/s before launching a run."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def estimate_command(
    model: str = typer.Option("smollm2-135m-instruct", "--model", help="HF folder, .gguf file, or the bundled alias"),
    method: str = typer.Option("lora", "--method", help="full | lora | qlora"),
    batch: int = typer.Option(8, "--batch", min=1, help="rows per micro-batch"),
    seq_len: int = typer.Option(512, "--seq-len", min=1, help="tokens per row (the longest batch sets the peak)"),
    rank: int = typer.Option(16, "--rank", min=1, help="LoRA rank (lora, qlora)"),
    device: str = typer.Option("cpu", "--device", help="cpu (matmul rate measured now), h100, h200, a100, rtx4090"),
    checkpoint_every: int = typer.Option(0, "--checkpoint-every", min=0, help="activation checkpointing: 0 off, 1 every block, n every n-th"),
    ce_chunk_size: int = typer.Option(1024, "--ce-chunk-size", min=0, help="LM head chunk (train.ce_chunk_size); 0 = whole"),
    base_dtype: str = typer.Option("auto", "--base-dtype", help="frozen base dtype (model.dtype): auto (bf16 where native: GPU, AMX or AVX512-BF16 CPU; else fp32) | bf16 | fp32; full trains fp32 (see --mixed-precision)"),
    grad_accum: int = typer.Option(1, "--grad-accum", min=1, help="micro-batches per step (train.grad_accum): >1 keeps gradients during forward"),
    low_memory_malloc: bool = typer.Option(False, "--low-memory-malloc", help="train.low_memory_malloc: glibc mmap threshold pinned (CPU)"),
    mmap_threshold_kib: int = typer.Option(4096, "--mmap-threshold-kib", min=64, max=32768, help="train.mmap_threshold_kib (with --low-memory-malloc)"),
    mixed_precision: bool = typer.Option(False, "--mixed-precision", help="full: method.mixed_precision (fp32 masters under bf16 autocast on a bf16 base)"),
    lean_activations: bool = typer.Option(True, "--lean-activations/--plain-activations", help="train.lean_activations (Llama-family RMSNorm / SwiGLU keep less for backward)"),
    as_json: bool = typer.Option(False, "--json", help="print the estimate as JSON"),
) -> None:
    """Peak memory (weights, gradients, optimizer, activations, logits, allocator, runtime) and expected tokens/s."""
    from tunesmith.estimate import estimate, read_model_config

    path, config = read_model_config(model)
    result = estimate(config, method, batch, seq_len, device, rank, checkpoint_every, ce_chunk_size, name=path,
                      base_dtype=base_dtype, grad_accum=grad_accum, low_memory_malloc=low_memory_malloc,
                      mmap_threshold_kib=mmap_threshold_kib, mixed_precision=mixed_precision,
                      lean_activations=lean_activations)
    if as_json:
        console.print_json(json.dumps(result.as_dict()))
        return
    console.print(f"[bold]{method}[/] on {device}: batch {batch} x {seq_len} tokens, {result.params / 1e6:.1f}M params, "
                  f"{result.trainable / 1e6:.2f}M trainable; base {result.base_dtype}, compute {result.compute_dtype}")
    table = Table()
    table.add_column("memory")
    table.add_column("GiB", justify="right")
    for name, gib in result.memory_gib.items():
        table.add_row(name, f"{gib:.2f}")
    table.add_row("[bold]total", f"[bold]{result.total_gib:.2f}")
    console.print(table)
    source = "measured now" if device == "cpu" else "table peak"
    console.print(f"compute: {result.flops_per_token / 1e9:.2f} GFLOP/token, device {result.peak_tflops:.3f} TFLOP/s "
                  f"{result.compute_dtype} matmul ({source}) -> expected ~{result.tokens_per_s:,.0f} tokens/s")
    for note in result.notes:
        console.print(f"note: {note}")


def register(app: typer.Typer) -> None:
    app.command("estimate")(estimate_command)
