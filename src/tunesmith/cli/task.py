"""`tunesmith task make-data` and `tunesmith task score`: the quickstart JSON-extraction task."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tunesmith.errors import DataError, SkipReport, TunesmithError
from tunesmith.models.load import BUNDLED_ALIAS

console = Console()
err_console = Console(stderr=True)
task_app = typer.Typer(help="The quickstart task: booking requests -> strict JSON.", no_args_is_help=True)


def load_eval_rows(eval_path: str | Path) -> tuple[list[list[dict]], list[dict]]:
    """(conversations without the final answer, targets) from a task eval file; any bad row stops with a DataError."""
    from tunesmith.data.readers import read_rows
    from tunesmith.serving.engine import prompt_messages

    conversations, targets = [], []
    for number, row in read_rows(eval_path, SkipReport(), on_error="stop"):
        if not isinstance(row.get("target"), dict):
            raise DataError(eval_path, number, "target", "must be an object with the expected fields (see `task make-data`)")
        conversations.append(prompt_messages(row, str(eval_path), number))
        targets.append(row["target"])
    return conversations, targets


def score_model(model, tokenizer, eval_path: str | Path, max_new_tokens: int = 96, batch_size: int = 32,
                temperature: float = 0.0, samples: int = 1, seed: int = 0) -> dict:
    """Answers to every eval row, scored against the rows' targets: greedy, or `samples` answers per row sampled
    at `temperature` (seeded), each scored as one answer (how a model served with sampling behaves).

    Returns score_json_extraction's metrics plus timing, the first few (request, output, target) samples and
    every answer that is not the exact compact JSON (`mistakes`, with its kind and eval row).
    The tokenizer must already carry the chat template used in training (see `load_for_inference`).
    """
    from tunesmith.tasks.json_prefs import behaviour_from_kinds, classify_output
    from tunesmith.tasks.policy_prefs import greedy_answers
    from tunesmith.tasks.scoring import score_json_extraction

    if samples < 1 or (samples > 1 and temperature <= 0):
        raise TunesmithError(f"--samples {samples}: needs samples >= 1, and --temperature > 0 for more than one")
    conversations, targets = load_eval_rows(eval_path)
    conversations, targets = conversations * samples, targets * samples  # sample k of row i at i + k * rows
    started = time.perf_counter()
    outputs = greedy_answers(model, tokenizer, conversations, max_new_tokens, batch_size, temperature, seed)
    seconds = time.perf_counter() - started
    scores = score_json_extraction(outputs, targets)
    scores["decoding"] = {"temperature": temperature, "samples_per_row": samples, "seed": seed}
    scores["generation_seconds"] = round(seconds, 3)
    scores["answer_kinds"] = [classify_output(o, t) for o, t in zip(outputs, targets)]  # for paired comparisons
    scores["behaviour"] = behaviour_from_kinds(scores["answer_kinds"])  # per failure kind (tasks/json_prefs.py), verbose rate
    answers = [{"row": i % (len(conversations) // samples), "request": c[-1]["content"].split("\n\n", 1)[-1], "output": o, "target": t}
               for i, (c, o, t) in enumerate(zip(conversations, outputs, targets))]
    scores["samples"] = answers[:5]
    scores["mistakes"] = [{**a, "kind": k} for a, k in zip(answers, scores["answer_kinds"]) if k != "exact"]  # every one, to read
    return scores


def scores_table(scores: dict, title: str) -> Table:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("rows", str(scores["n"]))
    table.add_row("valid JSON", f"{scores['valid_json_rate']:.1%}")
    table.add_row("exact match", f"{scores['exact_match']:.1%}")
    table.add_row("exact match, chatter ignored", f"{scores['lenient_exact_match']:.1%}")
    for field, acc in scores["field_accuracy"].items():
        table.add_row(f"  {field}", f"{acc:.1%}")
    if "behaviour" in scores:
        table.add_row("verbose (text around the JSON)", f"{scores['behaviour']['verbose_rate']:.1%}")
    table.add_row("generation time", f"{scores['generation_seconds']:.1f}s")
    return table


@task_app.command("make-data")
def make_data_command(
    out: str = typer.Option("data/quickstart", "--out", help="folder for train.jsonl and eval.jsonl"),
    n_train: int = typer.Option(1500, "--n-train", min=1, help="training rows"),
    n_eval: int = typer.Option(100, "--n-eval", min=1, help="evaluation rows (no request shared with train)"),
    seed: int = typer.Option(0, "--seed", help="same seed, same bytes"),
) -> None:
    """Write the quickstart booking-to-JSON data set."""
    from tunesmith.tasks.json_extract import write_quickstart

    paths = write_quickstart(out, n_train=n_train, n_eval=n_eval, seed=seed)
    console.print(f"[green]wrote[/] {n_train} rows to [bold]{paths['train']}[/] and {n_eval} rows to [bold]{paths['eval']}[/]")


@task_app.command("make-prefs")
def make_prefs_command(
    out: str = typer.Option("data/generated/quickstart_prefs", "--out", help="folder for train.jsonl and eval.jsonl"),
    n_train: int = typer.Option(450, "--n-train", min=1, help="training pairs"),
    n_eval: int = typer.Option(180, "--n-eval", min=1, help="held-out pairs (no request shared with train or the quickstart eval set)"),
    seed: int = typer.Option(0, "--seed", help="same seed, same bytes"),
    kinds: Optional[str] = typer.Option(None, "--kinds", help="comma-separated rejected kinds to rotate through (default: the nine format/field failures; also time_shift, ampm_flip, date_shift)"),
    policy_adapter: Optional[str] = typer.Option(None, "--policy-adapter", help="on-policy pairs: rejected = this adapter's own wrong greedy answers (instead of synthetic failures)"),
    policy_model: str = typer.Option(BUNDLED_ALIAS, "--policy-model", help="base model under --policy-adapter"),
    batch_size: int = typer.Option(32, "--batch-size", help="prompts per generation batch (on-policy pairs)"),
    sample_temperature: float = typer.Option(0.0, "--sample-temperature", min=0.0, help="on-policy pairs: requests the policy answers right greedily get one answer sampled at this temperature, and a wrong one is paired too (0: greedy only)"),
    samples_per_request: int = typer.Option(1, "--samples-per-request", min=1, help="on-policy pairs: > 1 = no greedy pass; draw this many answers per request at --sample-temperature and pair each distinct wrong one (at most 2 per request)"),
    incomplete: bool = typer.Option(False, "--incomplete", help="on-policy pairs on requests that leave the time or party size out: chosen writes null there, rejected is the policy's answer (it invents a value); also writes eval_requests.jsonl"),
    deviations: bool = typer.Option(False, "--deviations", help="on-policy pairs without sampling: teacher-force the exact answer and pair it against the policy's likeliest wrong token spliced in (one forward per request)"),
    min_prob: float = typer.Option(0.01, "--min-prob", min=0.0, max=1.0, help="--deviations: skip (and count) requests whose likeliest wrong token has less probability"),
) -> None:
    """Write preference pairs for the quickstart task: exact JSON (chosen) vs a typical failure (rejected).

    With --policy-adapter, rejected answers are the policy's own mistakes (verifier-labelled, on-policy pairs)."""
    from tunesmith.tasks.json_prefs import DEFAULT_KINDS, write_quickstart_prefs

    if deviations:
        if sample_temperature > 0 or samples_per_request > 1 or kinds is not None or incomplete:
            err_console.print("[bold red]error:[/] --deviations reads the policy's next-token probabilities: it samples nothing and "
                              "uses no synthetic kinds (drop --sample-temperature / --samples-per-request / --kinds)")
            raise typer.Exit(2)
        _make_deviation_prefs(out, n_train, n_eval, seed, policy_model, policy_adapter, batch_size, min_prob)
        return
    if incomplete and policy_adapter is None:
        err_console.print("[bold red]error:[/] --incomplete pairs the policy's own answers: give --policy-adapter")
        raise typer.Exit(2)
    if policy_adapter is not None:
        if kinds is not None:
            err_console.print("[bold red]error:[/] --kinds picks synthetic failures; it cannot be combined with --policy-adapter")
            raise typer.Exit(2)
        if samples_per_request > 1 and sample_temperature <= 0:
            err_console.print("[bold red]error:[/] --samples-per-request > 1 needs --sample-temperature > 0")
            raise typer.Exit(2)
        _make_policy_prefs(out, n_train, n_eval, seed, policy_model, policy_adapter, batch_size, sample_temperature,
                           samples_per_request, incomplete)
        return
    chosen_kinds = tuple(k.strip() for k in kinds.split(",") if k.strip()) if kinds is not None else DEFAULT_KINDS
    paths = write_quickstart_prefs(out, n_train=n_train, n_eval=n_eval, seed=seed, kinds=chosen_kinds)
    console.print(f"[green]wrote[/] {n_train} pairs to [bold]{paths['train']}[/] and {n_eval} pairs to [bold]{paths['eval']}[/]")


