"""Parsing uploaded CSV and NPZ files: good files, and every malformed case refused clearly."""

import io
import pickle
import subprocess
import sys
import tracemalloc
import zipfile

import numpy as np
import pytest
import torch

from models.builtin_datasets import boston_csv_bytes
from models.catalogue import load_dataset
from models.datasets import Dataset
from models.errors import AmbiguousDataError, DataFormatError, DatasetTooLargeError
from models.uploads import MAX_CLASSES, dataset_to_npz, parse_csv, parse_npz

# ---- CSV ----


def test_csv_regression():
    ds = parse_csv(b"a,b,price\n1,2,10.5\n3,4.5,20\n5,6,30\n", target="price")
    assert ds.task == "regression" and ds.feature_names == ["a", "b"]
    assert ds.X.tolist() == [[1, 2], [3, 4.5], [5, 6]] and ds.X.dtype == torch.float32
    assert ds.y.tolist() == [[10.5], [20], [30]] and ds.y.dtype == torch.float32


def test_csv_boston_matches_the_registered_dataset():
    parsed = parse_csv(boston_csv_bytes(), target="MEDV")
    registered = load_dataset("boston_housing")
    assert torch.equal(parsed.X, registered.X) and torch.equal(parsed.y, registered.y)


def test_csv_string_target_becomes_named_classes():
    data = b"x, y ,label\n1,2,dog\n3,4,cat\n5,6, dog\n7,8,bird\n"
    ds = parse_csv(data, target="label")
    assert ds.task == "classification" and ds.classes == ["bird", "cat", "dog"]
    assert ds.y.tolist() == [2, 1, 2, 0] and ds.y.dtype == torch.int64
    assert ds.feature_names == ["x", "y"]  # header names are stripped


def test_csv_numeric_target_as_classes_in_numeric_order():
    data = b"x,y\n1,10\n2,2\n3,2.5\n4,10\n"
    ds = parse_csv(data, target="y", task="classification")
    assert ds.classes == ["2", "2.5", "10"] and ds.y.tolist() == [2, 0, 1, 2]


def test_csv_drop_columns_bom_quotes_crlf_and_blank_lines():
    data = '\ufeff"id","x","y"\r\n1,"0.5",1\r\n\r\n2,1.5,0\r\n3,2.5,1\r\n\r\n'.encode()
    ds = parse_csv(data, target="y", drop=["id"])
    assert ds.feature_names == ["x"] and ds.X.flatten().tolist() == [0.5, 1.5, 2.5]
    assert ds.task == "regression"


@pytest.mark.parametrize(
    "data,target,task,message",
    [
        (b"", "y", None, "the file is empty"),
        (b"  \n\n", "y", None, "the file is empty"),
        (b"x,y\n", "y", None, "header row but no data rows"),
        (b"x,y\n1,2\n", "y", None, "1 data row; at least 2"),
        (b"x,y\n1,2\n3,4\n", "z", None, "column 'z' is not in the header; columns: x, y"),
        (b"x,y\n1,2\n3,4\n", "y", "ranking", "task must be one of regression, classification"),
        (b"x,x,y\n1,2,3\n3,4,5\n", "y", None, "line 1: duplicate column name 'x'"),
        (b"x,,y\n1,2,3\n3,4,5\n", "y", None, "line 1: column 2 of the header has no name"),
        (b"x,y\n1,2\n3,4,5\n6,7\n", "y", None, "line 3 has 3 values but the header has 2"),
        (b"x,y\n1,2\n3\n", "y", None, "line 3 has 1 values but the header has 2"),
        (b"x,z,y\n1,2,3\n4,abc,5\n", "y", None, "line 3, column 'z': 'abc' is not a number"),
        (b"x,z,y\n1,2,3\n\n4,,5\n", "y", None, "line 4, column 'z': the value is missing"),
        (b"x,z,y\n1,nan,3\n4,5,6\n", "y", None, "line 2, column 'z': 'nan' is not a finite"),
        (b"x,y\n1,2\n4,inf\n", "y", None, "line 3, column 'y': 'inf' is not a finite"),
        (b"x,y\n1,2\n4,-Infinity\n", "y", "classification", "line 3, column 'y': '-Infinity'"),
        (b"x,y\n1,2\n4,\n", "y", None, "line 3, column 'y': the value is missing"),
        (b"x,y\n1,a\n4,\n", "y", None, "line 3, column 'y': the value is missing"),
        (b"x,y\n1,a\n2,b\n", "y", "regression", "line 2, column 'y': 'a' is not a number"),
        (b"x,y\n1,a\n2,a\n", "y", None, "column 'y' has a single class"),
        (b"y\n1\n2\n", "y", None, "no feature columns are left"),
        (b'x,y\n1,"2\n', "y", None, "line 2: not valid CSV"),
        (b'x,y\n1,2\n3,"4"5\n', "y", None, "line 3: not valid CSV"),
    ],
)
def test_csv_malformed_files_are_refused_with_a_message(data, target, task, message):
    with pytest.raises(DataFormatError, match=message):
        parse_csv(data, target=target, task=task)


