"""The dataset registry and the built-in datasets, on real data (nothing is downloaded)."""

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.builtin_datasets import BOSTON_SHA256, boston_csv_bytes
from models.catalogue import get_dataset, list_datasets, load_dataset
from models.datasets import DATASETS, Dataset, DatasetShape, register_dataset
from models.errors import CatalogueError, DatasetUnavailableError
from models.params import bounded

BUILTIN = {
    "boston_housing",
    "diabetes",
    "digits",
    "digits28",
    "mnist",
    "fashion_mnist",
    "synthetic_regression",
    "synthetic_classification",
}


# ---- Dataset ----


def test_dataset_properties_for_regression_and_classification():
    reg = Dataset(torch.zeros(5, 3), torch.arange(5.0), "regression")
    assert reg.y.shape == (5, 1) and reg.y.dtype == torch.float32  # a 1-D y becomes (N, 1)
    assert (len(reg), reg.input_shape, reg.n_classes, reg.output_size) == (5, (3,), None, 1)
    clf = Dataset(torch.zeros(4, 1, 2, 2), torch.tensor([0, 2, 1, 2]), "classification")
    assert clf.classes == ["0", "1", "2"] and clf.n_classes == 3 and clf.output_size == 3
    assert clf.input_shape == (1, 2, 2) and clf.y.dtype == torch.int64


def test_dataset_refuses_inconsistent_tensors():
    with pytest.raises(ValueError, match="one row per y"):
        Dataset(torch.zeros(5, 3), torch.zeros(4, 1), "regression")
    with pytest.raises(ValueError, match="integer"):
        Dataset(torch.zeros(2, 3), torch.tensor([0.5, 1.0]), "classification")
    with pytest.raises(ValueError, match="0..1"):
        Dataset(torch.zeros(2, 3), torch.tensor([0, 2]), "classification", ["a", "b"])
    with pytest.raises(ValueError, match="task"):
        Dataset(torch.zeros(2, 3), torch.zeros(2, 1), "ranking")


# ---- registry ----


def test_builtin_datasets_are_listed_sorted():
    names = [spec.name for spec in list_datasets()]
    assert set(names) >= BUILTIN and names == sorted(names)


def test_unknown_dataset_lists_the_known_names():
    with pytest.raises(CatalogueError, match="'imagenet' is unknown; known: .*boston_housing"):
        get_dataset("imagenet")


@dataclass(frozen=True)
class _TinyParams:
    size: int = bounded(3, 1, 10)


def test_register_dataset_refuses_duplicates_and_validates_params(monkeypatch):
    monkeypatch.setattr(DATASETS, "_entries", dict(DATASETS._entries))

    @register_dataset(
        "tiny",
        task="regression",
        description="d",
        source="s",
        config_cls=_TinyParams,
        shape=lambda cfg: DatasetShape(cfg.size, (1,), None),
    )
    def tiny(config, data_dir, allow_download):
        return Dataset(torch.ones(config.size, 1), torch.zeros(config.size, 1), "regression")

    assert len(load_dataset("tiny", {"size": 7})) == 7
    assert get_dataset("tiny").info(params={"size": 4}).n_samples == 4
    with pytest.raises(CatalogueError, match=r"dataset 'tiny': parameter 'size' must be between"):
        load_dataset("tiny", {"size": 11})
    with pytest.raises(CatalogueError, match="dataset 'tiny' has no parameter 'colour'"):
        load_dataset("tiny", {"colour": 1})
    with pytest.raises(ValueError, match="already registered"):
        register_dataset(
            "boston_housing",
            task="regression",
            description="d",
            source="s",
            config_cls=_TinyParams,
            shape=lambda cfg: DatasetShape(1, (1,), None),
        )(tiny)