def _make_deviation_prefs(out: str, n_train: int, n_eval: int, seed: int, model: str, adapter: str | None, batch_size: int,
                          min_prob: float) -> None:
    from tunesmith.serving.engine import load_for_inference
    from tunesmith.tasks.deviation_prefs import write_deviation_prefs

    try:
        lm, tokenizer = load_for_inference(model, adapter)
        manifest = write_deviation_prefs(out, lm, tokenizer, n_train, n_eval, seed, min_prob=min_prob, batch_size=min(batch_size, 16),
                                         source={"model": model, "adapter": adapter, "decoding": "likeliest deviation (teacher-forced)"})
    except TunesmithError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(2) from exc
    _pairs_table(f"likeliest-deviation pairs from {model}" + (f" + {adapter}" if adapter else ""), manifest, f"no deviation >= {min_prob}")
    console.print(f"[green]wrote[/] [bold]{out}[/]/train.jsonl, eval.jsonl and manifest.json")


def _pairs_table(title: str, manifest: dict, right_label: str = "right (no pair)", pairs_cell=lambda c: str(c["pairs"])) -> None:
    table = Table(title=title)
    for column in ("split", "requests", right_label, "empty (no pair)", "pairs", "rejected kinds"):
        table.add_column(column)
    for split in ("train", "eval"):
        c = manifest[split]
        table.add_row(split, str(c["requests"]), str(c["right"]), str(c["empty"]), pairs_cell(c),
                      ", ".join(f"{k} {v}" for k, v in c["kinds"].items()))
    console.print(table)


