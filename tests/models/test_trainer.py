import math

import pytest
import torch
from torch import nn

from models.callbacks import Callback
from models.errors import CatalogueError
from models.optim import make_loss, make_optimizer, make_scheduler
from models.trainer import Trainer, resolve_device

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def regression_data(n=40, features=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, features, generator=g)
    y = X.sum(dim=1, keepdim=True) + 0.1 * torch.randn(n, 1, generator=g)
    return X, y


def make_trainer(model, lr=0.01, **kwargs):
    optimizer = make_optimizer("sgd", model.parameters(), lr=lr)
    return Trainer(model, optimizer, make_loss("mse", "regression"), **kwargs)


class Recorder(nn.Module):
    """A linear model that records its inputs, mode and inference state on every forward."""

    def __init__(self, features=1):
        super().__init__()
        self.linear = nn.Linear(features, 1)
        self.calls = []

    def forward(self, x):
        self.calls.append((x.detach().clone(), self.training, torch.is_inference_mode_enabled()))
        return self.linear(x)


class Stopper(Callback):
    def __init__(self, at_epoch):
        self.at_epoch = at_epoch

    def on_epoch_end(self, trainer, epoch, train_loss):
        if epoch == self.at_epoch:
            trainer.should_stop = True


def test_optimizer_of_another_model_is_refused():
    model, other = nn.Linear(2, 1), nn.Linear(2, 1)
    with pytest.raises(ValueError, match="optimizer holds 2 parameter tensors that are not in"):
        Trainer(model, torch.optim.SGD(other.parameters(), lr=0.1), nn.MSELoss())


def test_optimizer_missing_parameters_is_refused_with_their_names():
    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    optimizer = torch.optim.SGD(model[0].parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"2 trainable parameter tensors .*\(1.weight, 1.bias\)"):
        Trainer(model, optimizer, nn.MSELoss())


def test_frozen_parameters_may_be_left_out_of_the_optimizer():
    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    model[0].requires_grad_(False)
    Trainer(model, torch.optim.SGD(model[1].parameters(), lr=0.1), nn.MSELoss())


def test_generate_batches_slices_with_a_short_last_batch():
    trainer = make_trainer(nn.Linear(1, 1))
    X, y = torch.arange(10.0).unsqueeze(1), torch.arange(10.0).unsqueeze(1)
    batches = list(trainer._generate_batches(X, y, size=4))
    assert [len(xb) for xb, _ in batches] == [4, 4, 2]
    assert torch.equal(torch.cat([xb for xb, _ in batches]), X)
    assert all(torch.equal(xb, yb) for xb, yb in batches)


def training_orders(seed, epochs=3, n=10, batch_size=4):
    model = Recorder()
    X = torch.arange(float(n)).unsqueeze(1)
    make_trainer(model, lr=0.0, seed=seed).fit(X, X, X, X, epochs=epochs, batch_size=batch_size)
    train_calls = [(x, training) for x, training, _ in model.calls if training]
    per_epoch = len(range(0, n, batch_size))
    sizes = [len(x) for x, _ in train_calls]
    assert sizes == [4, 4, 2] * epochs
    flat = [x.flatten().tolist() for x, _ in train_calls]
    return [sum(flat[i : i + per_epoch], []) for i in range(0, len(flat), per_epoch)]


def test_every_sample_once_per_epoch_including_last_partial_batch():
    for order in training_orders(seed=0):
        assert sorted(order) == [float(i) for i in range(10)]


def test_order_changes_every_epoch_and_is_reproducible_from_seed():
    orders = training_orders(seed=7)
    assert orders[0] != orders[1] and orders[1] != orders[2]
    assert training_orders(seed=7) == orders
    assert training_orders(seed=8) != orders


def test_evaluation_schedule_includes_the_last_epoch():
    X, y = regression_data()
    history = make_trainer(nn.Linear(3, 1)).fit(X, y, X, y, epochs=25, eval_every=10)
    assert [row["epoch"] for row in history] == [10, 20, 25]
    assert set(history[0]) == {"epoch", "train_loss", "val_loss", "val_rmse", "val_mae", "val_r2"}


def test_evaluation_in_eval_mode_under_inference_mode_then_back_to_train():
    model = nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4), nn.Dropout(0.5), Recorder(4))
    X, y = torch.randn(12, 2), torch.randn(12, 1)
    trainer = make_trainer(model)
    trainer.eval_batch_size = 5
    trainer.fit(X, y, X, y, epochs=2, eval_every=1, batch_size=4)
    calls = [(len(x), training, inference) for x, training, inference in model[3].calls]
    train_step, eval_pass = (4, True, False), (5, False, True)
    epoch = [train_step] * 3 + [eval_pass, eval_pass, (2, False, True)]
    assert calls == epoch * 2
    assert model.training and all(m.training for m in model.modules())


