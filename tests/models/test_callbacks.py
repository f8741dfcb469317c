import io
import os

import pytest
import torch
from torch import nn

from models.callbacks import Callback, Checkpointing, EarlyStopping, ProgressBar
from models.checkpoints import (
    checkpoint_paths,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from models.errors import CheckpointError
from models.optim import make_scheduler
from models.trainer import Trainer


class Interrupted(Exception):
    pass


class Interrupt(Callback):
    """Raises `exc` from `hook` at `epoch`, like a worker being killed."""

    def __init__(self, epoch, hook="on_epoch_end", exc=Interrupted):
        self.epoch, self.hook, self.exc = epoch, hook, exc

    def on_epoch_start(self, trainer, epoch):
        if self.hook == "on_epoch_start" and epoch == self.epoch:
            raise self.exc()

    def on_epoch_end(self, trainer, epoch, train_loss):
        if self.hook == "on_epoch_end" and epoch == self.epoch:
            raise self.exc()


def data(n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 4, generator=g)
    return X, X[:, :1] - 2 * X[:, 1:2] + 0.1 * torch.randn(n, 1, generator=g)


def build_run(init_seed, callbacks, device="cpu"):
    """Model with dropout, SGD with momentum and a step schedule: all state that must resume."""
    torch.manual_seed(init_seed)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    scheduler = make_scheduler("step", optimizer, epochs=6, step_size=2, gamma=0.5)
    trainer = Trainer(
        model,
        optimizer,
        nn.MSELoss(),
        callbacks=callbacks,
        seed=3,
        scheduler=scheduler,
        device=device,
    )
    return model, trainer


def fit(trainer, resume_from=None):
    X, y = data()
    X_test, y_test = data(seed=1)
    return trainer.fit(
        X, y, X_test, y_test, epochs=6, eval_every=2, batch_size=8, resume_from=resume_from
    )


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def early_stopping():
    return EarlyStopping(patience=10, restore_best_weights=True)


@pytest.mark.parametrize(
    ("interrupt", "checkpoint_first", "as_dict"),
    [
        (Interrupt(3, "on_epoch_end"), True, False),  # checkpoint of epoch 3 written, then killed
        (Interrupt(3, "on_epoch_end"), False, False),  # killed before epoch 3's checkpoint
        (Interrupt(4, "on_epoch_start", KeyboardInterrupt), True, True),  # Ctrl-C, loaded dict
    ],
)
def test_resumed_run_ends_with_exactly_the_same_weights(
    tmp_path, interrupt, checkpoint_first, as_dict
):
    model, trainer = build_run(0, [early_stopping()])
    history = fit(trainer)

    ckpt = Checkpointing(tmp_path, every=1, keep=2)
    _, interrupted = build_run(0, [ckpt, interrupt] if checkpoint_first else [interrupt, ckpt])
    interrupted.callbacks.append(early_stopping())
    with pytest.raises((Interrupted, KeyboardInterrupt)):
        fit(interrupted)
    expected_epoch = 3 if checkpoint_first else 2
    assert checkpoint_paths(tmp_path)[-1].name == f"epoch-{expected_epoch:06d}.ckpt"

    torch.manual_seed(1234)  # a different global RNG state and different initial weights
    resumed_model, resumed = build_run(99, [Checkpointing(tmp_path), early_stopping()])
    source = load_checkpoint(latest_checkpoint(tmp_path)) if as_dict else tmp_path
    resumed_history = fit(resumed, resume_from=source)

    assert resumed_history == history
    for a, b in zip(model.state_dict().values(), resumed_model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert resumed.callbacks[1].best_epoch == trainer.callbacks[0].best_epoch


@cuda
def test_resume_on_cuda_restores_the_cuda_rng(tmp_path):
    model, trainer = build_run(0, [], device="cuda")
    fit(trainer)
    _, interrupted = build_run(0, [Checkpointing(tmp_path), Interrupt(3)], device="cuda")
    with pytest.raises(Interrupted):
        fit(interrupted)
    torch.manual_seed(1234)
    resumed_model, resumed = build_run(99, [], device="cuda")
    fit(resumed, resume_from=tmp_path)
    for a, b in zip(model.state_dict().values(), resumed_model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_early_stopping_stops_and_restores_best_weights():
    X = torch.linspace(-1, 1, 8).unsqueeze(1)  # trains towards y = x, scored against y = -x
    model = nn.Linear(1, 1)
    nn.init.zeros_(model.weight)
    nn.init.zeros_(model.bias)
    weights = {}

    class Snapshot(Callback):
        def on_evaluate(self, trainer, row):
            weights[row["epoch"]] = model.weight.detach().clone()

    stopper = EarlyStopping(patience=2)
    trainer = Trainer(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        nn.MSELoss(),
        callbacks=[Snapshot(), stopper],
    )
    history = trainer.fit(X, X, X, -X, epochs=20, eval_every=1, batch_size=8)
    losses = [row["val_loss"] for row in history]
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert losses == sorted(losses)
    assert trainer.should_stop and stopper.stopped_epoch == 3 and stopper.best_epoch == 1
    assert torch.equal(model.weight, weights[1]) and not torch.equal(weights[1], weights[3])


def test_early_stopping_max_mode_min_delta_and_unknown_monitor():
    stopper = EarlyStopping(monitor="val_r2", mode="max", min_delta=0.1, patience=1)
    trainer = type("T", (), {"should_stop": False, "model": nn.Linear(1, 1), "epoch": 0})()
    stopper.on_evaluate(trainer, {"epoch": 1, "val_r2": 0.5})
    stopper.on_evaluate(trainer, {"epoch": 2, "val_r2": 0.55})  # not better by min_delta
    assert trainer.should_stop and stopper.best == 0.5
    with pytest.raises(ValueError, match="monitors 'val_accuracy'"):
        EarlyStopping(monitor="val_accuracy").on_evaluate(trainer, {"epoch": 1, "val_loss": 1.0})


def run_with_checkpoints(directory, epochs, keep=2, every=1):
    model = nn.Linear(4, 1)
    trainer = Trainer(
        model,
        torch.optim.SGD(model.parameters(), lr=0.01),
        nn.MSELoss(),
        callbacks=[Checkpointing(directory, every=every, keep=keep)],
    )
    X, y = data()
    trainer.fit(X, y, X, y, epochs=epochs, eval_every=2)
    return trainer


def test_checkpointing_keeps_the_newest_and_leaves_no_temp_files(tmp_path):
    run_with_checkpoints(tmp_path, epochs=5, keep=2, every=2)
    assert sorted(os.listdir(tmp_path)) == ["epoch-000004.ckpt", "epoch-000005.ckpt"]  # 5: fit end
    state = load_checkpoint(tmp_path / "epoch-000005.ckpt")
    assert state["epoch"] == 5 and [row["epoch"] for row in state["history"]] == [2, 4, 5]
    assert set(state) >= {"model", "optimizer", "scheduler", "rng", "history", "callbacks"}


def test_failed_save_leaves_no_temp_file_and_the_old_checkpoint(tmp_path, monkeypatch):
    save_checkpoint({"format": "x"}, tmp_path / "epoch-000001.ckpt")

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"format": "x"}, tmp_path / "epoch-000002.ckpt")
    assert os.listdir(tmp_path) == ["epoch-000001.ckpt"]


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_latest_checkpoint_skips_truncated_corrupt_and_pickled_objects(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    run_with_checkpoints(tmp_path, epochs=3, keep=3)
    newest = tmp_path / "epoch-000003.ckpt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    (tmp_path / "epoch-000004.ckpt").write_bytes(b"not a checkpoint")
    torch.save({"format": "trainserve.trainer/1", "x": Evil()}, tmp_path / "epoch-000005.ckpt")
    assert latest_checkpoint(tmp_path) == tmp_path / "epoch-000002.ckpt"
    for bad in (newest, tmp_path / "epoch-000005.ckpt"):
        with pytest.raises(CheckpointError):
            load_checkpoint(bad)


def test_resume_from_a_directory_without_usable_checkpoints_starts_afresh(tmp_path):
    (tmp_path / "epoch-000007.ckpt").write_bytes(b"garbage")
    model = nn.Linear(4, 1)
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.01), nn.MSELoss())
    X, y = data()
    history = trainer.fit(X, y, X, y, epochs=2, eval_every=1, resume_from=tmp_path)
    assert [row["epoch"] for row in history] == [1, 2]