def test_info_gives_static_metadata_without_loading(monkeypatch, tmp_path):
    def fail(*args):
        raise AssertionError("info() must not load data")

    registry = {n: dataclasses.replace(s, loader=fail) for n, s in DATASETS._entries.items()}
    monkeypatch.setattr(DATASETS, "_entries", registry)
    infos = {spec.name: spec.info(tmp_path) for spec in list_datasets()}
    assert infos["boston_housing"].n_samples == 506
    assert infos["boston_housing"].input_shape == (13,)
    assert infos["digits28"].input_shape == (1, 28, 28) and infos["digits28"].n_classes == 10
    assert infos["synthetic_classification"].to_dict()["input_shape"] == [20]
    assert infos["mnist"].params == {"train": True, "max_samples": 60000}
    custom = get_dataset("synthetic_regression").info(params={"n_features": 5, "n_samples": 50})
    assert (custom.n_samples, custom.input_shape) == (50, (5,))


# ---- packaged and scikit-learn datasets ----


def test_boston_csv_is_the_published_file():
    assert hashlib.sha256(boston_csv_bytes()).hexdigest() == BOSTON_SHA256
    assert BOSTON_SHA256 == "04ea3ed0aa63691cfedf388349eafc1213e91e00f8e4d31747534692c0f1ce02"


def test_boston_housing():
    ds = load_dataset("boston_housing")
    assert ds.X.shape == (506, 13) and ds.y.shape == (506, 1) and ds.task == "regression"
    assert ds.feature_names[:3] == ["CRIM", "ZN", "INDUS"] and ds.feature_names[-1] == "LSTAT"
    assert ds.y.mean().item() == pytest.approx(22.5328, abs=1e-3)
    assert ds.X[0, 0].item() == pytest.approx(0.00632) and ds.y[0, 0].item() == 24.0
    assert ds.X[:, 3].unique().tolist() == [0.0, 1.0]  # CHAS is a dummy variable


def test_diabetes():
    ds = load_dataset("diabetes")
    assert ds.X.shape == (442, 10) and ds.y.shape == (442, 1) and ds.task == "regression"
    assert ds.feature_names[:3] == ["age", "sex", "bmi"]
    assert ds.y.min().item() == 25.0 and ds.y.max().item() == 346.0


def test_digits():
    ds = load_dataset("digits")
    assert ds.X.shape == (1797, 64) and ds.y.dtype == torch.int64
    assert ds.classes == [str(i) for i in range(10)] and ds.output_size == 10
    assert ds.X.min().item() == 0.0 and ds.X.max().item() == 16.0
    assert torch.bincount(ds.y).min().item() >= 170  # about 180 of each digit


def test_digits28_is_the_digits_resized_and_scaled():
    small, big = load_dataset("digits"), load_dataset("digits28")
    assert big.X.shape == (1797, 1, 28, 28) and big.X.dtype == torch.float32
    assert big.X.min().item() >= 0.0 and big.X.max().item() <= 1.0
    assert torch.equal(big.y, small.y) and big.classes == small.classes
    back = F.interpolate(big.X, size=(8, 8), mode="area").reshape(-1)  # same images, resampled
    assert torch.corrcoef(torch.stack([back, small.X.reshape(-1) / 16]))[0, 1].item() > 0.95
    per_image = (big.X.mean(dim=(1, 2, 3)) - small.X.mean(dim=1) / 16).abs()
    assert per_image.max().item() < 1e-4  # bilinear resizing keeps the ink


# ---- torchvision datasets from the data directory ----


