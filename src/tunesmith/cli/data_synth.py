"""`tunesmith data synth self-instruct | evol-instruct | constitutional | rlaif`: thin wrappers over data.synth.

Every command runs on a local model (`--model`, default the bundled one) or, with `--endpoint URL`, on any
OpenAI-compatible server (`--model` is then the served model's name). Output is resumable: rerun the same
command and it continues where it stopped. Counts go to the terminal and to OUT.stats.json.

`--config FILE` reads the command's options from YAML (keys named as the flags, `max-new-tokens` or
`max_new_tokens`; `inputs` and `out` too); flags given on the command line win. See configs/synth_*.yaml.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Optional

import typer
import yaml
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
Dtype = Annotated[str, typer.Option("--dtype", help="local model dtype: auto (bf16 where native, else fp32), bf16 or fp32")]
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
Out = Annotated[Optional[Path], typer.Option("--out", "-o", help="JSONL output (appended; a rerun resumes it); required here or in --config")]
Inputs = Annotated[Optional[Path], typer.Argument(help="prompts: JSONL/JSON/CSV/Parquet rows with prompt, instruction or messages (or `inputs:` in --config)")]
Config = Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML with this command's options (flag names); command-line flags win")]
PATH_KEYS = ("inputs", "out", "seeds", "pairs", "principles")


def _read_config(path: Path) -> dict:
    if not path.is_file():
        raise TunesmithError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise TunesmithError(f"{path}: not valid YAML: {exc}") from None
    if data is not None and not isinstance(data, dict):
        raise TunesmithError(f"{path}: a synth config is a mapping of option names to values")
    return data or {}


OPTIONAL_TYPES = {"limit": int, "max_requests": int, "endpoint": str, "api_key": str, "adapter": str}
TYPE_CHECKS = {  # type -> (accepts a YAML value, how to say it)
    bool: (lambda v: isinstance(v, bool), "true or false"),
    int: (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    float: (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
    str: (lambda v: isinstance(v, str), "a string"),
}


def _convert(name: str, value: object, default: object, path: Path) -> object:
    """A config value checked against the option's type (that of its default, else OPTIONAL_TYPES)."""
    if value is None:
        return None
    if name in PATH_KEYS:
        return Path(str(value))
    if isinstance(value, list) and name == "evolutions":
        value = ",".join(map(str, value))
    kind = type(default) if default is not None else OPTIONAL_TYPES.get(name, str)
    accepts, wanted = TYPE_CHECKS[kind]
    if not accepts(value):
        raise TunesmithError(f"{path}: {name}: expected {wanted}, got {value!r}")
    return kind(value)


