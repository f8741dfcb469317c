"""Learning for real: the tutorial's models on real data, trained through run_training."""

import pytest

from models.errors import CatalogueError
from models.request import TrainingRequest
from models.training import check_compatible, run_training


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_house_prices_mlp_learns_boston_housing(seed):
    config = TrainingRequest(
        architecture="house_prices_mlp",
        dataset="boston_housing",
        optimizer={"name": "adam", "lr": 0.01},
        epochs=100,
        eval_every=10,
        seed=seed,
        device="cpu",
    )
    result = run_training(config)
    final = result.history[-1]
    assert [row["epoch"] for row in result.history] == list(range(10, 101, 10))
    # Reference (shared/data/README.md): linear regression 4.30-5.78, 13-unit MLP 3.45-5.02.
    assert final["val_rmse"] < 5.0
    assert final["val_r2"] > 0.6
    assert result.card.target_stats is not None  # metrics above are in $1000s, not z-scores


def test_mnist_convnet_reaches_95_percent_on_digits28():
    config = TrainingRequest(
        architecture="mnist_convnet",
        dataset="digits28",
        optimizer={"name": "sgd", "lr": 0.01, "momentum": 0.9},  # the tutorial's settings
        epochs=5,
        seed=0,
        device="cpu",
    )
    result = run_training(config)
    assert result.history[-1]["val_accuracy"] >= 0.95
    assert result.card.classes == [str(d) for d in range(10)]


def test_same_seed_same_history():
    config = TrainingRequest(architecture="mlp", dataset="diabetes", epochs=3, seed=7, device="cpu")
    assert run_training(config).history == run_training(config).history


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (TrainingRequest(architecture="resnet18", dataset="boston_housing"), "regression"),
        (TrainingRequest(architecture="mnist_convnet", dataset="boston_housing"), "1x28x28"),
        (
            TrainingRequest(architecture="mlp", dataset="boston_housing", loss="cross_entropy"),
            "cross_entropy",
        ),
        (
            TrainingRequest(
                architecture="mlp", dataset="digits", architecture_params={"hidden_size": 0}
            ),
            "hidden_size",
        ),
    ],
)
def test_incompatible_requests_are_refused_before_training(config, message):
    shapes = {"boston_housing": ("regression", (13,)), "digits": ("classification", (64,))}
    task, shape = shapes[config.dataset]
    with pytest.raises(CatalogueError, match=message):
        check_compatible(config, task, shape)