def test_csv_target_of_numbers_and_words_asks_for_the_task():
    data = b"x,y\n1,2.5\n2,3\n3,three\n4,4\n"
    with pytest.raises(AmbiguousDataError, match=r"line 4, column 'y': 'three' is not a number"):
        parse_csv(data, target="y")
    with pytest.raises(AmbiguousDataError, match="task=classification"):
        parse_csv(data, target="y")
    classes = parse_csv(data, target="y", task="classification")
    assert classes.task == "classification" and classes.classes == ["2.5", "3", "4", "three"]
    with pytest.raises(DataFormatError, match="line 4, column 'y': 'three' is not a number"):
        parse_csv(data, target="y", task="regression")


def test_csv_not_utf8_names_the_line():
    with pytest.raises(DataFormatError, match=r"not UTF-8 text \(line 3\)"):
        parse_csv(b"x,y\n1,2\n\xff\xfe,3\n", target="y")


def test_csv_too_many_classes():
    rows = "\n".join(f"{i},c{i}" for i in range(MAX_CLASSES + 1))
    with pytest.raises(DataFormatError, match=f"{MAX_CLASSES + 1} classes; at most {MAX_CLASSES}"):
        parse_csv(f"x,y\n{rows}\n".encode(), target="y")


def test_csv_unknown_drop_column():
    with pytest.raises(DataFormatError, match="column 'id' is not in the header"):
        parse_csv(b"x,y\n1,2\n3,4\n", target="y", drop=["id"])


# ---- NPZ ----


def _npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def test_npz_regression_and_1d_features():
    ds = parse_npz(_npz(X=np.arange(4.0), y=np.array([1.0, 2.0, 3.0, 4.0])))
    assert ds.task == "regression" and ds.X.shape == (4, 1) and ds.y.shape == (4, 1)
    multi = parse_npz(_npz(X=np.ones((3, 2)), y=np.zeros((3, 2))))
    assert multi.y.shape == (3, 2) and multi.output_size == 2


def test_npz_integer_labels_become_classes_named_by_value():
    ds = parse_npz(_npz(X=np.zeros((4, 2, 3, 3), np.uint8), y=np.array([7, 3, 7, 5])))
    assert ds.task == "classification" and ds.classes == ["3", "5", "7"]
    assert ds.y.tolist() == [2, 0, 2, 1] and ds.input_shape == (2, 3, 3)


def test_npz_string_labels_and_given_names():
    ds = parse_npz(_npz(X=np.zeros((3, 2)), y=np.array(["b", "a", "b"])))
    assert ds.classes == ["a", "b"] and ds.y.tolist() == [1, 0, 1]
    named = parse_npz(
        _npz(
            X=np.zeros((3, 2)),
            y=np.array([0, 2, 1]),
            classes=np.array(["cat", "dog", "emu"]),
            feature_names=np.array(["w", "h"]),
        )
    )
    assert named.classes == ["cat", "dog", "emu"] and named.y.tolist() == [0, 2, 1]
    assert named.feature_names == ["w", "h"]


def test_npz_task_overrides_the_dtype():
    as_classes = parse_npz(_npz(X=np.zeros((3, 1)), y=np.array([0.0, 1.0, 0.5])), "classification")
    assert as_classes.classes == ["0", "0.5", "1"]
    as_numbers = parse_npz(_npz(X=np.zeros((3, 1)), y=np.array([0, 1, 5])), task="regression")
    assert as_numbers.task == "regression" and as_numbers.y.flatten().tolist() == [0, 1, 5]


def test_npz_object_array_is_refused_without_unpickling(monkeypatch):
    data = _npz(X=np.array([{"a": 1}, None], dtype=object), y=np.array([1.0, 2.0]))

    def no_unpickling(*args, **kwargs):
        raise AssertionError("pickle must never be loaded")

    monkeypatch.setattr(pickle, "loads", no_unpickling)
    monkeypatch.setattr(pickle, "load", no_unpickling)
    monkeypatch.setattr(pickle, "Unpickler", no_unpickling)
    with pytest.raises(DataFormatError, match="array 'X' holds Python objects"):
        parse_npz(data)


