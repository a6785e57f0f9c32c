"""Read rows (dicts) from JSONL, JSON, Parquet and CSV files, with errors that name the file and line.

`read_rows(path, report, on_error)` yields `(number, row)` pairs. The number is 1-based: the line for
JSONL (blank lines are skipped but still counted in the numbering), the row's position for JSON,
Parquet and CSV (CSV: the first row after the header is row 1). Problems with the whole file (missing,
empty, unknown type, not parseable at all) always raise `DataError`; problems with one row raise it
with `on_error="stop"` and are counted in the `SkipReport` with `on_error="skip"`.
"""

from __future__ import annotations

import codecs
import difflib
import json
from collections.abc import Callable, Iterator
from pathlib import Path

from tunesmith.errors import DataError, SkipReport

SUPPORTED_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")
ON_ERROR = ("stop", "skip")
_REENCODE_HINT = "re-encode the file as UTF-8, e.g. `iconv -f latin1 -t utf-8 in > out`"
_BATCH_ROWS = 1024

Rows = Iterator[tuple[int, dict]]


class RowError(DataError):
    """A problem with one row; `reason` is the short key it is counted under in a SkipReport."""

    def __init__(self, file: str | Path, line: int | None, field: str | None, message: str, reason: str):
        super().__init__(file, line, field, message)
        self.reason = reason


def read_rows(path: str | Path, report: SkipReport, on_error: str = "stop") -> Rows:
    """Yield (1-based line or row number, row dict) for every row of a JSONL/JSON/Parquet/CSV file.

    File-level problems raise at once (before the first row); `report.total` counts every row seen,
    including the ones skipped.
    """
    p = Path(path)
    if on_error not in ON_ERROR:
        raise DataError(p, None, "on_error", f"on_error must be one of {', '.join(ON_ERROR)}, got {on_error!r}")
    _check_file(p)
    opener = _OPENERS[p.suffix.lower()]
    return _counted(opener(p), p, report, skip=on_error == "skip")


def _check_file(p: Path) -> None:
    if not p.exists():
        hint = ""
        if p.parent.is_dir():
            close = difflib.get_close_matches(p.name, [c.name for c in p.parent.iterdir()], n=1, cutoff=0.6)
            hint = f" (did you mean '{p.parent / close[0]}'?)" if close else ""
        raise DataError(p, None, None, f"file not found{hint}")
    if p.is_dir():
        raise DataError(p, None, None, "is a folder; give the path of a data file")
    suffix = p.suffix.lower()
    if suffix not in _OPENERS:
        shown = f"'{p.suffix}'" if p.suffix else "(none)"
        raise DataError(p, None, None, f"unsupported file type {shown}; supported: {', '.join(SUPPORTED_SUFFIXES)}")
    if p.stat().st_size == 0:
        raise DataError(p, None, None, "file is empty")


def _counted(rows: Iterator[tuple[int, dict | RowError]], p: Path, report: SkipReport, skip: bool) -> Rows:
    """Count every row; pass good ones on; raise or count the bad ones."""
    for number, item in rows:
        report.total += 1
        if isinstance(item, RowError):
            if not skip:
                raise item
            report.skip(item.problem, item.reason)
            continue
        if not isinstance(item, dict):
            err = _not_an_object(p, number, item)
            if not skip:
                raise err
            report.skip(err.problem, err.reason)
            continue
        yield number, item


def _not_an_object(p: Path, number: int, value: object) -> RowError:
    kind = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    what = "null" if value is None else kind.get(type(value), type(value).__name__)
    return RowError(p, number, None, f"row is {what}, expected a JSON object like {{\"instruction\": ..., \"output\": ...}}", "not an object")


# ---------------------------------------------------------------- JSONL


def _open_jsonl(p: Path) -> Iterator[tuple[int, dict | RowError]]:
    def rows() -> Iterator[tuple[int, object]]:
        offset, seen = 0, False
        with p.open("rb") as f:
            for lineno, raw in enumerate(f, 1):
                start, offset = offset, offset + len(raw)
                if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
                    raw, start = raw[len(codecs.BOM_UTF8):], start + len(codecs.BOM_UTF8)
                if not raw.strip():
                    continue
                seen = True
                yield lineno, _parse_jsonl_line(p, lineno, raw, start)
        if not seen:
            raise DataError(p, None, None, "file is empty (only blank lines)")

    return rows()


def _parse_jsonl_line(p: Path, lineno: int, raw: bytes, start: int) -> object:
    try:
        text = raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as e:
        return RowError(
            p, lineno, None,
            f"not valid UTF-8: byte 0x{raw[e.start]:02x} at byte offset {start + e.start} of the file "
            f"(byte {e.start + 1} of the line); {_REENCODE_HINT}",
            "not utf-8",
        )
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        near = text[max(0, e.pos - 20): e.pos + 20].strip()
        hint = ""
        if lineno == 1 and text.strip() in ("[", "{"):
            hint = "; the file looks like one multi-line JSON document: name it .json, or write one object per line"
        return RowError(p, lineno, None, f"malformed JSON: {e.msg} at column {e.colno} (near {near!r}){hint}", "malformed json")