def test_stop_request_ends_fit_and_evaluates_the_last_epoch():
    X, y = regression_data()
    trainer = make_trainer(nn.Linear(3, 1), callbacks=[Stopper(at_epoch=3)])
    history = trainer.fit(X, y, X, y, epochs=10, eval_every=2)
    assert [row["epoch"] for row in history] == [2, 3]
    assert trainer.epoch == 3 and trainer.should_stop


def test_callback_hook_order():
    events = []

    class Log(Callback):
        def on_fit_start(self, trainer):
            events.append("fit_start")

        def on_epoch_start(self, trainer, epoch):
            events.append(f"epoch_start {epoch}")

        def on_epoch_end(self, trainer, epoch, train_loss):
            assert isinstance(train_loss, float)
            events.append(f"epoch_end {epoch}")

        def on_evaluate(self, trainer, row):
            events.append(f"evaluate {row['epoch']}")

        def on_fit_end(self, trainer):
            events.append("fit_end")

    X, y = regression_data()
    make_trainer(nn.Linear(3, 1), callbacks=[Log()]).fit(X, y, X, y, epochs=3, eval_every=2)
    assert events == [
        "fit_start",
        "epoch_start 1",
        "epoch_end 1",
        "epoch_start 2",
        "evaluate 2",
        "epoch_end 2",
        "epoch_start 3",
        "evaluate 3",
        "epoch_end 3",
        "fit_end",
    ]


def test_exception_reaches_on_exception_and_is_reraised():
    seen = []

    class Boom(Callback):
        def on_epoch_start(self, trainer, epoch):
            if epoch == 2:
                raise KeyboardInterrupt

        def on_exception(self, trainer, exc):
            seen.append((type(exc), trainer.epoch))

        def on_fit_end(self, trainer):
            seen.append("fit_end")

    X, y = regression_data()
    with pytest.raises(KeyboardInterrupt):
        make_trainer(nn.Linear(3, 1), callbacks=[Boom()]).fit(X, y, X, y, epochs=3)
    assert seen == [(KeyboardInterrupt, 1)]


class Constant(nn.Module):
    """Predicts `value` for every row (through a parameter, so an optimizer can hold it)."""

    def __init__(self, value):
        super().__init__()
        self.value = nn.Parameter(torch.tensor(value))

    def forward(self, x):
        return self.value.expand(len(x), -1)


class Scaler:
    def __init__(self, mean, std):
        self.mean, self.std = mean, std

    def inverse_transform(self, t):
        return t * self.std + self.mean


def test_regression_metrics_are_in_original_units():
    scaler = Scaler(mean=100.0, std=10.0)
    y_orig = torch.tensor([[90.0], [100.0], [110.0], [120.0]])
    y_scaled = (y_orig - 100.0) / 10.0
    model = Constant([0.5])  # predicts 105 in original units
    trainer = make_trainer(model, lr=0.0, target_scaler=scaler)
    X = torch.zeros(4, 1)
    (row,) = trainer.fit(X, y_scaled, X, y_scaled, epochs=1)
    err = torch.tensor([15.0, 5.0, -5.0, -15.0])
    assert row["val_rmse"] == pytest.approx(math.sqrt((err**2).mean().item()))
    assert row["val_mae"] == pytest.approx(10.0)
    ss_tot = ((y_orig - y_orig.mean()) ** 2).sum().item()
    assert row["val_r2"] == pytest.approx(1 - (err**2).sum().item() / ss_tot)
    assert row["val_loss"] == pytest.approx(((y_scaled - 0.5) ** 2).mean().item())  # scaled units
    assert row["train_loss"] == pytest.approx(row["val_loss"])


def test_r2_of_several_targets_is_their_mean_and_constant_targets_are_finite():
    y = torch.tensor([[1.0, 3.0], [2.0, 3.0], [3.0, 3.0]])
    model = Constant([2.0, 3.0])
    (row,) = make_trainer(model, lr=0.0).fit(torch.zeros(3, 1), y, torch.zeros(3, 1), y, epochs=1)
    assert row["val_r2"] == pytest.approx((0.0 + 1.0) / 2)  # mean predictor: 0; exact constant: 1


