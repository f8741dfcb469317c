"""The built-in datasets (models/catalogue.py imports this module to register them).

boston_housing (packaged CSV), diabetes and digits (shipped inside scikit-learn), digits28
(digits resized to 1x28x28), mnist and fashion_mnist (torchvision, from the data directory;
downloaded only when allowed) and two seeded synthetic datasets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F

from models.choices import SEED_MAX
from models.datasets import Dataset, DatasetShape, register_dataset
from models.errors import CatalogueError, DatasetUnavailableError
from models.params import bounded
from models.uploads import parse_csv

BOSTON_SHA256 = "04ea3ed0aa63691cfedf388349eafc1213e91e00f8e4d31747534692c0f1ce02"
DIGIT_NAMES = [str(i) for i in range(10)]


@dataclass(frozen=True)
class NoParams:
    """A dataset without parameters."""


def boston_csv_bytes() -> bytes:
    """The packaged Boston house-price CSV (see models/data/README.md)."""
    return resources.files("models").joinpath("data/boston_housing.csv").read_bytes()


@register_dataset(
    "boston_housing",
    task="regression",
    description="Boston house prices: 13 features, target MEDV (median value in $1000s)",
    source="StatLib / UCI (Harrison & Rubinfeld, 1978); packaged with trainserve",
    config_cls=NoParams,
    shape=lambda cfg: DatasetShape(506, (13,), None),
)
def _boston_housing(config: NoParams, data_dir: Path | None, allow_download: bool) -> Dataset:
    return parse_csv(boston_csv_bytes(), target="MEDV", task="regression")


@register_dataset(
    "diabetes",
    task="regression",
    description="Diabetes progression after one year from 10 baseline variables",
    source="scikit-learn load_diabetes (Efron et al., 2004); shipped with scikit-learn",
    config_cls=NoParams,
    shape=lambda cfg: DatasetShape(442, (10,), None),
)
def _diabetes(config: NoParams, data_dir: Path | None, allow_download: bool) -> Dataset:
    from sklearn.datasets import load_diabetes

    bunch = load_diabetes()
    X, y = torch.from_numpy(bunch.data).float(), torch.from_numpy(bunch.target).float()
    return Dataset(X, y.unsqueeze(1), "regression", feature_names=list(bunch.feature_names))


def _digits_bunch():
    from sklearn.datasets import load_digits

    return load_digits()


@register_dataset(
    "digits",
    task="classification",
    description="8x8 handwritten digits as 64 features (values 0..16), 10 classes",
    source="scikit-learn load_digits (UCI optical digits); shipped with scikit-learn",
    config_cls=NoParams,
    shape=lambda cfg: DatasetShape(1797, (64,), 10),
)
def _digits(config: NoParams, data_dir: Path | None, allow_download: bool) -> Dataset:
    bunch = _digits_bunch()
    X, y = torch.from_numpy(bunch.data).float(), torch.from_numpy(bunch.target).long()
    return Dataset(X, y, "classification", DIGIT_NAMES, list(bunch.feature_names))


@register_dataset(
    "digits28",
    task="classification",
    description="The digits resized to 1x28x28 (bilinear) with values in [0, 1], MNIST-shaped",
    source="scikit-learn load_digits (UCI optical digits); shipped with scikit-learn",
    config_cls=NoParams,
    shape=lambda cfg: DatasetShape(1797, (1, 28, 28), 10),
)
def _digits28(config: NoParams, data_dir: Path | None, allow_download: bool) -> Dataset:
    bunch = _digits_bunch()
    images = torch.from_numpy(bunch.images).float().unsqueeze(1) / 16.0  # (N, 1, 8, 8)
    X = F.interpolate(images, size=(28, 28), mode="bilinear", align_corners=False, antialias=False)
    y = torch.from_numpy(bunch.target).long()
    return Dataset(X.clamp(0.0, 1.0), y, "classification", DIGIT_NAMES)  # (N, 1, 28, 28)


# ---- torchvision datasets, from <data_dir>/torchvision ----

MNIST_FILES = [
    f"{split}-{kind}-idx{dims}-ubyte"
    for split in ("train", "t10k")
    for kind, dims in (("images", 3), ("labels", 1))
]
FASHION_NAMES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip


@dataclass(frozen=True)
class MnistParams:
    train: bool = bounded(True)  # the 60,000 training images, else the 10,000 test images
    max_samples: int = bounded(60000, 1, 60000)  # the first max_samples images


def _mnist_shape(config: MnistParams) -> DatasetShape:
    return DatasetShape(min(config.max_samples, 60000 if config.train else 10000), (1, 28, 28), 10)


def torchvision_root(data_dir: Path) -> Path:
    """Where torchvision datasets live inside the service's data directory."""
    return Path(data_dir) / "torchvision"


def _torchvision_availability(name: str, folder: str):
    def availability(data_dir: Path | None, allow_download: bool) -> str | None:
        if data_dir is None:
            return f"{name} needs a data directory for its files and none is configured"
        raw = torchvision_root(data_dir) / folder / "raw"
        if allow_download or all((raw / f).is_file() for f in MNIST_FILES):
            return None
        return (
            f"{name} files are not in <data dir>/{raw.relative_to(data_dir)} and downloads are "
            "disabled "
            "(set TRAINSERVE_ALLOW_DOWNLOADS=true or place the files there)"
        )

    return availability