def _make_policy_prefs(out: str, n_train: int, n_eval: int, seed: int, model: str, adapter: str, batch_size: int,
                       temperature: float, samples_per_request: int = 1, incomplete: bool = False) -> None:
    from tunesmith.serving.engine import load_for_inference
    from tunesmith.tasks.policy_prefs import greedy_answers, write_policy_prefs

    try:
        lm, tokenizer = load_for_inference(model, adapter)
        sample = (lambda convs: greedy_answers(lm, tokenizer, convs, batch_size=batch_size, temperature=temperature, seed=seed)) \
            if temperature > 0 else None
        decoding = f"{samples_per_request} samples per request at temperature {temperature}" if samples_per_request > 1 \
            else "greedy" + (f", right answers resampled at temperature {temperature}" if sample else "")
        manifest = write_policy_prefs(out, lambda convs: greedy_answers(lm, tokenizer, convs, batch_size=batch_size),
                                      n_train, n_eval, seed, source={"model": model, "adapter": adapter, "decoding": decoding},
                                      sample=sample, samples_per_request=samples_per_request, incomplete=incomplete)
    except TunesmithError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(2) from exc
    _pairs_table(f"on-policy pairs from {model} + {adapter}", manifest,
                 pairs_cell=lambda c: f"{c['pairs']} ({c['from_greedy']} greedy / {c['from_samples']} sampled"
                                      + (f" / {c['from_synthetic']} synthetic" if c.get("from_synthetic") else "") + ")")
    console.print(f"[green]wrote[/] [bold]{out}[/]/train.jsonl, eval.jsonl and manifest.json")


