"""`tunesmith data synth self-instruct | evol-instruct | constitutional | rlaif`: thin wrappers over data.synth.

Every command runs on a local model (`--model`, default the bundled one) or, with `--endpoint URL`, on any
OpenAI-compatible server (`--model` is then the served model's name). Output is resumable: rerun the same
command and it continues where it stopped. Counts go to the terminal and to OUT.stats.json.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tunesmith.errors import TunesmithError
from tunesmith.models.load import BUNDLED_ALIAS

synth_app = typer.Typer(help="Generate data with a model: self-instruct, evol-instruct, constitutional, rlaif",
                        no_args_is_help=True)
console = Console()

Model = Annotated[str, typer.Option("--model", "-m", help="local model (HF folder, .gguf, bundled alias); with --endpoint, the served model's name")]
Endpoint = Annotated[Optional[str], typer.Option("--endpoint", help="OpenAI-compatible base URL, e.g. http://localhost:8000/v1")]
ApiKey = Annotated[Optional[str], typer.Option("--api-key", envvar="TUNESMITH_API_KEY", help="bearer key for --endpoint (or $TUNESMITH_API_KEY)")]
Adapter = Annotated[Optional[str], typer.Option("--adapter", help="saved LoRA adapter for the local model")]
Dtype = Annotated[str, typer.Option("--dtype", help="local model dtype: bf16 or fp32")]
BatchSize = Annotated[int, typer.Option("--batch-size", help="items per batch (local generation batch / endpoint round)")]
Concurrency = Annotated[int, typer.Option("--concurrency", help="endpoint requests in flight")]
Timeout = Annotated[float, typer.Option("--timeout", help="seconds to wait for one endpoint answer")]
Retries = Annotated[int, typer.Option("--retries", help="retries on timeouts, refused connections, 429 and 5xx")]
Backoff = Annotated[float, typer.Option("--backoff", help="first retry wait in seconds (doubles each retry)")]
Temperature = Annotated[float, typer.Option("--temperature", help="sampling temperature (0 = greedy)")]
MaxTokens = Annotated[int, typer.Option("--max-new-tokens", help="longest completion in tokens")]
Limit = Annotated[Optional[int], typer.Option("--limit", help="process at most this many new items (requests) this run")]
Seed = Annotated[int, typer.Option("--seed", help="seed for sampling and for every random choice")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")]
Out = Annotated[Path, typer.Option("--out", "-o", help="JSONL output (appended; a rerun resumes it)")]
Inputs = Annotated[Path, typer.Argument(help="prompts: JSONL/JSON/CSV/Parquet rows with prompt, instruction or messages")]


def _backend(model: str, endpoint: str | None, api_key: str | None, adapter: str | None, dtype: str, batch_size: int,
             concurrency: int, timeout: float, retries: int, backoff: float):
    from tunesmith.data.synth.backends import make_backend

    return make_backend(model, endpoint, api_key, adapter=adapter, dtype=dtype, batch_size=batch_size,
                        timeout=timeout, retries=retries, backoff=backoff, concurrency=concurrency)


def _show(report, out: Path) -> None:
    d = report.to_dict()
    stats = out.with_name(out.name + ".stats.json") if not out.name.endswith(".jsonl") else out.with_name(out.name[:-6] + ".stats.json")
    report.save(stats)
    t = Table(title=f"{report.method}: {report.kept} kept this run", show_header=False)
    t.add_row("items", f"{d['inputs']} inputs, {d['resumed']} already done, {d['duplicates']} duplicates, {d['processed']} processed")
    t.add_row("written", ", ".join(f"{k} {v}" for k, v in d["rows"].items()) or "nothing")
    t.add_row("rejected", ", ".join(f"{k} {v}" for k, v in d["rejected"].items()) or "none")
    t.add_row("failed", f"{d['failed']} (retried by the next run)")
    if d["extra"]:
        t.add_row("counts", ", ".join(f"{k} {v}" for k, v in d["extra"].items()))
    b = d["backend"]
    t.add_row("backend", f"{b['requests']} requests, {b['retries']} retries, failures {b['failures'] or 'none'}")
    if d["input_skips"]:
        t.add_row("bad input rows", ", ".join(f"{k} {v}" for k, v in d["input_skips"].items()))
    console.print(t)
    console.print("\n".join(f"{k}: {v}" for k, v in d["outputs"].items()) + f"\nstats: {stats}", highlight=False)


def _run(fn, out: Path, backend_args: tuple, **kwargs) -> None:
    try:
        report = fn(out=out, backend=_backend(*backend_args), **kwargs)
    except TunesmithError as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        raise SystemExit(2) from exc
    _show(report, out)


@synth_app.command("self-instruct")
def self_instruct_cmd(
    out: Out, seeds: Annotated[Optional[Path], typer.Option("--seeds", help="seed tasks file (instruction/input/output); default: 20 bundled")] = None,
    num: Annotated[int, typer.Option("--num", "-n", help="new tasks wanted in OUT")] = 100,
    mode: Annotated[str, typer.Option("--mode", help="two-step (paper: instructions, then answers) or one-step (Alpaca: whole tasks)")] = "two-step",
    threshold: Annotated[float, typer.Option("--rouge-threshold", help="reject tasks with ROUGE-L >= this against the pool")] = 0.7,
    max_requests: Annotated[Optional[int], typer.Option("--max-requests", help="stop after this many requests (default 3 x num + batch)")] = None,
    model: Model = BUNDLED_ALIAS, endpoint: Endpoint = None, api_key: ApiKey = None, adapter: Adapter = None,
    dtype: Dtype = "bf16", batch_size: BatchSize = 8, concurrency: Concurrency = 4, timeout: Timeout = 60.0,
    retries: Retries = 3, backoff: Backoff = 1.0, temperature: Temperature = 0.7, max_new_tokens: MaxTokens = 256,
    limit: Limit = None, seed: Seed = 0, quiet: Quiet = False,
) -> None:
    """Self-Instruct: grow new instruction/input/output tasks from seed tasks, kept only if novel and sound."""
    from tunesmith.data.synth.self_instruct import self_instruct

    _run(self_instruct, out, (model, endpoint, api_key, adapter, dtype, batch_size, concurrency, timeout, retries, backoff),
         seeds=seeds, num=num, mode=mode, threshold=threshold, requests_per_batch=batch_size, max_requests=max_requests,
         limit=limit, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed, progress=not quiet)


@synth_app.command("evol-instruct")
def evol_instruct_cmd(
    inputs: Inputs, out: Out,
    rounds: Annotated[int, typer.Option("--rounds", help="evolution rounds; round r evolves round r-1's output")] = 1,
    evolutions: Annotated[str, typer.Option("--evolutions", help="comma list of constraints, deepen, concretize, reasoning, breadth")] = "constraints,deepen,concretize,reasoning,breadth",
    respond: Annotated[bool, typer.Option("--respond/--no-respond", help="also answer each evolved instruction")] = True,
    model: Model = BUNDLED_ALIAS, endpoint: Endpoint = None, api_key: ApiKey = None, adapter: Adapter = None,
    dtype: Dtype = "bf16", batch_size: BatchSize = 8, concurrency: Concurrency = 4, timeout: Timeout = 60.0,
    retries: Retries = 3, backoff: Backoff = 1.0, temperature: Temperature = 0.7, max_new_tokens: MaxTokens = 256,
    limit: Limit = None, seed: Seed = 0, quiet: Quiet = False,
) -> None:
    """Evol-Instruct: rewrite instructions deeper (constraints, depth, concreteness, reasoning) or broader."""
    from tunesmith.data.synth.evol_instruct import evol_instruct

    kinds = tuple(k.strip() for k in evolutions.split(",") if k.strip())
    _run(evol_instruct, out, (model, endpoint, api_key, adapter, dtype, batch_size, concurrency, timeout, retries, backoff),
         inputs=inputs, rounds=rounds, respond=respond, kinds=kinds, temperature=temperature,
         max_new_tokens=max_new_tokens, batch_size=batch_size, limit=limit, seed=seed, progress=not quiet)


@synth_app.command("constitutional")
def constitutional_cmd(
    inputs: Inputs, out: Out,
    pairs: Annotated[Optional[Path], typer.Option("--pairs", help="preference pairs output (default OUT.pairs.jsonl)")] = None,
    principles: Annotated[Optional[Path], typer.Option("--principles", help="YAML list of {name, critique, revision}; default: bundled")] = None,
    regenerate: Annotated[bool, typer.Option("--regenerate", help="answer every prompt anew even when the row has an answer")] = False,
    model: Model = BUNDLED_ALIAS, endpoint: Endpoint = None, api_key: ApiKey = None, adapter: Adapter = None,
    dtype: Dtype = "bf16", batch_size: BatchSize = 8, concurrency: Concurrency = 4, timeout: Timeout = 60.0,
    retries: Retries = 3, backoff: Backoff = 1.0, temperature: Temperature = 0.7, max_new_tokens: MaxTokens = 256,
    limit: Limit = None, seed: Seed = 0, quiet: Quiet = False,
) -> None:
    """Constitutional AI: answer, critique against a principle, revise; SFT rows + (revision > original) pairs."""
    from tunesmith.data.synth.constitutional import constitutional, load_principles

    def run(out, backend, **kw):
        return constitutional(inputs, out, backend, principles=load_principles(principles), pairs_out=pairs, **kw)

    _run(run, out, (model, endpoint, api_key, adapter, dtype, batch_size, concurrency, timeout, retries, backoff),
         use_existing=not regenerate, temperature=temperature, max_new_tokens=max_new_tokens, batch_size=batch_size,
         limit=limit, seed=seed, progress=not quiet)


@synth_app.command("rlaif")
def rlaif_cmd(
    inputs: Inputs, out: Out,
    keep_ties: Annotated[bool, typer.Option("--keep-ties/--skip-ties", help="write ties to OUT.ties.jsonl with label 'tie', or only count them")] = False,
    judge_tokens: Annotated[int, typer.Option("--judge-tokens", help="longest judge output in tokens")] = 256,
    model: Model = BUNDLED_ALIAS, endpoint: Endpoint = None, api_key: ApiKey = None, adapter: Adapter = None,
    dtype: Dtype = "bf16", batch_size: BatchSize = 8, concurrency: Concurrency = 4, timeout: Timeout = 60.0,
    retries: Retries = 3, backoff: Backoff = 1.0, temperature: Temperature = 0.8, max_new_tokens: MaxTokens = 256,
    limit: Limit = None, seed: Seed = 0, quiet: Quiet = False,
) -> None:
    """RLAIF: an AI judge compares two answers in both orders; consistent verdicts become preference pairs."""
    from tunesmith.data.synth.rlaif import rlaif

    _run(rlaif, out, (model, endpoint, api_key, adapter, dtype, batch_size, concurrency, timeout, retries, backoff),
         inputs=inputs, keep_ties=keep_ties, temperature=temperature, max_new_tokens=max_new_tokens,
         judge_tokens=judge_tokens, batch_size=batch_size, limit=limit, seed=seed, progress=not quiet)


def register(data_app: typer.Typer) -> None:
    """Add `tunesmith data synth ...` to the data group."""
    data_app.add_typer(synth_app, name="synth")