def _load_torchvision(
    name: str, cls_name: str, classes: list[str], config: MnistParams, data_dir: Path, download
) -> Dataset:
    import torchvision.datasets

    cls = getattr(torchvision.datasets, cls_name)
    try:
        ds = cls(root=str(torchvision_root(data_dir)), train=config.train, download=download)
    except (RuntimeError, OSError) as e:
        raise DatasetUnavailableError(f"{name} could not be loaded or downloaded: {e}") from None
    images = ds.data[: config.max_samples]  # uint8 (N, 28, 28)
    X = images.unsqueeze(1).float() / 255.0  # (N, 1, 28, 28) in [0, 1]
    return Dataset(X, ds.targets[: config.max_samples].long(), "classification", classes)


@register_dataset(
    "mnist",
    task="classification",
    description="MNIST handwritten digits, 1x28x28 in [0, 1], 10 classes",
    source="torchvision.datasets.MNIST (LeCun, Cortes & Burges)",
    config_cls=MnistParams,
    shape=_mnist_shape,
    availability=_torchvision_availability("mnist", "MNIST"),
)
def _mnist(config: MnistParams, data_dir: Path, allow_download: bool) -> Dataset:
    return _load_torchvision("mnist", "MNIST", DIGIT_NAMES, config, data_dir, allow_download)


@register_dataset(
    "fashion_mnist",
    task="classification",
    description="Fashion-MNIST clothing images, 1x28x28 in [0, 1], 10 classes",
    source="torchvision.datasets.FashionMNIST (Zalando Research)",
    config_cls=MnistParams,
    shape=_mnist_shape,
    availability=_torchvision_availability("fashion_mnist", "FashionMNIST"),
)
def _fashion_mnist(config: MnistParams, data_dir: Path, allow_download: bool) -> Dataset:
    return _load_torchvision(
        "fashion_mnist", "FashionMNIST", FASHION_NAMES, config, data_dir, allow_download
    )


# ---- synthetic, deterministic from the seed ----


@dataclass(frozen=True)
class SyntheticRegressionParams:
    n_samples: int = bounded(1000, 10, 100_000)
    n_features: int = bounded(10, 1, 256)
    n_targets: int = bounded(1, 1, 16)
    noise: float = bounded(1.0, 0.0, 10.0)  # std of the Gaussian noise on the targets
    seed: int = bounded(0, 0, SEED_MAX)


@register_dataset(
    "synthetic_regression",
    task="regression",
    description="A random linear regression problem with Gaussian noise",
    source="generated by sklearn.datasets.make_regression",
    config_cls=SyntheticRegressionParams,
    shape=lambda cfg: DatasetShape(cfg.n_samples, (cfg.n_features,), None),
)
def _synthetic_regression(config: SyntheticRegressionParams, data_dir, allow_download) -> Dataset:
    from sklearn.datasets import make_regression

    X, y = make_regression(
        n_samples=config.n_samples,
        n_features=config.n_features,
        n_informative=config.n_features,
        n_targets=config.n_targets,
        noise=config.noise,
        random_state=config.seed,
    )
    y_t = torch.from_numpy(y).float().reshape(len(X), config.n_targets)
    return Dataset(torch.from_numpy(X).float(), y_t, "regression")


@dataclass(frozen=True)
class SyntheticClassificationParams:
    n_samples: int = bounded(1000, 10, 100_000)
    n_features: int = bounded(20, 1, 256)
    n_classes: int = bounded(2, 2, 100)
    noise: float = bounded(0.01, 0.0, 0.5)  # fraction of labels assigned at random
    class_sep: float = bounded(1.0, 0.1, 10.0)
    seed: int = bounded(0, 0, SEED_MAX)

    def __post_init__(self) -> None:
        if self.n_features < _informative_needed(self.n_classes):
            raise CatalogueError(
                f"dataset 'synthetic_classification': {self.n_classes} classes need at least "
                f"{_informative_needed(self.n_classes)} features, got {self.n_features}"
            )


def _informative_needed(n_classes: int) -> int:
    """make_classification needs n_classes <= 2**n_informative (one cluster per class)."""
    return max(1, math.ceil(math.log2(n_classes)))


@register_dataset(
    "synthetic_classification",
    task="classification",
    description="Gaussian clusters, one per class, with a fraction of labels at random",
    source="generated by sklearn.datasets.make_classification",
    config_cls=SyntheticClassificationParams,
    shape=lambda cfg: DatasetShape(cfg.n_samples, (cfg.n_features,), cfg.n_classes),
)
def _synthetic_classification(
    config: SyntheticClassificationParams, data_dir, allow_download
) -> Dataset:
    from sklearn.datasets import make_classification

    X, y = make_classification(
        n_samples=config.n_samples,
        n_features=config.n_features,
        n_informative=min(config.n_features, _informative_needed(config.n_classes) + 2),
        n_redundant=0,
        n_classes=config.n_classes,
        n_clusters_per_class=1,
        flip_y=config.noise,
        class_sep=config.class_sep,
        random_state=config.seed,
    )
    classes = [str(i) for i in range(config.n_classes)]
    return Dataset(
        torch.from_numpy(X).float(), torch.from_numpy(y).long(), "classification", classes
    )