def test_checkpoint_of_another_model_is_refused(tmp_path):
    run_with_checkpoints(tmp_path, epochs=1)
    model = nn.Linear(5, 1)
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.01), nn.MSELoss())
    X, y = torch.zeros(4, 5), torch.zeros(4, 1)
    with pytest.raises(CheckpointError, match="does not fit"):
        trainer.fit(X, y, X, y, epochs=2, resume_from=tmp_path)


def test_early_stopping_state_travels_in_the_trainer_state():
    X, y = data()
    model = nn.Linear(4, 1)
    stopper = EarlyStopping(patience=3)
    trainer = Trainer(
        model, torch.optim.SGD(model.parameters(), lr=0.01), nn.MSELoss(), callbacks=[stopper]
    )
    trainer.fit(X, y, X, -y, epochs=4, eval_every=1)
    state = trainer.state_dict()
    assert state["callbacks"]["EarlyStopping"]["best_epoch"] == stopper.best_epoch

    restored = EarlyStopping(patience=3)
    other = nn.Linear(4, 1)
    Trainer(
        other, torch.optim.SGD(other.parameters(), lr=0.01), nn.MSELoss(), callbacks=[restored]
    ).load_state_dict(state)
    assert (restored.best, restored.best_epoch, restored.wait) == (
        stopper.best,
        stopper.best_epoch,
        stopper.wait,
    )
    assert torch.equal(
        restored.state_dict()["best_weights"]["weight"],
        stopper.state_dict()["best_weights"]["weight"],
    )


def fit_with_bar(bar):
    X, y = data()
    model = nn.Linear(4, 1)
    trainer = Trainer(
        model, torch.optim.SGD(model.parameters(), lr=0.01), nn.MSELoss(), callbacks=[bar]
    )
    trainer.fit(X, y, X, y, epochs=3, eval_every=1)


def test_progress_bar_shows_epochs_and_losses():
    out = io.StringIO()
    fit_with_bar(ProgressBar(file=out))
    assert "3/3" in out.getvalue() and "loss=" in out.getvalue() and "val_loss=" in out.getvalue()


def test_progress_bar_writes_to_stderr_and_can_be_disabled(capsys):
    fit_with_bar(ProgressBar(disable=True))
    assert capsys.readouterr().err == ""
    fit_with_bar(ProgressBar())
    captured = capsys.readouterr()
    assert captured.out == "" and "3/3" in captured.err
