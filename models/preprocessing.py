"""Splitting a dataset and standardising inputs and regression targets.

Statistics are fitted on the training split only and saved next to the weights
(`Standardizer.to_dict()`), so inference applies exactly the training transformation.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from models.datasets import Dataset
from models.errors import CatalogueError, CheckpointError


def train_test_split(ds: Dataset, test_fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Split `ds` at random (reproducible from `seed`) into non-empty (train, test).

    The test size is round(N * test_fraction), kept between 1 and N - 1. Classification is
    stratified: each class is split in proportion, keeping at least one sample of every
    class in the training split when the class has any.
    """
    if not 0.0 < test_fraction < 1.0:
        raise CatalogueError(
            f"test_fraction must be between 0 and 1 (exclusive), got {test_fraction}"
        )
    n = len(ds)
    if n < 2:
        raise CatalogueError(f"a dataset of {n} sample(s) cannot be split; at least 2 are needed")
    generator = torch.Generator().manual_seed(seed)
    n_test = min(max(round(n * test_fraction), 1), n - 1)
    if ds.task == "classification":
        test_idx = _stratified_test_indices(ds.y, n_test, generator)
    else:
        test_idx = torch.randperm(n, generator=generator)[:n_test]
    in_test = torch.zeros(n, dtype=torch.bool)
    in_test[test_idx] = True
    train_idx = torch.nonzero(~in_test).flatten()
    train_idx = train_idx[torch.randperm(len(train_idx), generator=generator)]
    test_idx = test_idx[torch.randperm(len(test_idx), generator=generator)]
    return ds.subset(train_idx), ds.subset(test_idx)


def _stratified_test_indices(
    y: torch.Tensor, n_test: int, generator: torch.Generator
) -> torch.Tensor:
    """n_test indices, drawn from each class in proportion to its size."""
    labels = torch.unique(y)
    members = [torch.nonzero(y == c).flatten() for c in labels]
    members = [m[torch.randperm(len(m), generator=generator)] for m in members]
    sizes = [len(m) for m in members]
    counts = _allocate(sizes, n_test)
    return torch.cat([m[:k] for m, k in zip(members, counts, strict=True)])


def _allocate(sizes: list[int], total: int) -> list[int]:
    """Per-class test counts summing to `total` (largest remainders), leaving each class
    one training sample while that is possible."""
    n = sum(sizes)
    ideal = [s * total / n for s in sizes]
    counts = [min(math.floor(x), max(s - 1, 0)) for x, s in zip(ideal, sizes, strict=True)]
    by_remainder = sorted(range(len(sizes)), key=lambda i: (counts[i] - ideal[i], i))
    for keep_one in (1, 0):  # first keep one training sample per class, then give it up
        grown = True
        while grown and sum(counts) < total:
            grown = False
            for i in by_remainder:
                if sum(counts) < total and counts[i] < sizes[i] - keep_one:
                    counts[i] += 1
                    grown = True
    return counts


class Standardizer:
    """Per-feature (or per-channel) mean and standard deviation.

    The statistics are taken over every axis but the first feature axis: for X of shape
    (N, F) per feature, for (N, C, H, W) per channel, for (N,) one scalar. A zero standard
    deviation is replaced by 1 so constant features pass through centred.
    """

    def __init__(self, mean: torch.Tensor | None = None, std: torch.Tensor | None = None):
        self.mean = mean  # shaped to broadcast against one sample, e.g. (F,) or (C, 1, 1)
        self.std = std

    @property
    def fitted(self) -> bool:
        return self.mean is not None

    def fit(self, X: torch.Tensor) -> Standardizer:
        """Compute the statistics of `X` (the training split only); returns self."""
        if len(X) == 0:
            raise ValueError("cannot fit a Standardizer on an empty tensor")
        X = X.detach().to(torch.float64)
        dims = [d for d in range(X.dim()) if d != 1]
        mean = X.mean(dim=dims, keepdim=True)
        std = X.std(dim=dims, keepdim=True, unbiased=False)
        std = torch.where(std > 1e-12, std, torch.ones_like(std))
        self.mean, self.std = mean[0].float().cpu(), std[0].float().cpu()
        return self

    def transform(self, X: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(X)
        return (X - mean) / std

    def inverse_transform(self, Z: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(Z)
        return Z * std + mean

    def fit_transform(self, X: torch.Tensor) -> torch.Tensor:
        return self.fit(X).transform(X)

    def _stats(self, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.fitted:
            raise RuntimeError("the Standardizer is not fitted; call fit() first")
        dtype = X.dtype if X.is_floating_point() else torch.float32
        return self.mean.to(X.device, dtype), self.std.to(X.device, dtype)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly {"mean": [...], "std": [...], "shape": [...]} (flat lists)."""
        if not self.fitted:
            raise RuntimeError("the Standardizer is not fitted; call fit() first")
        return {
            "mean": self.mean.flatten().tolist(),
            "std": self.std.flatten().tolist(),
            "shape": list(self.mean.shape),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Standardizer:
        """The inverse of to_dict; CheckpointError if the content is inconsistent."""
        try:
            shape = [int(s) for s in data["shape"]]
            mean = torch.tensor(data["mean"], dtype=torch.float32).reshape(shape)
            std = torch.tensor(data["std"], dtype=torch.float32).reshape(shape)
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"invalid standardizer statistics: {e}") from None
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all() and (std > 0).all()):
            raise CheckpointError("invalid standardizer statistics: non-finite or non-positive std")
        return cls(mean, std)

    def __repr__(self) -> str:
        shape = None if self.mean is None else tuple(self.mean.shape)
        return f"Standardizer(shape={shape})"
