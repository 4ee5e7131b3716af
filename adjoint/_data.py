"""Load the small CSV tables that the included problems fit.

A table is a text file (optionally gzip-compressed, ``.csv.gz``) with ``#``
comment lines anywhere (the provenance header goes at the top), one header row
naming the columns, then one row per observation time. `load_csv_table` checks
the table once, at the boundary, and raises `DataError` with a message that
names the file, the line as an editor numbers it, and the column.
"""

from __future__ import annotations

import csv
import gzip
import math
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from ._errors import DataError

__all__ = ["load_csv_table"]

# Cell contents read as "no value" rather than as a malformed number.
MISSING_TOKENS = frozenset({"", "na", "n/a", "nan", "null", "none", "-"})


def load_csv_table(
    path: str | os.PathLike,
    columns: Iterable[str],
    *,
    time_column: str,
    positive_columns: Iterable[str] = (),
    integer_columns: Iterable[str] = (),
) -> dict:
    """Read a numeric CSV table and check it for a time-series fit.

    Parameters
    ----------
    path : str or path-like
        The file. Lines starting with ``#`` are comments and blank lines are
        skipped; a name ending in ``.gz`` is read through gzip.
    columns : iterable of str
        The columns to return. The file may hold more; those are not checked.
    time_column : str
        The column of observation times, which must increase strictly. It is
        returned whether or not it is listed in `columns`.
    positive_columns : iterable of str, optional
        Columns whose values must be greater than zero (a fit on a log scale).
    integer_columns : iterable of str, optional
        Columns whose values must be whole numbers (years, counts). They are
        still returned as float64.

    Returns
    -------
    dict
        Column name to ``ndarray`` of float64, shape ``(n_rows,)``, in the
        order of the file, plus the key ``"__header__"``: the comment lines
        (text after ``#``, stripped), in order.

    Raises
    ------
    DataError
        If the file does not exist or cannot be read, has no header row or no
        data rows, lacks a required column, or has a value that is missing,
        not a finite number, not a whole number in an integer column, not
        positive in a positive column, or out of order in the time column.
    ValueError
        If `positive_columns` or `integer_columns` name a column that is not
        requested (a mistake in the calling code, not in the file).
    """
    # ---- check the arguments ----
    path = Path(path)
    wanted = list(dict.fromkeys([time_column, *columns]))
    positive = list(positive_columns)
    integer = list(integer_columns)
    for arg_name, names in (
        ("positive_columns", positive),
        ("integer_columns", integer),
    ):
        unknown = [name for name in names if name not in wanted]
        if unknown:
            raise ValueError(
                f"`{arg_name}` names {_names(unknown)}, which are not among the "
                f"requested columns {_names(wanted)}."
            )

    # ---- read the header row and the data rows ----
    header_lines: list[str] = []
    field_names: list[str] | None = None
    field_line = 0
    rows: list[tuple[int, list[str]]] = []
    for line_number, fields, comment in _records(path):
        if comment is not None:
            header_lines.append(comment)
        elif field_names is None:
            field_names = [name.strip() for name in fields]
            field_line = line_number
        else:
            rows.append((line_number, fields))

    if field_names is None:
        raise DataError(f"Data file '{path}' has no header row naming its columns.")
    duplicated = sorted({name for name in field_names if field_names.count(name) > 1})
    if duplicated:
        raise DataError(
            f"Data file '{path}' names column {_names(duplicated)} more than once "
            f"in its header on line {field_line}."
        )
    missing = [name for name in wanted if name not in field_names]
    if missing:
        raise DataError(
            f"Data file '{path}' lacks required column {_names(missing)}; "
            f"the header on line {field_line} has {_names(field_names)}."
        )
    if not rows:
        raise DataError(f"Data file '{path}' has a header row but no data rows.")

    # ---- convert each cell, naming the line and column of a bad one ----
    index = {name: field_names.index(name) for name in wanted}
    values = {name: np.empty(len(rows), dtype=np.float64) for name in wanted}
    for row, (line_number, fields) in enumerate(rows):
        if len(fields) > len(field_names):
            raise DataError(
                f"Data file '{path}', line {line_number} has {len(fields)} fields "
                f"but the header on line {field_line} names {len(field_names)} "
                f"columns."
            )
        for name in wanted:
            text = fields[index[name]].strip() if index[name] < len(fields) else ""
            values[name][row] = _parse_cell(text, path, line_number, name)

    # ---- check signs, whole numbers and the time order ----
    line_numbers = [line_number for line_number, _ in rows]
    for name in integer:
        for line_number, value in zip(line_numbers, values[name]):
            if not float(value).is_integer():
                raise DataError(
                    f"Data file '{path}', line {line_number}, column '{name}' holds "
                    f"{value:g}, but this column must hold whole numbers."
                )
    for name in positive:
        for line_number, value in zip(line_numbers, values[name]):
            if not value > 0:
                raise DataError(
                    f"Data file '{path}', line {line_number}, column '{name}' holds "
                    f"{value:g}, but a log-scale fit needs positive values in this "
                    f"column."
                )
    times = values[time_column]
    for row in range(1, len(rows)):
        if times[row] == times[row - 1]:
            raise DataError(
                f"Data file '{path}', line {line_numbers[row]} repeats "
                f"{time_column} = {times[row]:g} from line {line_numbers[row - 1]}; "
                f"times must increase strictly."
            )
        if times[row] < times[row - 1]:
            raise DataError(
                f"Data file '{path}', line {line_numbers[row]} has "
                f"{time_column} = {times[row]:g} after {times[row - 1]:g} on line "
                f"{line_numbers[row - 1]}; times must increase strictly."
            )

    result: dict = {name: values[name] for name in wanted}
    result["__header__"] = header_lines
    return result


def _records(path: Path) -> Iterator[tuple[int, list[str], str | None]]:
    """Yield ``(line_number, fields, comment)``; `comment` is None for data."""
    if not path.exists():
        raise DataError(f"Data file '{path}' does not exist.")
    if not path.is_file():
        raise DataError(f"Data file '{path}' is not a file.")
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline="") as stream:
            # One line at a time so that the line number is the file's own;
            # quoted fields spanning lines are not supported (numbers only).
            for line_number, line in enumerate(stream, start=1):
                stripped = line.strip()
                if not stripped:
                    continue
                if stripped.startswith("#"):
                    yield line_number, [], stripped[1:].strip()
                    continue
                yield line_number, next(csv.reader([line])), None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(
            f"Data file '{path}' cannot be read as CSV text: {err}."
        ) from err


def _parse_cell(text: str, path: Path, line_number: int, name: str) -> float:
    """Return the cell as a float or raise `DataError` naming where it is."""
    if text.lower() in MISSING_TOKENS:
        raise DataError(
            f"Data file '{path}', line {line_number} has no value in column "
            f"'{name}'; fill it in or delete the row."
        )
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise DataError(
            f"Data file '{path}', line {line_number}, column '{name}' holds "
            f"'{text}', which is not a finite number."
        )
    return value


def _names(names: Iterable[str]) -> str:
    return ", ".join(f"'{name}'" for name in names)
