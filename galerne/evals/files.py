"""Reading benchmark files as their publishers ship them: CSV, JSON arrays, JSON Lines, optionally gzipped.

Every problem is an `EvalDataError` naming the file, the line and what was expected, so that
`galerne eval run` can print one line instead of a traceback.

Example::

    rows = read_records(Path("HumanEval.jsonl.gz"))      # [{"task_id": ..., "prompt": ...}, ...]
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from galerne.errors import EvalDataError

Record = Mapping[str, Any]


def read_text(path: Path) -> str:
    """The file's text (gunzipped when it ends in .gz), or a clear error."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise EvalDataError(f"data file not found: {path}") from exc
    except IsADirectoryError as exc:
        raise EvalDataError(f"{path} is a directory; this task reads one file") from exc
    except OSError as exc:
        raise EvalDataError(f"cannot read {path}: {exc.strerror}") from exc
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise EvalDataError(f"{path} is not a valid gzip file") from exc
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise EvalDataError(f"{path} is not UTF-8 text (byte {exc.start})") from exc


def read_records(path: Path) -> list[Record]:
    """JSON objects from a JSON Lines file, or from a file holding one JSON array (the okapi layout)."""
    text = read_text(path)
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise EvalDataError(f"{path}: not valid JSON at line {exc.lineno}: {exc.msg}") from exc
        records = list(data)
    else:
        records = list(_json_lines(path, text))
    for number, record in enumerate(records, start=1):
        if not isinstance(record, dict):
            raise EvalDataError(f"{path}: record {number} is not a JSON object")
    if not records:
        raise EvalDataError(f"{path} holds no records")
    return records


def _json_lines(path: Path, text: str) -> Iterator[Any]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError as exc:
            raise EvalDataError(f"{path}:{number}: not a JSON line ({exc.msg}); expected JSON Lines") from exc


def read_csv_rows(path: Path, num_columns: int) -> list[list[str]]:
    """Rows of a header-less CSV with exactly `num_columns` columns (MMLU's question,A,B,C,D,answer)."""
    rows = list(csv.reader(io.StringIO(read_text(path))))
    rows = [row for row in rows if row]
    for number, row in enumerate(rows, start=1):
        if len(row) != num_columns:
            raise EvalDataError(
                f"{path}:{number}: {len(row)} columns, expected {num_columns} (question,A,B,C,D,answer)"
            )
    if not rows:
        raise EvalDataError(f"{path} holds no rows")
    return rows


def field(record: Record, name: str, path: Path, number: int) -> Any:
    """A required field, or an error naming the record and the fields it does have."""
    if name not in record:
        raise EvalDataError(
            f"{path}: record {number} has no {name!r} field (it has: {', '.join(sorted(record)) or 'nothing'})"
        )
    return record[name]


def text_field(record: Record, name: str, path: Path, number: int) -> str:
    value = field(record, name, path, number)
    if not isinstance(value, str):
        raise EvalDataError(f"{path}: record {number}: {name!r} must be a string")
    return value