# ---------------------------------------------------------------- JSON


def _open_json(p: Path) -> Iterator[tuple[int, object]]:
    data = p.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise DataError(
            p, line, None,
            f"not valid UTF-8: byte 0x{data[e.start]:02x} at byte offset {e.start} of the file (byte {col} of the line); {_REENCODE_HINT}",
        ) from None
    if not text.strip():
        raise DataError(p, None, None, "file is empty")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        hint = "; the file holds more than one JSON value: if it has one object per line, name it .jsonl" if e.msg == "Extra data" else ""
        raise DataError(p, e.lineno, None, f"malformed JSON: {e.msg} at column {e.colno}{hint}") from None
    rows = _unwrap(p, doc)
    if not rows:
        raise DataError(p, None, None, "file holds an empty list: no rows")
    return iter(list(enumerate(rows, 1)))


def _unwrap(p: Path, doc: object) -> list:
    """A JSON file holds a list of rows, or an object with one list in it ({"data": [...]})."""
    if isinstance(doc, list):
        return doc
    if isinstance(doc, dict):
        lists = [k for k, v in doc.items() if isinstance(v, list)]
        if len(lists) == 1:
            return doc[lists[0]]
        if len(lists) > 1:
            raise DataError(p, None, None, f"the top-level object holds several lists ({', '.join(lists)}); expected one list of rows")
        raise DataError(p, None, None, 'the file holds one JSON object; expected a list of rows ([{...}, {...}]) or {"data": [...]}')
    raise DataError(p, None, None, f"the file holds a JSON {type(doc).__name__}; expected a list of rows ([{{...}}, {{...}}])")


# ---------------------------------------------------------------- Parquet


def _open_parquet(p: Path) -> Iterator[tuple[int, object]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(p)
    except (pa.ArrowException, OSError) as e:
        raise DataError(p, None, None, f"not a readable Parquet file: {e}") from None
    if pf.metadata.num_rows == 0:
        raise DataError(p, None, None, "file has no rows")

    def rows() -> Iterator[tuple[int, object]]:
        number = 0
        try:
            for batch in pf.iter_batches(batch_size=_BATCH_ROWS):
                for row in batch.to_pylist():
                    number += 1
                    yield number, row
        except (pa.ArrowException, OSError) as e:
            raise DataError(p, number + 1, None, f"cannot read Parquet data: {e}") from None

    return rows()


# ---------------------------------------------------------------- CSV


def _open_csv(p: Path) -> Iterator[tuple[int, object]]:
    """Stream a CSV with pyarrow; every cell is read as bytes and decoded here, so a bad row is one row."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    ragged: dict[int, RowError] = {}  # data row number -> problem (pyarrow skips the row, we report it)

    def on_invalid(row) -> str:
        number = (row.number - 1) if row.number is not None else -(len(ragged) + 1)  # row.number counts the header
        text = row.text if len(row.text) <= 60 else row.text[:57] + "..."
        ragged[number] = RowError(
            p, number if number > 0 else None, None,
            f"CSV row has {row.actual_columns} values but the header has {row.expected_columns} columns: {text!r}",
            "bad csv row",
        )
        return "skip"

    read = pacsv.ReadOptions(use_threads=False)
    parse = pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=on_invalid)
    try:
        names = pacsv.open_csv(p, read_options=read, parse_options=parse).schema.names
        ragged.clear()  # the first open read only to learn the column names; the second one reports
        convert = pacsv.ConvertOptions(column_types={n: pa.binary() for n in names})
        reader = pacsv.open_csv(p, read_options=read, parse_options=parse, convert_options=convert)
    except pa.ArrowInvalid as e:
        raise DataError(p, None, None, f"cannot parse CSV: {e}") from None

    def rows() -> Iterator[tuple[int, object]]:
        number = 0
        try:
            for batch in reader:
                for raw in batch.to_pylist():
                    number += 1
                    while number in ragged:
                        yield number, ragged.pop(number)
                        number += 1
                    yield number, _decode_csv_row(p, number, raw)
        except pa.ArrowInvalid as e:
            raise DataError(p, number + 1, None, f"cannot parse CSV: {e}") from None
        for n in sorted(ragged, key=abs):
            yield n, ragged[n]
        if number == 0 and not ragged:
            raise DataError(p, None, None, "file has a header but no rows")

    return rows()


def _decode_csv_row(p: Path, number: int, raw: dict) -> dict | RowError:
    row = {}
    for name, value in raw.items():
        if value is None:
            row[name] = None
            continue
        try:
            row[name] = value.decode("utf-8")
        except UnicodeDecodeError as e:
            return RowError(
                p, number, name,
                f"not valid UTF-8: byte 0x{value[e.start]:02x} at byte offset {e.start} of the value; {_REENCODE_HINT}",
                "not utf-8",
            )
    return row


_OPENERS: dict[str, Callable[[Path], Iterator[tuple[int, object]]]] = {
    ".jsonl": _open_jsonl,
    ".json": _open_json,
    ".parquet": _open_parquet,
    ".csv": _open_csv,
}
