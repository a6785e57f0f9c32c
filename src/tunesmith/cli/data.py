"""`tunesmith data ...`: inspect data the way training will see it."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.text import Text

from tunesmith.errors import TunesmithError

data_app = typer.Typer(help="Inspect and prepare data", no_args_is_help=True)

TRAINED_STYLE = "black on green"
MASKED_STYLE = "dim"


@data_app.callback()
def _group() -> None:
    """Inspect and prepare data (a group even while it has one verb, so `data preview` stays stable)."""


def _runs(labels: list[int]) -> list[tuple[int, int, bool]]:
    """Consecutive (start, end, trained) runs, so multi-byte characters decode whole."""
    runs: list[tuple[int, int, bool]] = []
    start = 0
    for k in range(1, len(labels) + 1):
        if k == len(labels) or (labels[k] != -100) != (labels[start] != -100):
            runs.append((start, k, labels[start] != -100))
            start = k
    return runs


def render_example_text(example, tokenizer) -> Text:
    """The row's text with trained tokens highlighted and masked tokens dimmed."""
    text = Text()
    for start, end, trained in _runs(example.labels):
        piece = tokenizer.decode(example.input_ids[start:end], skip_special_tokens=False)
        text.append(piece, style=TRAINED_STYLE if trained else MASKED_STYLE)
    return text


def _config(file: Path, fmt: str, template: str, train_on: str, max_length: int, system_prompt: str | None,
            on_error: str):
    from pydantic import ValidationError

    from tunesmith.config.schema import DataConfig, DataSource

    try:
        source = DataSource(path=str(file), format=fmt)
        cfg = DataConfig(train=[source], template=template, train_on=train_on, max_length=max_length,
                         system_prompt=system_prompt, on_error=on_error)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise TunesmithError(f"option '{err['loc'][-1]}': {err['msg']}") from exc
    return source, cfg


def _preview(console: Console, file: Path, model: str, fmt: str, template: str, train_on: str,
             max_length: int, n: int, system_prompt: str | None, on_error: str) -> None:
    from tunesmith.data.dataset import build_examples, dataset_stats
    from tunesmith.models.load import load_tokenizer

    source, cfg = _config(file, fmt, template, train_on, max_length, system_prompt, on_error)
    tokenizer = load_tokenizer(model)
    examples, report = build_examples([source], tokenizer, cfg)
    for example in examples[:n]:
        trained = sum(1 for label in example.labels if label != -100)
        cut = ", truncated" if example.truncated else ""
        header = f"── {example.source}:{example.line}  {len(example.input_ids)} tokens, {trained} trained{cut}"
        console.print(Text(header, style="bold cyan"), soft_wrap=True)
        console.print(render_example_text(example, tokenizer))
    stats = dataset_stats(examples)
    console.print(Text("── summary", style="bold cyan"))
    console.print(
        f"{stats['rows']} rows, {stats['tokens']} tokens, {stats['trained_tokens']} trained, "
        f"mean length {stats['mean_length']:.1f}, max {stats['max_length']}"
    )
    console.print(report.summary())
    for problem in report.examples:
        console.print(Text("  skipped ", style="yellow") + Text(str(problem)))
    console.print(Text("legend: ") + Text("trained", style=TRAINED_STYLE) + Text(" ") + Text("masked", style=MASKED_STYLE))


@data_app.command()
def preview(
    file: Path = typer.Argument(..., help="data file (JSONL, JSON, Parquet or CSV)"),
    model: str = typer.Option("smollm2-135m-instruct", "--model", "-m", help="model whose tokenizer is used"),
    fmt: str = typer.Option("auto", "--format", "-f", help="record format: auto, alpaca, sharegpt, messages, prompt_completion, text"),
    template: str = typer.Option("auto", "--template", "-t", help="auto, tokenizer, chatml, alpaca, or a .jinja file"),
    train_on: str = typer.Option("all_assistant", "--train-on", help="all_assistant, last_assistant or everything"),
    max_length: int = typer.Option(1024, "--max-length", help="longest tokenised row"),
    n: int = typer.Option(3, "-n", help="how many rendered rows to show"),
    system_prompt: str | None = typer.Option(None, "--system-prompt", help="system message for rows that have none"),
    on_error: str = typer.Option("skip", "--on-error", help="bad rows: skip and count them, or stop at the first"),
) -> None:
    """Show the first rows as training sees them: trained tokens highlighted, masked tokens dim."""
    console = Console()
    try:
        _preview(console, file, model, fmt, template, train_on, max_length, n, system_prompt, on_error)
    except TunesmithError as exc:
        Console(stderr=True).print(Text("error: ", style="bold red") + Text(str(exc), style="red"))
        raise SystemExit(2) from exc  # not typer.Exit: click returns, not raises, it when standalone_mode=False


from tunesmith.cli import data_quality as _data_quality  # noqa: E402  (inspect, clean, mix, split, version, diff)

_data_quality.register(data_app)

from tunesmith.cli import data_synth as _data_synth  # noqa: E402  (synth self-instruct | evol-instruct | constitutional | rlaif)

_data_synth.register(data_app)