@pytest.mark.parametrize(
    "arrays,message",
    [
        ({"y": np.zeros(3)}, "no array 'X'; found: y"),
        ({"X": np.zeros((3, 2))}, "no array 'y'; found: X"),
        ({"X": np.zeros((3, 2)), "y": np.zeros(4)}, "X has 3 samples but y has 4"),
        ({"X": np.zeros((3, 2)), "y": np.float64(1.0)}, "X has 3 samples but y has 0"),
        ({"X": np.zeros((1, 2)), "y": np.zeros(1)}, "1 samples; at least 2"),
        ({"X": np.array(["a", "b"]), "y": np.zeros(2)}, "X must be numeric"),
        ({"X": np.zeros(2, complex), "y": np.zeros(2)}, "X must be numeric"),
        ({"X": np.float64(3.0), "y": np.zeros(2)}, "one row per sample"),
        ({"X": np.array([[1.0], [np.nan]]), "y": np.zeros(2)}, "X holds NaN or inf .* index 1"),
        ({"X": np.array([[1.0], [np.inf]]), "y": np.zeros(2)}, "X holds NaN or inf"),
        ({"X": np.zeros((2, 1)), "y": np.array([1.0, np.nan])}, "y holds NaN or inf"),
        ({"X": np.zeros((2, 1)), "y": np.zeros(2, complex)}, "y must be numeric or strings"),
        ({"X": np.zeros((2, 1)), "y": np.array([1, 1])}, "y has a single class"),
        ({"X": np.zeros((2, 1)), "y": np.zeros((2, 2), int)}, "one label per sample"),
        ({"X": np.zeros((2, 1)), "y": np.zeros((2, 1, 1))}, r"\(N,\) or \(N, n_targets\)"),
        ({"X": np.zeros((2, 100_001), np.uint8), "y": np.zeros(2)}, "at most 100000"),
        ({"X": np.zeros((2, 1)), "y": np.arange(2), "classes": np.array([1, 2])}, "unicode"),
        ({"X": np.zeros((2, 1)), "y": np.array([0, 3]), "classes": np.array(["a", "b"])}, "0..1"),
        ({"X": np.zeros((2, 1)), "y": np.array(["a", "c"]), "classes": np.array(["a", "b"])}, "c"),
        ({"X": np.zeros((2, 1)), "y": np.arange(2), "feature_names": np.array(["a", "b"])}, "2 n"),
    ],
)
def test_npz_malformed_files_are_refused_with_a_message(arrays, message):
    with pytest.raises(DataFormatError, match=message):
        parse_npz(_npz(**arrays))


def test_npz_string_target_refused_for_regression():
    with pytest.raises(DataFormatError, match="y holds strings"):
        parse_npz(_npz(X=np.zeros((2, 1)), y=np.array(["a", "b"])), task="regression")


def test_npz_too_many_classes():
    y = np.arange(MAX_CLASSES + 1)
    with pytest.raises(DataFormatError, match=f"at most {MAX_CLASSES}"):
        parse_npz(_npz(X=np.zeros((len(y), 1)), y=y))


@pytest.mark.parametrize(
    "data,message",
    [
        (b"x,y\n1,2\n", "not an NPZ file"),
        (b"", "not an NPZ file"),
        (b"\x93NUMPY" + b"\x00" * 50, "not an NPZ file"),
    ],
)
def test_npz_not_a_zip(data, message):
    with pytest.raises(DataFormatError, match=message):
        parse_npz(data)


def test_npz_member_that_is_not_an_array():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("X.npy", b"not an array")
        zf.writestr("y.npy", b"nor this")
    with pytest.raises(DataFormatError, match="array 'X' is not a valid .npy array"):
        parse_npz(buffer.getvalue())


def test_npz_header_declaring_more_data_than_stored_is_refused_before_reading():
    member = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        member, {"descr": "<f8", "fortran_order": False, "shape": (10**9,)}
    )
    member.write(np.zeros(4).tobytes())
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("X.npy", member.getvalue())
        zf.writestr("y.npy", member.getvalue())
    with pytest.raises(DataFormatError, match="array 'X' declares 8000000000 bytes"):
        parse_npz(buffer.getvalue())


# ---- round trip ----


