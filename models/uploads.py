"""Reading user files as datasets: CSV with a header row, NPZ with arrays `X` and `y`.

Every problem is a DataFormatError whose message says where (CSV: 1-based file line, the
header being line 1, and column name) and what is wrong. NPZ files are read with
`allow_pickle=False`: an object array is refused, never unpickled.

Targets: strings become classes (sorted unique names -> indices 0..K-1). Numbers are a
regression target unless `task="classification"` (or, in NPZ, an integer dtype), in which
case each distinct value is a class named by its value ("3", "0.5"), in numeric order. A CSV
target of numbers and words, with no `task`, is refused (AmbiguousDataError): it is as likely a
typo in a numeric column as a set of class names.
"""

from __future__ import annotations

import csv
import io
import math
import zipfile
import zlib
from array import array
from collections.abc import Sequence

import numpy as np
import torch

from models.choices import TASKS
from models.datasets import Dataset
from models.errors import AmbiguousDataError, DataFormatError, DatasetTooLargeError

FLOAT32_MAX = float(np.finfo(np.float32).max)
MAX_CLASSES = 1000
MAX_FEATURES = 100_000  # elements per sample
MIN_SAMPLES = 2
MAX_DATASET_BYTES = 512 * 1024 * 1024  # values of one dataset once read (uncompressed)
MAX_NAME_CHARS = 1000  # characters of one class or feature name
CSV_CHUNK_ROWS = 8192


def parse_csv(
    data: bytes,
    target: str,
    task: str | None = None,
    drop: list[str] | None = None,
    max_bytes: int = MAX_DATASET_BYTES,
) -> Dataset:
    """A dataset from CSV bytes: header row, numeric feature columns, the `target` column.

    `drop` names columns to leave out. Blank lines are skipped; the target column decides
    the task unless `task` is given (see the module docstring). Rows are turned into float64
    blocks of CSV_CHUNK_ROWS as they are read, so memory stays a small multiple of the file
    (Python lists of cells cost about 35 times the file); more than `max_bytes` of features
    raises DatasetTooLargeError.
    """
    _check_task(task)
    if not data or data.isspace():
        raise DataFormatError("the file is empty")
    try:
        return _parse_csv(data, target, task, drop, max_bytes)
    except UnicodeDecodeError:  # decoded as it is read; the whole decode says where
        _decode(data)
        raise


def _parse_csv(
    data: bytes, target: str, task: str | None, drop: list[str] | None, max_bytes: int
) -> Dataset:
    text = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig", newline="")
    reader = csv.reader(text, strict=True)
    header = _check_header([cell.strip() for cell in _first_row(reader)])
    columns = {name: i for i, name in enumerate(header)}
    for name in [target, *(drop or [])]:
        if name not in columns:
            raise DataFormatError(
                f"column '{name}' is not in the header; columns: {', '.join(header)}"
            )
    features = [n for n in header if n != target and n not in set(drop or [])]
    if not features:
        raise DataFormatError("no feature columns are left besides the target")
    if len(features) > MAX_FEATURES:
        raise DataFormatError(f"{len(features)} feature columns; at most {MAX_FEATURES}")
    cols, target_col = [columns[n] for n in features], columns[target]
    blocks, y_cells, lines = [], [], array("l")  # line numbers, for messages: 8 bytes a row
    cells: list[list[str]] = []
    try:
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):  # a blank line
                continue
            if len(row) != len(header):
                raise DataFormatError(
                    f"line {reader.line_num} has {len(row)} values but the header has "
                    f"{len(header)} columns"
                )
            cells.append([row[c] for c in cols])
            y_cells.append(row[target_col].strip())
            lines.append(reader.line_num)
            if len(cells) == CSV_CHUNK_ROWS:
                blocks.append(_numeric_block(cells, lines[-len(cells) :], features))
                cells.clear()
                _check_size(len(lines) * len(features) * 8, max_bytes)
    except csv.Error as e:
        raise DataFormatError(f"line {reader.line_num}: not valid CSV ({e})") from None
    if cells:
        blocks.append(_numeric_block(cells, lines[-len(cells) :], features))
    _check_rows(len(lines))
    X = np.concatenate(blocks)
    del blocks
    y, classes = _csv_target(y_cells, lines, target, task)
    return _dataset(X, y, classes, features)


def _decode(data: bytes) -> str:
    if not data.strip():
        raise DataFormatError("the file is empty")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataFormatError(f"the file is not UTF-8 text (line {line})") from None


def _first_row(reader) -> list[str]:
    try:
        for row in reader:
            if row and not (len(row) == 1 and not row[0].strip()):
                return row
    except csv.Error as e:
        raise DataFormatError(f"line {reader.line_num}: not valid CSV ({e})") from None
    raise DataFormatError("the file is empty")