def _params(ctx: typer.Context) -> dict:
    """The command's options: command-line flags, else --config values, else the defaults."""
    params = dict(ctx.params)
    path = params.pop("config", None)
    names = {}  # parameter name, or its long flag without dashes (rouge_threshold -> threshold)
    for p in ctx.command.params:
        if p.name != "config":
            names.update({o.lstrip("-").replace("-", "_"): p.name for o in p.opts if o.startswith("--")} | {p.name: p.name})
    known = sorted(names)
    for key, value in (_read_config(path) if path else {}).items():
        name = names.get(str(key).replace("-", "_"))
        if name is None:
            close = difflib.get_close_matches(str(key).replace("-", "_"), known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise TunesmithError(f"{path}: unknown option {key!r} for `data synth {ctx.command.name}`{hint}; known: {', '.join(known)}")
        source = ctx.get_parameter_source(name)  # an enum of typer's vendored click: compare by name
        if source is None or source.name in ("DEFAULT", "DEFAULT_MAP"):
            params[name] = _convert(name, value, params[name], path)
    for required in ("inputs", "out"):
        if required in params and params[required] is None:
            flag = "the INPUTS argument" if required == "inputs" else "--out"
            raise TunesmithError(f"`data synth {ctx.command.name}` needs {flag} (or `{required}:` in --config)")
    if params.get("inputs") is not None and not params["inputs"].exists():  # before a model is loaded for nothing
        raise TunesmithError(f"{params['inputs']}: input file not found")
    return params


def _backend(p: dict):
    from tunesmith.data.synth.backends import make_backend

    return make_backend(p["model"], p["endpoint"], p["api_key"], adapter=p["adapter"], dtype=p["dtype"],
                        batch_size=p["batch_size"], timeout=p["timeout"], retries=p["retries"], backoff=p["backoff"],
                        concurrency=p["concurrency"])


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


def _run(fn, ctx: typer.Context, build) -> None:
    """Resolve the options (flags > --config > defaults), call `fn` with build(options), print the report."""
    try:
        p = _params(ctx)
        report = fn(out=p["out"], backend=_backend(p), **build(p))
    except TunesmithError as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        raise SystemExit(2) from exc
    _show(report, p["out"])


def _sampling(p: dict) -> dict:
    return {"temperature": p["temperature"], "max_new_tokens": p["max_new_tokens"], "limit": p["limit"],
            "seed": p["seed"], "progress": not p["quiet"]}


@synth_app.command("self-instruct")
def self_instruct_cmd(
    ctx: typer.Context, out: Out = None, config: Config = None,
    seeds: Annotated[Optional[Path], typer.Option("--seeds", help="seed tasks file (instruction/input/output); default: 20 bundled")] = None,
    num: Annotated[int, typer.Option("--num", "-n", help="new tasks wanted in OUT")] = 100,
    mode: Annotated[str, typer.Option("--mode", help="two-step (paper: instructions, then answers) or one-step (Alpaca: whole tasks)")] = "two-step",
    threshold: Annotated[float, typer.Option("--rouge-threshold", help="reject tasks with ROUGE-L >= this against the pool")] = 0.7,
    max_requests: Annotated[Optional[int], typer.Option("--max-requests", help="stop after this many requests (default 3 x num + batch)")] = None,
    model: Model = BUNDLED_ALIAS, endpoint: Endpoint = None, api_key: ApiKey = None, adapter: Adapter = None,
    dtype: Dtype = "auto", batch_size: BatchSize = 8, concurrency: Concurrency = 4, timeout: Timeout = 60.0,
    retries: Retries = 3, backoff: Backoff = 1.0, temperature: Temperature = 0.7, max_new_tokens: MaxTokens = 256,
    limit: Limit = None, seed: Seed = 0, quiet: Quiet = False,
) -> None:
    """Self-Instruct: grow new instruction/input/output tasks from seed tasks, kept only if novel and sound."""
    from tunesmith.data.synth.self_instruct import self_instruct

    _run(self_instruct, ctx, lambda p: dict(
        seeds=p["seeds"], num=p["num"], mode=p["mode"], threshold=p["threshold"], requests_per_batch=p["batch_size"],
        max_requests=p["max_requests"], **_sampling(p)))


@synth_app.command("evol-instruct")
def evol_instruct_cmd(
    ctx: typer.Context, inputs: Inputs = None, out: Out = None, config: Config = None,
    rounds: Annotated[int, typer.Option("--rounds", help="evolution rounds; round r evolves round r-1's output")] = 1,
    evolutions: Annotated[str, typer.Option("--evolutions", help="comma list of constraints, deepen, concretize, reasoning, breadth")] = "constraints,deepen,concretize,reasoning,breadth",
    respond: Annotated[bool, typer.Option("--respond/--no-respond", help="also answer each evolved instruction")] = True,
    judge: Annotated[bool, typer.Option("--judge/--no-judge", help="ask the model whether each evolution gains information over its original (WizardLM elimination; 'Equal' is eliminated)")] = True,
    min_response_words: Annotated[int, typer.Option("--min-response-words", help="eliminate answers shorter than this many words")] = 3,
    model: Model = BUNDLED_ALIAS, endpoint: Endpoint = None, api_key: ApiKey = None, adapter: Adapter = None,
    dtype: Dtype = "auto", batch_size: BatchSize = 8, concurrency: Concurrency = 4, timeout: Timeout = 60.0,
    retries: Retries = 3, backoff: Backoff = 1.0, temperature: Temperature = 0.7, max_new_tokens: MaxTokens = 256,
    limit: Limit = None, seed: Seed = 0, quiet: Quiet = False,
) -> None:
    """Evol-Instruct: rewrite instructions deeper (constraints, depth, concreteness, reasoning) or broader."""
    from tunesmith.data.synth.evol_instruct import evol_instruct

    _run(evol_instruct, ctx, lambda p: dict(
        inputs=p["inputs"], rounds=p["rounds"], respond=p["respond"], judge=p["judge"],
        min_response_words=p["min_response_words"], batch_size=p["batch_size"],
        kinds=tuple(k.strip() for k in p["evolutions"].split(",") if k.strip()), **_sampling(p)))


@synth_app.command("constitutional")
def constitutional_cmd(
    ctx: typer.Context, inputs: Inputs = None, out: Out = None, config: Config = None,
    pairs: Annotated[Optional[Path], typer.Option("--pairs", help="preference pairs output (default OUT.pairs.jsonl)")] = None,
    principles: Annotated[Optional[Path], typer.Option("--principles", help="YAML list of {name, critique, revision}; default: bundled")] = None,
    regenerate: Annotated[bool, typer.Option("--regenerate", help="answer every prompt anew even when the row has an answer")] = False,
    model: Model = BUNDLED_ALIAS, endpoint: Endpoint = None, api_key: ApiKey = None, adapter: Adapter = None,
    dtype: Dtype = "auto", batch_size: BatchSize = 8, concurrency: Concurrency = 4, timeout: Timeout = 60.0,
    retries: Retries = 3, backoff: Backoff = 1.0, temperature: Temperature = 0.7, max_new_tokens: MaxTokens = 256,
    limit: Limit = None, seed: Seed = 0, quiet: Quiet = False,
) -> None:
    """Constitutional AI: answer, critique against a principle, revise; SFT rows + (revision > original) pairs."""
    from tunesmith.data.synth.constitutional import constitutional, load_principles

    def run(out, backend, inputs, principles, **kw):
        return constitutional(inputs, out, backend, principles=load_principles(principles), **kw)

    _run(run, ctx, lambda p: dict(
        inputs=p["inputs"], principles=p["principles"], pairs_out=p["pairs"], use_existing=not p["regenerate"],
        batch_size=p["batch_size"], **_sampling(p)))


@synth_app.command("rlaif")
def rlaif_cmd(
    ctx: typer.Context, inputs: Inputs = None, out: Out = None, config: Config = None,
    keep_ties: Annotated[bool, typer.Option("--keep-ties/--skip-ties", help="write ties to OUT.ties.jsonl with label 'tie', or only count them")] = False,
    judge_tokens: Annotated[int, typer.Option("--judge-tokens", help="longest judge output in tokens")] = 256,
    model: Model = BUNDLED_ALIAS, endpoint: Endpoint = None, api_key: ApiKey = None, adapter: Adapter = None,
    dtype: Dtype = "auto", batch_size: BatchSize = 8, concurrency: Concurrency = 4, timeout: Timeout = 60.0,
    retries: Retries = 3, backoff: Backoff = 1.0, temperature: Temperature = 0.8, max_new_tokens: MaxTokens = 256,
    limit: Limit = None, seed: Seed = 0, quiet: Quiet = False,
) -> None:
    """RLAIF: an AI judge compares two answers in both orders; consistent verdicts become preference pairs."""
    from tunesmith.data.synth.rlaif import rlaif

    _run(rlaif, ctx, lambda p: dict(
        inputs=p["inputs"], keep_ties=p["keep_ties"], judge_tokens=p["judge_tokens"], batch_size=p["batch_size"],
        **_sampling(p)))


def register(data_app: typer.Typer) -> None:
    """Add `tunesmith data synth ...` to the data group."""
    data_app.add_typer(synth_app, name="synth")
