"""The weights format: safetensors + model card, never unpickled."""

import io
import pickle

import numpy as np
import pytest
import torch

from models.catalogue import load_dataset
from models.errors import CheckpointError
from models.predictor import InputError, Predictor, check_inputs
from models.request import TrainingRequest
from models.training import run_training
from models.weights_file import deserialize_model, read_card, read_card_from


@pytest.fixture(scope="module")
def boston_result():
    config = TrainingRequest(
        architecture="house_prices_mlp",
        dataset="boston_housing",
        optimizer={"name": "adam", "lr": 0.01},
        epochs=20,
        device="cpu",
    )
    return run_training(config)


@pytest.fixture(scope="module")
def digits_result():
    config = TrainingRequest(architecture="mlp", dataset="digits28", epochs=2, device="cpu")
    return run_training(config)


def test_round_trip_gives_identical_predictions(boston_result):
    raw = load_dataset("boston_housing").X[:20].numpy()
    before = Predictor(boston_result.model, boston_result.card).predict(raw)
    after = Predictor.from_bytes(boston_result.weights()).predict(raw)
    assert before.predictions == after.predictions
    assert after.probabilities is None


def test_card_holds_what_rebuilds_the_model(boston_result):
    card = read_card(boston_result.weights())
    assert card.architecture == "house_prices_mlp"
    assert card.architecture_params == {"hidden_size": 13}
    assert card.input_shape == [13]
    assert card.task == "regression"
    assert card.feature_names[0] == "CRIM"
    assert set(card.versions) == {"torch", "torchvision", "trainserve"}
    module, _ = deserialize_model(boston_result.weights())
    for (name, a), (_, b) in zip(
        module.state_dict().items(), boston_result.model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_predictions_are_in_original_units(boston_result):
    data = load_dataset("boston_housing")
    predicted = Predictor.from_bytes(boston_result.weights()).predict(data.X.numpy()).predictions
    assert 15 < np.mean(predicted) < 30  # MEDV in $1000s, mean 22.5
    assert np.sqrt(np.mean((np.array(predicted) - data.y[:, 0].numpy()) ** 2)) < 6


def test_classifier_returns_classes_and_probabilities(digits_result):
    data = load_dataset("digits28")
    result = Predictor.from_bytes(digits_result.weights()).predict(data.X[:8].numpy())
    assert len(result.predictions) == 8
    assert all(0 <= p <= 9 for p in result.predictions)
    probs = np.array(result.probabilities)
    assert probs.shape == (8, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert list(probs.argmax(axis=1)) == result.predictions


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not safetensors at all",
        pickle.dumps({"weight": [1.0, 2.0]}),
        (2**40).to_bytes(8, "little") + b"{}",
    ],
)
def test_non_safetensors_bytes_are_refused(data):
    with pytest.raises(CheckpointError):
        deserialize_model(data)


def test_the_card_of_an_open_file_is_read_from_its_header_only(boston_result):
    data = boston_result.weights()
    handle = io.BytesIO(data)
    assert read_card_from(handle) == read_card(data)
    header_end = 8 + int.from_bytes(data[:8], "little")
    assert handle.tell() == header_end  # the tensors were not read


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"short",
        (2**40).to_bytes(8, "little") + b"{}",  # a header length beyond the limit
        (100).to_bytes(8, "little") + b"{}",  # a header cut short
        (8).to_bytes(8, "little") + b'{"w": 1}',  # JSON, but no safetensors header
    ],
)
def test_an_open_file_that_is_not_trainserve_safetensors_is_refused(data):
    with pytest.raises(CheckpointError):
        read_card_from(io.BytesIO(data))


def test_a_torch_save_file_is_refused_without_unpickling(monkeypatch, boston_result):
    buffer = io.BytesIO()
    torch.save(boston_result.model.state_dict(), buffer)

    def forbidden(*_a, **_k):
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    with pytest.raises(CheckpointError):
        deserialize_model(buffer.getvalue())


def test_safetensors_without_a_card_is_refused():
    from safetensors.torch import save

    with pytest.raises(CheckpointError, match="trainserve"):
        deserialize_model(save({"w": torch.zeros(2)}))


def test_truncated_weights_are_refused(boston_result):
    data = boston_result.weights()
    with pytest.raises(CheckpointError):
        deserialize_model(data[: len(data) - 10])


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ([], "non-empty"),
        ("abc", "non-empty"),
        ([[1.0] * 13, [1.0] * 12], "sample 1 has shape 12; expected 13"),
        ([[1.0] * 12 + [float("nan")]], "sample 0 holds NaN"),
        ([[1.0] * 12 + [float("inf")]], "sample 0 holds NaN, infinity or null"),
        ([[1.0] * 13, [[1.0], 2.0]], "sample 1 is not a rectangular"),
        ([[1.0] * 12 + ["x"]], "sample 0 is not a rectangular"),
        ([[1e300] * 13], "too large"),
        ([[10**400] * 13], "sample 0 holds a number too large"),
        ([[1.0] * 12 + [None]], "sample 0 holds NaN, infinity or null"),
        ([[1.0] * 13] * 5, "too many samples: 5 > the limit of 4"),
    ],
)
def test_bad_inputs_name_the_sample(inputs, message):
    with pytest.raises(InputError, match=message):
        check_inputs(inputs, (13,), max_samples=4)


def test_images_may_come_nested_or_flat():
    nested = np.random.default_rng(0).random((2, 1, 28, 28)).tolist()
    flat = [np.array(s).ravel().tolist() for s in nested]
    np.testing.assert_array_equal(
        check_inputs(nested, (1, 28, 28), 10), check_inputs(flat, (1, 28, 28), 10)
    )