def test_classification_accuracy():
    model = Constant([0.0, 1.0, -1.0])  # always predicts class 1
    y = torch.tensor([1, 1, 0, 2])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    trainer = Trainer(
        model, optimizer, make_loss("cross_entropy", "classification"), task="classification"
    )
    (row,) = trainer.fit(torch.zeros(4, 1), y, torch.zeros(4, 1), y, epochs=1)
    assert set(row) == {"epoch", "train_loss", "val_loss", "val_accuracy"}
    assert row["val_accuracy"] == 0.5


def test_targets_of_the_wrong_kind_are_refused():
    X = torch.zeros(4, 1)
    with pytest.raises(ValueError, match=r"targets must be float of shape \(N, n_targets\)"):
        make_trainer(nn.Linear(1, 1)).fit(X, torch.zeros(4), X, torch.zeros(4))
    model = nn.Linear(1, 3)
    clf = Trainer(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        nn.CrossEntropyLoss(),
        task="classification",
    )
    with pytest.raises(ValueError, match="classification targets must be int64"):
        clf.fit(X, torch.zeros(4, 1), X, torch.zeros(4, 1))
    with pytest.raises(ValueError, match=r"X has 4 rows, y is torch.float32 \(3, 1\)"):
        make_trainer(nn.Linear(1, 1)).fit(X, torch.zeros(3, 1), X, torch.zeros(4, 1))


def test_tiny_mlp_learns_a_line():
    torch.manual_seed(0)
    X = torch.rand(256, 1) * 2 - 1
    y = 2 * X + 1
    model = nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, 1))
    optimizer = make_optimizer("adam", model.parameters(), lr=0.01)
    trainer = Trainer(model, optimizer, make_loss("mse", "regression"), seed=0)
    history = trainer.fit(X, y, X, y, epochs=60, eval_every=20)
    assert history[0]["train_loss"] > history[-1]["train_loss"]
    assert history[-1]["val_loss"] < 1e-3 and history[-1]["val_r2"] > 0.999


def test_scheduler_is_stepped_once_per_epoch():
    model = nn.Linear(3, 1)
    optimizer = make_optimizer("sgd", model.parameters(), lr=0.1)
    scheduler = make_scheduler("step", optimizer, epochs=3, step_size=1, gamma=0.5)
    trainer = Trainer(model, optimizer, nn.MSELoss(), scheduler=scheduler)
    X, y = regression_data()
    trainer.fit(X, y, X, y, epochs=3)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**3)


def test_grad_clip_norm_bounds_the_update():
    model = nn.Linear(1, 1, bias=False)
    nn.init.zeros_(model.weight)
    X, y = torch.ones(4, 1), torch.full((4, 1), 1000.0)
    make_trainer(model, lr=1.0, grad_clip_norm=0.5).fit(X, y, X, y, epochs=1, batch_size=4)
    assert model.weight.item() == pytest.approx(0.5)


def test_no_host_sync_per_batch(monkeypatch):
    calls = []
    item = torch.Tensor.item
    monkeypatch.setattr(torch.Tensor, "item", lambda self: calls.append(1) or item(self))
    X, y = regression_data(n=64)
    make_trainer(nn.Linear(3, 1)).fit(X, y, X, y, epochs=2, batch_size=4, eval_every=5)
    assert len(calls) <= 2  # once per epoch, not once per batch (16 per epoch here)


def test_bf16_is_ignored_on_cpu():
    trainer = make_trainer(nn.Linear(3, 1), bf16=True)
    assert trainer.bf16 is False


def test_resolve_device(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(CatalogueError, match="unknown device 'gpu'; accepted: auto, cpu, cuda"):
        resolve_device("gpu")
    with pytest.raises(CatalogueError, match="unknown device"):
        resolve_device("cuda:x")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        resolve_device("cuda:0")


@cuda
def test_cuda_training_keeps_data_on_device_and_supports_bf16():
    assert resolve_device("auto").type == "cuda"
    with pytest.raises(CatalogueError, match="CUDA device"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")
    torch.manual_seed(0)
    X = torch.rand(512, 1) * 2 - 1
    y = 2 * X + 1
    for bf16 in (False, True):
        model = nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, 1))
        optimizer = make_optimizer("adam", model.parameters(), lr=0.01)
        trainer = Trainer(model, optimizer, nn.MSELoss(), device="cuda", bf16=bf16)
        assert trainer.bf16 is bf16
        history = trainer.fit(X, y, X, y, epochs=30, eval_every=10, batch_size=64)
        assert next(model.parameters()).device.type == "cuda"
        assert history[-1]["val_loss"] < 0.01