def _check_rows(n_rows: int) -> None:
    if not n_rows:
        raise DataFormatError("the file has a header row but no data rows")
    if n_rows < MIN_SAMPLES:
        raise DataFormatError(f"the file has {n_rows} data row; at least {MIN_SAMPLES} are needed")


def _check_size(nbytes: int, max_bytes: int) -> None:
    if nbytes > max_bytes:
        raise DatasetTooLargeError(
            f"the dataset holds over {max_bytes} bytes of values once read "
            "(TRAINSERVE_MAX_DATASET_BYTES); send fewer samples or features"
        )


def _check_header(header: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    for i, name in enumerate(header, start=1):
        if not name:
            raise DataFormatError(f"line 1: column {i} of the header has no name")
        if name in seen:
            raise DataFormatError(
                f"line 1: duplicate column name '{name}' (columns {seen[name]} and {i})"
            )
        seen[name] = i
    return header


def _numeric_block(cells: list[list[str]], lines: list[int], names: list[str]) -> np.ndarray:
    """Cells as float32, checked in float64; on failure, find the first bad cell to name it."""
    try:
        block = np.array(cells, dtype=np.float64)
        if np.isfinite(block).all() and np.abs(block).max(initial=0.0) <= FLOAT32_MAX:
            return block.astype(np.float32)
    except ValueError:
        pass
    for row, line in zip(cells, lines, strict=True):
        for cell, name in zip(row, names, strict=True):
            _cell_value(cell, line, name)
    raise AssertionError("unreachable: a bad cell was expected")  # pragma: no cover


def _cell_value(cell: str, line: int, column: str) -> float:
    text = cell.strip()
    if not text:
        raise DataFormatError(f"line {line}, column '{column}': the value is missing")
    try:
        value = float(text)
    except ValueError:
        raise DataFormatError(f"line {line}, column '{column}': '{text}' is not a number") from None
    if not math.isfinite(value):
        raise DataFormatError(
            f"line {line}, column '{column}': '{text}' is not a finite number (NaN or inf)"
        )
    if abs(value) > FLOAT32_MAX:
        raise DataFormatError(
            f"line {line}, column '{column}': '{text}' is beyond the float32 range (about 3.4e38)"
        )
    return value


def _csv_target(
    cells: list[str], lines: Sequence[int], target: str, task: str | None
) -> tuple[np.ndarray, list[str] | None]:
    values = _all_numbers(cells)
    if values is not None:  # the common case, at 8 bytes a value
        if task == "classification":
            return _numeric_classes(values, f"column '{target}'")
        return values.reshape(-1, 1), None
    is_number = [_is_number(c) for c in cells]
    numeric = all(is_number)
    words = [(ln, c) for ln, c, n in zip(lines, cells, is_number, strict=True) if c and not n]
    if task is None and words and any(is_number):
        (line, text), first = words[0], cells[is_number.index(True)]
        raise AmbiguousDataError(
            f"line {line}, column '{target}': '{text}' is not a number, but other values are "
            f"(such as '{first}'); send task=classification to treat every value as a class "
            "name, or task=regression after fixing the value"
        )
    if task == "regression" or numeric:
        values = [_cell_value(c, ln, target) for c, ln in zip(cells, lines, strict=True)]
        if task == "classification":
            return _numeric_classes(np.array(values), f"column '{target}'")
        return np.array(values).reshape(-1, 1), None
    if "" in cells:
        line = lines[cells.index("")]
        raise DataFormatError(f"line {line}, column '{target}': the value is missing")
    return _string_classes(np.array(cells), f"column '{target}'")


def _all_numbers(cells: list[str]) -> np.ndarray | None:
    """The cells as float64 when every one is a finite number in float32's range, else None
    (the cell-by-cell path then names the first bad one)."""
    try:
        values = np.array(cells, dtype=np.float64)
    except ValueError:
        return None
    if np.isfinite(values).all() and np.abs(values).max(initial=0.0) <= FLOAT32_MAX:
        return values
    return None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _numeric_classes(values: np.ndarray, what: str) -> tuple[np.ndarray, list[str]]:
    """Class indices for numeric labels, classes named by value in numeric order."""
    if not np.isfinite(values).all():
        raise DataFormatError(f"{what} holds NaN or inf; class labels must be finite")
    uniques, indices = np.unique(values, return_inverse=True)
    names = [_number_name(v) for v in uniques]
    return indices.reshape(-1), _check_classes(names, what)


def _string_classes(values: np.ndarray, what: str) -> tuple[np.ndarray, list[str]]:
    uniques, indices = np.unique(values, return_inverse=True)
    return indices.reshape(-1), _check_classes([str(u) for u in uniques], what)


def _number_name(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _check_classes(names: list[str], what: str) -> list[str]:
    if len(names) < 2:
        raise DataFormatError(f"{what} has a single class; classification needs at least 2")
    if len(names) > MAX_CLASSES:
        raise DataFormatError(
            f"{what} has {len(names)} classes; at most {MAX_CLASSES} are supported"
            " (use task 'regression' for a numeric target)"
        )
    if len(set(names)) != len(names):
        raise DataFormatError(f"{what}: class names must be unique")
    return names


def _check_task(task: str | None) -> None:
    if task is not None and task not in TASKS:
        raise DataFormatError(f"task must be one of {', '.join(TASKS)}, got '{task}'")


def _dataset(
    X: np.ndarray, y: np.ndarray, classes: list[str] | None, features: list[str] | None
) -> Dataset:
    task = "regression" if classes is None else "classification"
    y_t = torch.from_numpy(
        np.ascontiguousarray(y, dtype=np.float32 if classes is None else np.int64)
    )
    return Dataset(torch.from_numpy(np.ascontiguousarray(X)), y_t, task, classes, features)


# ---- NPZ ----


NPZ_ARRAYS = ("X", "y", "classes", "feature_names")


def parse_npz(data: bytes, task: str | None = None, max_bytes: int = MAX_DATASET_BYTES) -> Dataset:
    """A dataset from NPZ bytes with arrays `X` (N, ...) and `y` (N,) or (N, k).

    A 1-D X is one feature per sample, (N, 1). Optional `classes` (names of classes
    0..K-1, for integer y) and `feature_names` are unicode string arrays; others are ignored.
    Every array's header (shape, dtype) is read and checked before any array is: together
    they may hold at most `max_bytes` (DatasetTooLargeError), so a small file that would
    decompress to gigabytes is refused without allocating them.
    """
    _check_task(task)
    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise DataFormatError("not an NPZ file (a zip archive of .npy arrays, see numpy.savez)")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            headers = {n: _npz_header(npz, n) for n in NPZ_ARRAYS if n in npz.files or n in "Xy"}
            _check_size(
                sum(math.prod(shape) * dtype.itemsize for shape, dtype in headers.values()),
                max_bytes,
            )
            for name in ("classes", "feature_names"):
                if name in headers:
                    _check_names_header(name, *headers[name])
            arrays = {name: _npz_read(npz, name) for name in headers}
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, RuntimeError) as e:
        raise DataFormatError(f"the NPZ file is damaged: {e}") from None
    X = _npz_features(arrays["X"])
    y = arrays["y"]
    if y.ndim == 0 or len(X) != len(y):
        raise DataFormatError(f"X has {len(X)} samples but y has {len(y) if y.ndim else 0}")
    if len(X) < MIN_SAMPLES:
        raise DataFormatError(f"the file has {len(X)} samples; at least {MIN_SAMPLES} are needed")
    names = _string_list(arrays.get("classes"), "classes")
    y, classes = _npz_target(y, task, names)
    features = _string_list(arrays.get("feature_names"), "feature_names")
    if features is not None and len(features) != int(np.prod(X.shape[1:])):
        raise DataFormatError(
            f"feature_names has {len(features)} names but samples have "
            f"{int(np.prod(X.shape[1:]))} features"
        )
    return _dataset(X, y, classes, features)


def _npz_header(npz: np.lib.npyio.NpzFile, name: str) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of array `name` from its .npy header: no objects, no more bytes than the
    archive says it stores."""
    member = f"{name}.npy"
    if member not in npz.zip.namelist():
        found = ", ".join(npz.files) or "none"
        raise DataFormatError(f"the NPZ file has no array '{name}'; found: {found}")
    with npz.zip.open(member) as f:
        try:
            version = np.lib.format.read_magic(f)
            read_header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, _, dtype = read_header(f)
        except ValueError as e:
            raise DataFormatError(f"array '{name}' is not a valid .npy array: {e}") from None
    if dtype.hasobject:
        raise DataFormatError(
            f"array '{name}' holds Python objects (pickled data), which are refused; "
            "save numeric or string arrays"
        )
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > npz.zip.getinfo(member).file_size:
        raise DataFormatError(f"array '{name}' declares {nbytes} bytes, more than the file stores")
    return shape, dtype


def _check_names_header(name: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
    """Name arrays become Python lists: bound them before they are read."""
    limit = MAX_CLASSES if name == "classes" else MAX_FEATURES
    if dtype.kind != "U" or len(shape) != 1:
        raise DataFormatError(f"'{name}' must be a 1-D array of unicode strings")
    if shape[0] > limit or dtype.itemsize > 4 * MAX_NAME_CHARS:
        raise DataFormatError(
            f"'{name}' holds {shape[0]} names of up to {dtype.itemsize // 4} characters; at most "
            f"{limit} names of {MAX_NAME_CHARS} characters"
        )


def _npz_read(npz: np.lib.npyio.NpzFile, name: str) -> np.ndarray:
    try:
        return npz[name]
    except ValueError as e:
        raise DataFormatError(f"array '{name}' cannot be read: {e}") from None


def _npz_features(X: np.ndarray) -> np.ndarray:
    if X.dtype.kind not in "biuf":
        raise DataFormatError(f"X must be numeric, got dtype {X.dtype}")
    if X.ndim == 0:
        raise DataFormatError("X must have one row per sample, got a single value")
    X = X.reshape(-1, 1) if X.ndim == 1 else X
    if 0 in X.shape[1:]:
        raise DataFormatError(f"X has shape {X.shape}: its samples hold no values")
    if int(np.prod(X.shape[1:])) > MAX_FEATURES:
        raise DataFormatError(
            f"samples have {int(np.prod(X.shape[1:]))} values; at most {MAX_FEATURES}"
        )
    X = X.astype(np.float32)
    bad = np.flatnonzero(~np.isfinite(X.reshape(len(X), -1)).all(axis=1))
    if len(bad):
        raise DataFormatError(f"X holds NaN or inf in {len(bad)} samples, first at index {bad[0]}")
    return X


def _npz_target(
    y: np.ndarray, task: str | None, names: list[str] | None
) -> tuple[np.ndarray, list[str] | None]:
    if y.dtype.kind in "SU":
        if task == "regression":
            raise DataFormatError("y holds strings; a regression target must be numeric")
        labels = _column(y, "y").astype(str)
        return _string_classes(labels, "y") if names is None else _names_to_indices(labels, names)
    if y.dtype.kind not in "biuf":
        raise DataFormatError(f"y must be numeric or strings, got dtype {y.dtype}")
    if not np.isfinite(y).all():
        raise DataFormatError("y holds NaN or inf")
    integer = y.dtype.kind in "biu"
    if task == "regression" or (task is None and not integer and names is None):
        if y.ndim not in (1, 2):
            raise DataFormatError(f"y must be (N,) or (N, n_targets), got shape {y.shape}")
        return y.reshape(len(y), -1).astype(np.float32), None
    y = _column(y, "y")
    if names is not None:
        return _indices_for_names(y, names)
    return _numeric_classes(y.astype(np.float64), "y")


def _names_to_indices(labels: np.ndarray, names: list[str]) -> tuple[np.ndarray, list[str]]:
    """String labels mapped to their position in the given class names."""
    position = {n: i for i, n in enumerate(_check_classes(names, "classes"))}
    unknown = sorted(set(labels.tolist()) - set(position))
    if unknown:
        raise DataFormatError(f"y has labels not in 'classes': {', '.join(unknown[:10])}")
    return np.array([position[v] for v in labels.tolist()], dtype=np.int64), names


def _indices_for_names(y: np.ndarray, names: list[str]) -> tuple[np.ndarray, list[str]]:
    """y holds class indices into the given names."""
    if not (np.equal(np.mod(y, 1), 0).all() and y.min() >= 0 and y.max() < len(names)):
        raise DataFormatError(f"with 'classes' given, y must hold indices 0..{len(names) - 1}")
    return y.astype(np.int64), _check_classes(names, "classes")


def _column(y: np.ndarray, what: str) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] == 1:
        return y[:, 0]
    if y.ndim != 1:
        raise DataFormatError(f"{what} must be one label per sample, got shape {y.shape}")
    return y


def _string_list(values: np.ndarray | None, what: str) -> list[str] | None:
    if values is None:
        return None
    if values.dtype.kind != "U" or values.ndim != 1:
        raise DataFormatError(f"'{what}' must be a 1-D array of unicode strings")
    return [str(v) for v in values]


def dataset_to_npz(ds: Dataset) -> bytes:
    """NPZ bytes of `ds` (no object arrays) that `parse_npz` reads back identically."""
    arrays = {"X": ds.X.detach().cpu().numpy(), "y": ds.y.detach().cpu().numpy()}
    if ds.task == "classification":
        arrays["classes"] = np.array(ds.classes, dtype=np.str_)
    if ds.feature_names is not None:
        arrays["feature_names"] = np.array(ds.feature_names, dtype=np.str_)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()