@task_app.command("score")
def score_command(
    model: str = typer.Option(BUNDLED_ALIAS, "--model", "-m", help="HF folder, .gguf file, or the bundled alias"),
    adapter: Optional[str] = typer.Option(None, "--adapter", help="saved LoRA adapter folder"),
    data: str = typer.Option("data/quickstart/eval.jsonl", "--data", help="eval file written by `task make-data`"),
    out: Optional[str] = typer.Option(None, "--out", help="also write the scores as JSON here"),
    max_new_tokens: int = typer.Option(96, "--max-new-tokens", help="longest answer in tokens"),
    batch_size: int = typer.Option(32, "--batch-size", help="prompts per generation batch"),
    template: str = typer.Option("auto", "--template", help="chat template (must match training)"),
    dtype: str = typer.Option("auto", "--dtype", help="model dtype: auto (bf16 where native, else fp32), bf16 or fp32"),
    temperature: float = typer.Option(0.0, "--temperature", min=0.0, help="0 = greedy; > 0 samples at this temperature"),
    samples: int = typer.Option(1, "--samples", min=1, help="sampled answers per request (with --temperature > 0)"),
    seed: int = typer.Option(0, "--seed", help="sampling seed"),
) -> None:
    """Score a model (optionally with an adapter) on the quickstart eval set, greedy or sampled."""
    from tunesmith.serving.engine import load_for_inference

    try:
        lm, tokenizer = load_for_inference(model, adapter, dtype=dtype, template=template)
        scores = score_model(lm, tokenizer, data, max_new_tokens=max_new_tokens, batch_size=batch_size,
                             temperature=temperature, samples=samples, seed=seed)
    except TunesmithError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(2) from exc
    scores["model"], scores["adapter"], scores["data"] = model, adapter, data
    console.print(scores_table(scores, f"{model}" + (f" + {adapter}" if adapter else "")))
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(scores, indent=2) + "\n", encoding="utf-8")
        console.print(f"scores written to [bold]{out}[/]")


def paired_outcomes(scores: dict) -> dict[str, list[float]]:
    """Per request (not per answer: a request's samples are one paired unit), the share of its answers that are
    right (every value exact), verbose (text around the JSON) and unparsable (no JSON object, or a truncated one)."""
    from tunesmith.tasks.json_prefs import VERBOSE_KINDS
    from tunesmith.tasks.policy_prefs import RIGHT_KINDS

    kinds, per_row = scores.get("answer_kinds"), scores.get("decoding", {}).get("samples_per_row", 1)
    if not kinds or len(kinds) % per_row:
        raise TunesmithError("scores file has no per-answer kinds (written by `task score` since 2026-12-01): score again")
    rows = len(kinds) // per_row
    by_row = [[kinds[i + k * rows] for k in range(per_row)] for i in range(rows)]  # sample k of row i at i + k * rows
    share = lambda group: [sum(k in group for k in row) / per_row for row in by_row]  # noqa: E731
    return {"right": share(RIGHT_KINDS), "verbose": share(VERBOSE_KINDS), "unparsable": share(("no_json", "truncated"))}


@task_app.command("compare")
def compare_command(
    before: str = typer.Argument(..., help="scores JSON of the first model (`task score --out`)"),
    after: str = typer.Argument(..., help="scores JSON of the second model, same eval file and decoding"),
    out: Optional[str] = typer.Option(None, "--out", help="also write the comparison as JSON here"),
) -> None:
    """Paired comparison of two `task score` results: per request, the share of right / verbose / unparsable
    answers; bootstrap CI of the difference, Wilcoxon or McNemar test, Holm-adjusted across the three."""
    from tunesmith.evaluation.stats import compare_all

    loaded = []
    for path in (before, after):
        try:
            loaded.append(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as exc:
            raise TunesmithError(f"{path}: not a readable scores JSON ({exc})") from exc
    a, b = (paired_outcomes(x) for x in loaded)
    if len(a["right"]) != len(b["right"]) or loaded[0].get("data") != loaded[1].get("data"):
        raise TunesmithError(f"{before} and {after} do not score the same requests (data {loaded[0].get('data')} vs "
                             f"{loaded[1].get('data')}, {len(a['right'])} vs {len(b['right'])} requests)")
    per_metric = {m: (a[m], b[m], m == "right") for m in a}
    results = compare_all(per_metric, "before", "after")
    table = Table(title=f"{before} -> {after} ({len(a['right'])} paired requests)")
    for column in ("per request", "before", "after", "difference (95% CI)", "test", "verdict (Holm)"):
        table.add_column(column)
    for metric, r in results.items():
        ci = r["bootstrap"]
        table.add_row(metric, f"{r['mean_a']:.1%}", f"{r['mean_b']:.1%}",
                      f"{ci['mean_diff']:+.1%} [{ci['ci_low']:+.1%}, {ci['ci_high']:+.1%}]", r["test"], r["verdict"])
    console.print(table)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


def register(app: typer.Typer) -> None:
    """Add the `task` command group to the main app."""
    app.add_typer(task_app, name="task")
