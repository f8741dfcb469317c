"""Train/test split and standardisation, on real data."""

import json
from collections import Counter

import pytest
import torch

from models.catalogue import load_dataset
from models.datasets import Dataset
from models.errors import CatalogueError, CheckpointError
from models.preprocessing import Standardizer, train_test_split


@pytest.fixture(scope="module")
def boston():
    return load_dataset("boston_housing")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


# ---- split ----


def test_split_sizes_and_disjoint_cover(boston):
    train, test = train_test_split(boston, 0.2, seed=0)
    assert (len(train), len(test)) == (405, 101)
    rows = Counter(tuple(r) for r in torch.cat([train.X, test.X]).tolist())
    assert rows == Counter(tuple(r) for r in boston.X.tolist())
    assert train.feature_names == boston.feature_names and test.task == "regression"


def test_split_is_deterministic_from_the_seed(boston):
    a_train, a_test = train_test_split(boston, 0.25, seed=7)
    b_train, b_test = train_test_split(boston, 0.25, seed=7)
    assert torch.equal(a_train.X, b_train.X) and torch.equal(a_test.y, b_test.y)
    c_train, _ = train_test_split(boston, 0.25, seed=8)
    assert not torch.equal(a_train.X, c_train.X)


def test_split_ignores_the_global_rng(boston):
    torch.manual_seed(1)
    a, _ = train_test_split(boston, 0.2, seed=3)
    torch.manual_seed(2)
    b, _ = train_test_split(boston, 0.2, seed=3)
    assert torch.equal(a.X, b.X)


def test_split_is_stratified_for_classification(digits):
    train, test = train_test_split(digits, 0.2, seed=0)
    assert len(train) + len(test) == len(digits) and len(test) == round(0.2 * len(digits))
    share = torch.bincount(test.y, minlength=10) / torch.bincount(digits.y, minlength=10)
    assert share.min().item() > 0.18 and share.max().item() < 0.22
    assert train.classes == digits.classes == test.classes


def test_split_keeps_every_class_in_train_when_possible():
    y = torch.tensor([0] * 10 + [1, 2, 3] + [4, 4])
    ds = Dataset(torch.arange(15.0).unsqueeze(1), y, "classification")
    for seed in range(5):
        train, test = train_test_split(ds, 0.5, seed=seed)
        assert set(train.y.tolist()) == {0, 1, 2, 3, 4} and len(test) == round(15 * 0.5)
        assert test.y.tolist().count(4) == 1 and test.y.tolist().count(0) == 7


def test_split_keeps_both_sides_non_empty():
    ds = Dataset(torch.zeros(2, 1), torch.zeros(2, 1), "regression")
    train, test = train_test_split(ds, 0.01, seed=0)
    assert (len(train), len(test)) == (1, 1)
    train, test = train_test_split(ds, 0.99, seed=0)
    assert (len(train), len(test)) == (1, 1)
    single = Dataset(torch.tensor([[0.0], [1.0]]), torch.tensor([0, 1]), "classification")
    train, test = train_test_split(single, 0.5, seed=0)
    assert len(train) == len(test) == 1  # a class can only be on one side


def test_split_refuses_bad_fractions_and_tiny_datasets(boston):
    for fraction in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(CatalogueError, match="test_fraction must be between 0 and 1"):
            train_test_split(boston, fraction, seed=0)
    with pytest.raises(CatalogueError, match="at least 2"):
        train_test_split(Dataset(torch.zeros(1, 1), torch.zeros(1, 1), "regression"), 0.5, 0)


# ---- standardizer ----


def test_standardizer_fitted_on_train_only(boston):
    train, test = train_test_split(boston, 0.2, seed=0)
    scaler = Standardizer().fit(train.X)
    z_train, z_test = scaler.transform(train.X), scaler.transform(test.X)
    assert z_train.mean(0).abs().max().item() < 1e-4
    assert (z_train.std(0, unbiased=False) - 1).abs().max().item() < 1e-4
    assert z_test.mean(0).abs().max().item() > 0.01  # statistics of the training split only
    assert torch.allclose(scaler.mean, train.X.double().mean(0).float())
    assert torch.allclose(scaler.inverse_transform(z_test), test.X, atol=1e-3)


def test_standardizer_for_regression_targets(boston):
    scaler = Standardizer().fit(boston.y)
    assert scaler.mean.shape == (1,) and scaler.mean.item() == pytest.approx(22.5328, abs=1e-3)
    z = scaler.fit_transform(boston.y)
    assert z.shape == boston.y.shape
    assert torch.allclose(scaler.inverse_transform(z), boston.y, atol=1e-4)


def test_standardizer_per_channel_for_images():
    X = torch.stack([torch.full((4, 4), 2.0), torch.arange(16.0).reshape(4, 4)])  # (C=2, 4, 4)
    X = X.unsqueeze(0).repeat(3, 1, 1, 1) + torch.arange(3.0).reshape(3, 1, 1, 1)  # (3, 2, 4, 4)
    scaler = Standardizer().fit(X)
    assert scaler.mean.shape == (2, 1, 1) and scaler.mean.flatten().tolist() == [3.0, 8.5]
    z = scaler.transform(X)
    assert torch.allclose(z.mean(dim=(0, 2, 3)), torch.zeros(2), atol=1e-5)
    assert torch.allclose(z.std(dim=(0, 2, 3), unbiased=False), torch.ones(2), atol=1e-5)


def test_standardizer_constant_feature_keeps_std_one():
    X = torch.tensor([[1.0, 5.0], [3.0, 5.0], [5.0, 5.0]])
    scaler = Standardizer().fit(X)
    assert scaler.std[1].item() == 1.0
    assert scaler.transform(X)[:, 1].tolist() == [0.0, 0.0, 0.0]


def test_standardizer_dict_round_trip_through_json(digits):
    scaler = Standardizer().fit(load_dataset("digits28").X)
    data = json.loads(json.dumps(scaler.to_dict()))
    assert data["shape"] == [1, 1, 1] and len(data["mean"]) == 1
    again = Standardizer.from_dict(data)
    assert torch.equal(again.mean, scaler.mean) and torch.equal(again.std, scaler.std)
    flat = Standardizer().fit(digits.X)
    assert Standardizer.from_dict(flat.to_dict()).transform(digits.X).shape == (1797, 64)


def test_standardizer_errors():
    with pytest.raises(RuntimeError, match="not fitted"):
        Standardizer().transform(torch.zeros(2, 2))
    with pytest.raises(CheckpointError, match="invalid standardizer"):
        Standardizer.from_dict({"mean": [0.0, 1.0], "std": [1.0], "shape": [2]})
    with pytest.raises(CheckpointError, match="non-positive std"):
        Standardizer.from_dict({"mean": [0.0], "std": [0.0], "shape": [1]})
    with pytest.raises(CheckpointError, match="invalid standardizer"):
        Standardizer.from_dict({"mean": [0.0]})
