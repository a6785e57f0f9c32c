"""Build tokenised training examples from the configured files; every dropped row is counted."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from tunesmith.config.schema import DataConfig, DataSource
from tunesmith.data.templates import BoundaryError, EmptyMaskError, Example, render, resolve_template
from tunesmith.errors import DataError, InputProblem, SkipReport, TunesmithError


@dataclass
class DataReport(SkipReport):
    """A SkipReport plus notes about rows that were kept but changed (e.g. truncated)."""

    notes: dict[str, int] = field(default_factory=dict)

    def note(self, what: str, n: int = 1) -> None:
        self.notes[what] = self.notes.get(what, 0) + n

    def merge(self, other: SkipReport) -> None:
        super().merge(other)
        for k, v in getattr(other, "notes", {}).items():
            self.note(k, v)

    def summary(self) -> str:
        text = super().summary()
        if self.notes:
            text += "; " + ", ".join(f"{n} {what}" for what, n in sorted(self.notes.items()))
        return text


def _skip_reason(exc: DataError) -> str:
    if isinstance(exc, EmptyMaskError):
        return "empty mask"
    if isinstance(exc, BoundaryError):
        return "answer boundary"
    return getattr(exc, "reason", "template error")


def _render_source(source: DataSource, tokenizer, cfg: DataConfig, report: DataReport) -> list[Example]:
    """Load one file's records and tokenise them; drops are counted in `report`."""
    from tunesmith.data.formats import load_records

    records, loaded = load_records(
        source.path, fmt=source.format, columns=source.columns or None,
        system_prompt=cfg.system_prompt, on_error=cfg.on_error,
    )
    report.merge(loaded)
    report.kept -= loaded.kept  # recounted below from what survives tokenisation
    examples: list[Example] = []
    for record in records:
        try:
            example = render(record, tokenizer, cfg.train_on, cfg.max_length, cfg.overlong)
        except DataError as exc:
            if cfg.on_error == "stop":
                raise
            report.skip(exc.problem, _skip_reason(exc))
            continue
        if example is None:
            report.skip(
                InputProblem(record.source, record.line, None, f"longer than max_length={cfg.max_length}"),
                "too long",
            )
            continue
        if example.truncated:
            report.note(f"truncated to max_length={cfg.max_length}")
        examples.append(example)
    report.kept += len(examples)
    return examples


def build_examples(
    sources: list[DataSource], tokenizer, data_cfg: DataConfig, report: SkipReport | None = None
) -> tuple[list[Example], SkipReport]:
    """Tokenise every source with the configured template (set on `tokenizer`, so inference matches).

    Returns the examples in file order and a report of what was skipped (counted into `report`
    when one is given, which is then returned).
    """
    resolve_template(tokenizer, data_cfg.template)

    def render_all() -> tuple[list[Example], DataReport]:
        local = DataReport()
        return [e for source in sources for e in _render_source(source, tokenizer, data_cfg, local)], local

    from tunesmith.data.cache import cached_build

    # tokenise once (data.cache): keyed by file contents, tokenizer, template and the data settings
    examples, local = cached_build(sources, tokenizer, data_cfg, render_all)
    if report is None:
        return examples, local
    report.merge(local)
    return examples, report


def split_eval(examples: list[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Carve a deterministic random share off as eval; both parts keep the original order."""
    if fraction <= 0:
        return list(examples), []
    n_eval = max(1, round(len(examples) * fraction))
    if n_eval >= len(examples):
        raise TunesmithError(
            f"eval_fraction={fraction} leaves no training rows out of {len(examples)}: use a smaller fraction or more data"
        )
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    held = set(order[:n_eval])
    train = [e for i, e in enumerate(examples) if i not in held]
    evaluation = [e for i, e in enumerate(examples) if i in held]
    return train, evaluation


def dataset_stats(examples: list[Example]) -> dict:
    """Row and token counts: rows, tokens, trained_tokens, mean_length, max_length, truncated."""
    lengths = [len(e.input_ids) for e in examples]
    return {
        "rows": len(examples),
        "tokens": sum(lengths),
        "trained_tokens": sum(sum(1 for label in e.labels if label != -100) for e in examples),
        "mean_length": sum(lengths) / len(lengths) if lengths else 0.0,
        "max_length": max(lengths, default=0),
        "truncated": sum(1 for e in examples if e.truncated),
    }
