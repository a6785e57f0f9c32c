"""User-facing errors: every bad input becomes one of these, with the file, line and field it concerns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


class TunesmithError(Exception):
    """An error caused by user input or environment. The CLI prints it without a traceback."""


@dataclass
class InputProblem:
    """One problem found in a user's file: where it is and what is wrong."""

    file: str
    line: int | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = self.file + (f":{self.line}" if self.line is not None else "")
        what = f" field '{self.field}'" if self.field else ""
        return f"{where}:{what} {self.message}".replace(": ", ": ", 1)


class DataError(TunesmithError):
    """A data file problem at a known place."""

    def __init__(self, file: str | Path, line: int | None, field: str | None, message: str):
        self.problem = InputProblem(str(file), line, field, message)
        super().__init__(str(self.problem))


@dataclass
class SkipReport:
    """Counts rows skipped (with reasons and a few examples) so nothing is dropped silently."""

    total: int = 0
    kept: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    examples: list[InputProblem] = field(default_factory=list)
    max_examples: int = 20

    def skip(self, problem: InputProblem, reason: str) -> None:
        self.reasons[reason] = self.reasons.get(reason, 0) + 1
        if len(self.examples) < self.max_examples:
            self.examples.append(problem)

    @property
    def skipped(self) -> int:
        return sum(self.reasons.values())

    def merge(self, other: "SkipReport") -> None:
        self.total += other.total
        self.kept += other.kept
        for k, v in other.reasons.items():
            self.reasons[k] = self.reasons.get(k, 0) + v
        self.examples.extend(other.examples[: max(0, self.max_examples - len(self.examples))])

    def summary(self) -> str:
        if not self.skipped:
            return f"{self.kept} of {self.total} rows kept, none skipped"
        parts = ", ".join(f"{n} {reason}" for reason, n in sorted(self.reasons.items()))
        return f"{self.kept} of {self.total} rows kept; skipped {self.skipped}: {parts}"