@pytest.mark.parametrize("name", ["boston_housing", "digits28", "synthetic_classification"])
def test_dataset_to_npz_round_trips_exactly(name):
    ds = load_dataset(name, {"n_samples": 50} if name.startswith("synthetic") else None)
    back = parse_npz(dataset_to_npz(ds))
    assert back.task == ds.task and back.classes == ds.classes
    assert back.feature_names == ds.feature_names
    assert torch.equal(back.X, ds.X) and torch.equal(back.y, ds.y)
    assert back.X.dtype == ds.X.dtype and back.y.dtype == ds.y.dtype


def test_round_trip_keeps_classes_absent_from_the_data_and_writes_no_objects():
    ds = Dataset(torch.rand(3, 2), torch.tensor([0, 2, 0]), "classification", ["a", "b", "c"])
    data = dataset_to_npz(ds)
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        assert all(not npz[name].dtype.hasobject for name in npz.files)
    back = parse_npz(data)
    assert back.classes == ["a", "b", "c"] and back.y.tolist() == [0, 2, 0]


# ---- bounded memory: what a file declares is checked before it is read ----


def npz_bomb(n_bytes: int, **extra: np.ndarray) -> bytes:
    """An NPZ whose X declares `n_bytes` of float64 zeros; deflated, about 1/1000 of that."""
    rows = max(n_bytes // 8000, 2)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("X.npy", "w", force_zip64=True) as member:
            header = {"descr": "<f8", "fortran_order": False, "shape": (rows, 1000)}
            np.lib.format.write_array_header_1_0(member, header)
            chunk = bytes(8000 * 100)
            for _ in range(rows // 100):
                member.write(chunk)
            member.write(bytes(8000 * (rows % 100)))
        for name, array in {"y": np.zeros(rows), **extra}.items():
            with archive.open(f"{name}.npy", "w") as member:
                np.save(member, array)
    return buffer.getvalue()


def test_an_npz_bomb_is_refused_from_its_headers_without_allocating():
    bomb = npz_bomb(64 * 1024 * 1024)
    assert len(bomb) < 200_000
    tracemalloc.start()
    try:
        with pytest.raises(DatasetTooLargeError, match="TRAINSERVE_MAX_DATASET_BYTES"):
            parse_npz(bomb, max_bytes=16 * 1024 * 1024)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024
    assert len(parse_npz(bomb, max_bytes=80 * 1024 * 1024)) == 64 * 1024 * 1024 // 8000


def test_name_arrays_are_bounded_before_they_become_lists():
    many = np.array([f"c{i}" for i in range(MAX_CLASSES + 1)])
    with pytest.raises(DataFormatError, match=f"at most {MAX_CLASSES} names"):
        parse_npz(npz_bomb(16000, classes=many))
    long = np.array(["x" * 5000, "y"])
    with pytest.raises(DataFormatError, match="characters"):
        parse_npz(npz_bomb(16000, feature_names=long))


def test_csv_values_beyond_the_limit_are_refused():
    rows = "".join(f"{i},{i}.5,{i % 7}\n" for i in range(20_000))
    with pytest.raises(DatasetTooLargeError, match="TRAINSERVE_MAX_DATASET_BYTES"):
        parse_csv(f"a,b,y\n{rows}".encode(), target="y", max_bytes=100_000)


CSV_MEMORY_PROBE = """
from models.uploads import parse_csv
rows = "".join(f"{i},{i * 0.5},{i % 13},{i * 3},{i % 101}.25,{i % 5}\\n" for i in range(600_000))
data = f"a,b,c,d,e,y\\n{rows}".encode()
del rows
def status(field):
    line = next(l for l in open("/proc/self/status") if l.startswith(field + ":"))
    return int(line.split()[1]) * 1024
open("/proc/self/clear_refs", "w").write("5")  # the peak (VmHWM) starts again from here
before = status("VmRSS")
dataset = parse_csv(data, target="y", task="regression")
print(len(data), status("VmHWM") - before, len(dataset))
"""


def test_csv_parsing_costs_a_small_multiple_of_the_file():
    """Peak memory of parsing a ~20 MB CSV, in a process of its own (its peak RSS is reset first):
    lists of cells cost 21 times the file (measured); typed blocks of rows, 2.5 times."""
    out = subprocess.run(
        [sys.executable, "-c", CSV_MEMORY_PROBE], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    size, growth, samples = (int(v) for v in out.stdout.split())
    assert samples == 600_000 and size > 19_000_000
    assert growth < 4 * size, f"parsing grew the process by {growth / size:.1f}x the file"
