"""`tunesmith chat` (interactive REPL) and `tunesmith generate` (batch completion of a JSONL file)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape as _escape

from tunesmith.errors import DataError, SkipReport, TunesmithError
from tunesmith.models.load import BUNDLED_ALIAS

console = Console()
err_console = Console(stderr=True)

MODEL_OPT = typer.Option(BUNDLED_ALIAS, "--model", "-m", help="HF folder, .gguf file, or the bundled alias")
ADAPTER_OPT = typer.Option(None, "--adapter", help="saved LoRA adapter folder (e.g. runs/x/adapter)")
TEMPLATE_OPT = typer.Option("auto", "--template", help="'auto', 'tokenizer', 'chatml', 'alpaca' or a .jinja path")
DTYPE_OPT = typer.Option("auto", "--dtype", help="model dtype: auto (bf16 where native, else fp32), bf16 or fp32")
SEED_OPT = typer.Option(0, "--seed", help="sampling seed")


def _fail(exc: TunesmithError) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {_escape(str(exc))}")
    return typer.Exit(2)


def chat_command(
    model: str = MODEL_OPT,
    adapter: Optional[str] = ADAPTER_OPT,
    system: Optional[str] = typer.Option(None, "--system", help="system message for the conversation"),
    temperature: float = typer.Option(0.7, "--temperature", help="0 = greedy"),
    top_p: float = typer.Option(0.9, "--top-p", help="nucleus sampling share"),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", help="longest answer in tokens"),
    template: str = TEMPLATE_OPT,
    dtype: str = DTYPE_OPT,
    seed: int = SEED_OPT,
) -> None:
    """Chat with a model, one line per turn: /reset clears the history, /exit (or end of input) quits."""
    from tunesmith.serving.engine import load_for_inference

    try:
        lm, tokenizer = load_for_inference(model, adapter, dtype=dtype, template=template)
        run_chat(lm, tokenizer, system, temperature, top_p, max_new_tokens, seed)
    except TunesmithError as exc:
        raise _fail(exc) from exc


def run_chat(lm, tokenizer, system: str | None, temperature: float, top_p: float, max_new_tokens: int, seed: int) -> None:
    """The REPL loop over stdin lines; the whole conversation is re-rendered with the template each turn."""
    from tunesmith.data.templates import render_prompt, stop_token_ids
    from tunesmith.serving.engine import generate

    start = [{"role": "system", "content": system}] if system else []
    history = list(start)
    stops = stop_token_ids(tokenizer)
    console.print("[dim]type a message; /reset clears the conversation, /exit quits[/]")
    turn = 0
    while True:
        console.print("[bold cyan]you>[/] ", end="")
        line = sys.stdin.readline()
        if not line:  # end of input
            console.print()
            return
        text = line.strip()
        if text == "/exit":
            return
        if text == "/reset":
            history = list(start)
            console.print("[dim](conversation cleared)[/]")
            continue
        if not text:
            continue
        history.append({"role": "user", "content": text})
        ids = render_prompt(history, tokenizer)
        result = generate(lm, tokenizer, [ids], max_new_tokens=max_new_tokens, temperature=temperature,
                          top_p=top_p, batch_size=1, stop_ids=stops, seed=seed + turn)[0]
        turn += 1
        history.append({"role": "assistant", "content": result.text})
        console.print("[bold green]assistant>[/] " + _escape(result.text), highlight=False)
        if not result.finished:
            console.print(f"[dim](cut at --max-new-tokens {max_new_tokens})[/]")


def read_prompt_rows(path: str, report: SkipReport, on_error: str = "skip") -> list[tuple[dict, list[dict]]]:
    """(row, conversation to complete) for each good row of a data file; bad rows are counted or raised."""
    from tunesmith.data.readers import read_rows
    from tunesmith.serving.engine import prompt_messages

    rows = []
    for number, row in read_rows(path, report, on_error=on_error):
        try:
            rows.append((row, prompt_messages(row, path, number)))
        except DataError as exc:
            if on_error == "stop":
                raise
            report.skip(exc.problem, "bad prompt row")
    report.kept = len(rows)
    return rows


def generate_command(
    input_path: str = typer.Argument(..., metavar="INPUT_JSONL", help="rows {\"prompt\": str} or {\"messages\": [...]}"),
    output: str = typer.Option(..., "--output", "-o", help="output JSONL: each input row plus 'output' and 'finished'"),
    model: str = MODEL_OPT,
    adapter: Optional[str] = ADAPTER_OPT,
    temperature: float = typer.Option(0.0, "--temperature", help="0 = greedy"),
    top_p: float = typer.Option(1.0, "--top-p", help="nucleus sampling share"),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", help="longest answer in tokens"),
    batch_size: int = typer.Option(16, "--batch-size", help="prompts per generation batch"),
    template: str = TEMPLATE_OPT,
    dtype: str = DTYPE_OPT,
    seed: int = SEED_OPT,
    on_error: str = typer.Option("skip", "--on-error", help="bad rows: 'skip' (counted and reported) or 'stop'"),
) -> None:
    """Complete every prompt of INPUT_JSONL and write the rows with their outputs to --output."""
    try:
        summary = run_generate(input_path, output, model, adapter, temperature, top_p, max_new_tokens,
                               batch_size, template, dtype, seed, on_error)
    except TunesmithError as exc:
        raise _fail(exc) from exc
    console.print(f"[green]wrote[/] {summary['written']} rows to [bold]{output}[/] in {summary['seconds']:.1f}s "
                  f"({summary['finished']} ended with a stop token)")


def run_generate(input_path: str, output: str, model: str, adapter: str | None, temperature: float, top_p: float,
                 max_new_tokens: int, batch_size: int, template: str, dtype: str, seed: int, on_error: str) -> dict:
    """Library side of `tunesmith generate`; returns counts and timing."""
    from tunesmith.data.templates import render_prompt, stop_token_ids
    from tunesmith.serving.engine import generate, load_for_inference

    report = SkipReport()
    rows = read_prompt_rows(input_path, report, on_error)
    _print_skips(report)
    if not rows:
        raise TunesmithError(f"{input_path}: no usable rows ({report.summary()})")
    lm, tokenizer = load_for_inference(model, adapter, dtype=dtype, template=template)
    prompts = [render_prompt(messages, tokenizer) for _, messages in rows]
    started = time.perf_counter()
    results = generate(lm, tokenizer, prompts, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                       batch_size=batch_size, stop_ids=stop_token_ids(tokenizer), seed=seed)
    seconds = time.perf_counter() - started
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as f:
        for (row, _), res in zip(rows, results):
            f.write(json.dumps({**row, "output": res.text, "finished": res.finished}, ensure_ascii=False) + "\n")
    return {"written": len(rows), "skipped": report.skipped, "finished": sum(r.finished for r in results),
            "seconds": seconds}


def _print_skips(report: SkipReport) -> None:
    if not report.skipped:
        return
    err_console.print(f"[yellow]{_escape(report.summary())}[/]")
    for problem in report.examples[:5]:
        err_console.print(f"  [yellow]-[/] {_escape(str(problem))}")


def register(app: typer.Typer) -> None:
    """Add `chat` and `generate` to the main app."""
    app.command("chat")(chat_command)
    app.command("generate")(generate_command)