def _write_idx(path: Path, array: np.ndarray) -> None:
    """An uncompressed IDX file (type 0x08 = unsigned byte), as torchvision reads it."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _write_mnist(root: Path, folder: str, n_train: int = 5, n_test: int = 3) -> dict:
    raw = root / "torchvision" / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        _write_idx(raw / f"{split}-images-idx3-ubyte", images)
        _write_idx(raw / f"{split}-labels-idx1-ubyte", labels)
        arrays[split] = (images, labels)
    return arrays


@pytest.fixture
def no_download(monkeypatch):
    import torchvision.datasets

    def refuse(self):
        raise RuntimeError("network is off in tests")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", refuse)


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_torchvision_dataset_absent_and_downloads_disabled(tmp_path, name, folder):
    expected = (  # the server's own paths stay out of what clients read
        f"{name} files are not in <data dir>/torchvision/{folder}/raw and downloads are disabled "
        "(set TRAINSERVE_ALLOW_DOWNLOADS=true or place the files there)"
    )
    with pytest.raises(DatasetUnavailableError) as err:
        load_dataset(name, data_dir=tmp_path)
    assert str(err.value) == expected
    info = get_dataset(name).info(tmp_path, allow_download=False)
    assert (info.available, info.reason) == (False, expected)
    assert get_dataset(name).info(None).available is False
    assert get_dataset(name).info(tmp_path, allow_download=True).available is True


def test_failed_download_is_reported_as_unavailable(tmp_path, no_download):
    with pytest.raises(DatasetUnavailableError, match="mnist could not be loaded or downloaded"):
        load_dataset("mnist", data_dir=tmp_path, allow_download=True)


def test_mnist_loads_from_idx_files(tmp_path, no_download):
    arrays = _write_mnist(tmp_path, "MNIST")
    assert get_dataset("mnist").info(tmp_path).available
    ds = load_dataset("mnist", data_dir=tmp_path)
    images, labels = arrays["train"]
    assert ds.X.shape == (5, 1, 28, 28) and ds.X.dtype == torch.float32
    assert torch.allclose(ds.X[:, 0], torch.from_numpy(images).float() / 255)
    assert ds.y.tolist() == labels.tolist() and ds.classes == [str(i) for i in range(10)]
    test = load_dataset("mnist", {"train": False, "max_samples": 2}, data_dir=str(tmp_path))
    assert len(test) == 2 and test.y.tolist() == arrays["t10k"][1][:2].tolist()


def test_fashion_mnist_keeps_its_class_names(tmp_path, no_download):
    _write_mnist(tmp_path, "FashionMNIST")
    ds = load_dataset("fashion_mnist", {"max_samples": 4}, data_dir=tmp_path)
    assert len(ds) == 4 and ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot"


# ---- synthetic ----


def test_synthetic_regression_is_deterministic_from_the_seed():
    params = {"n_samples": 200, "n_features": 7, "n_targets": 2, "noise": 0.5, "seed": 3}
    a, b = (
        load_dataset("synthetic_regression", params),
        load_dataset("synthetic_regression", params),
    )
    assert a.X.shape == (200, 7) and a.y.shape == (200, 2)
    assert torch.equal(a.X, b.X) and torch.equal(a.y, b.y)
    c = load_dataset("synthetic_regression", {**params, "seed": 4})
    assert not torch.equal(a.X, c.X)


def test_synthetic_classification_is_deterministic_from_the_seed():
    params = {"n_samples": 300, "n_features": 6, "n_classes": 5, "seed": 11}
    a = load_dataset("synthetic_classification", params)
    b = load_dataset("synthetic_classification", params)
    assert a.X.shape == (300, 6) and a.classes == ["0", "1", "2", "3", "4"]
    assert torch.equal(a.X, b.X) and torch.equal(a.y, b.y)
    assert set(a.y.tolist()) == set(range(5))
    c = load_dataset("synthetic_classification", {**params, "seed": 12})
    assert not torch.equal(a.y, c.y)


def test_synthetic_parameters_are_bounded():
    with pytest.raises(CatalogueError, match="n_samples' must be between 10 and 100000"):
        load_dataset("synthetic_regression", {"n_samples": 10**6})
    with pytest.raises(CatalogueError, match="n_classes' must be between 2 and 100"):
        load_dataset("synthetic_classification", {"n_classes": 1})
    with pytest.raises(CatalogueError, match="100 classes need at least 7 features, got 3"):
        get_dataset("synthetic_classification").info(params={"n_classes": 100, "n_features": 3})
