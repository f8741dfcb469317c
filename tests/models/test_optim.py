import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models.errors import CatalogueError
from models.optim import (
    LOSSES,
    LOSSES_BY_TASK,
    OPTIMIZERS,
    SCHEDULES,
    default_loss,
    make_loss,
    make_optimizer,
    make_scheduler,
)


def params():
    return nn.Linear(3, 2).parameters()


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("sgd", torch.optim.SGD),
        ("adam", torch.optim.Adam),
        ("adamw", torch.optim.AdamW),
        ("rmsprop", torch.optim.RMSprop),
    ],
)
def test_make_optimizer_builds_each_with_lr_and_weight_decay(name, cls):
    opt = make_optimizer(name, params(), lr=0.05, weight_decay=0.01)
    assert type(opt) is cls
    assert opt.param_groups[0]["lr"] == 0.05
    assert opt.param_groups[0]["weight_decay"] == 0.01


def test_momentum_goes_to_sgd_and_rmsprop_only():
    assert make_optimizer("sgd", params(), lr=0.1, momentum=0.9).param_groups[0]["momentum"] == 0.9
    assert (
        make_optimizer("rmsprop", params(), lr=0.1, momentum=0.5).param_groups[0]["momentum"] == 0.5
    )
    with pytest.raises(CatalogueError, match="momentum applies to: sgd, rmsprop"):
        make_optimizer("adam", params(), lr=0.1, momentum=0.9)


def test_unknown_optimizer_lists_accepted_names():
    with pytest.raises(CatalogueError, match="unknown optimizer 'lbfgs'; accepted: sgd, adam"):
        make_optimizer("lbfgs", params(), lr=0.1)
    assert OPTIMIZERS == ("sgd", "adam", "adamw", "rmsprop")


def test_loss_names_and_defaults():
    assert set(LOSSES) == {n for names in LOSSES_BY_TASK.values() for n in names}
    assert default_loss("regression") == "mse"
    assert default_loss("classification") == "cross_entropy"
    with pytest.raises(CatalogueError, match="unknown task"):
        default_loss("ranking")


@pytest.mark.parametrize(
    ("name", "cls"), [("mse", nn.MSELoss), ("l1", nn.L1Loss), ("smooth_l1", nn.SmoothL1Loss)]
)
def test_regression_losses(name, cls):
    assert type(make_loss(name, "regression")) is cls


def test_cross_entropy_loss():
    assert type(make_loss("cross_entropy", "classification")) is nn.CrossEntropyLoss


def test_bce_with_logits_uses_one_hot_class_targets():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    target = torch.tensor([0, 1])
    expected = F.binary_cross_entropy_with_logits(
        logits, torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    )
    got = make_loss("bce_with_logits", "classification")(logits, target)
    assert torch.allclose(got, expected)


@pytest.mark.parametrize(
    ("name", "task", "accepted"),
    [
        ("cross_entropy", "regression", "mse, l1, smooth_l1"),
        ("bce_with_logits", "regression", "mse, l1, smooth_l1"),
        ("mse", "classification", "cross_entropy, bce_with_logits"),
        ("smooth_l1", "classification", "cross_entropy, bce_with_logits"),
    ],
)
def test_loss_that_does_not_fit_the_task_is_refused(name, task, accepted):
    with pytest.raises(CatalogueError, match=f"does not fit a {task} task.*{accepted}"):
        make_loss(name, task)


def test_unknown_loss_is_refused():
    with pytest.raises(CatalogueError, match="unknown loss 'hinge'; accepted: mse"):
        make_loss("hinge", "classification")


def test_schedules():
    assert SCHEDULES == ("none", "step", "cosine")
    opt = make_optimizer("sgd", params(), lr=1.0)
    assert make_scheduler(None, opt, epochs=5) is None
    assert make_scheduler("none", opt, epochs=5) is None
    step = make_scheduler("step", opt, epochs=9)
    assert isinstance(step, torch.optim.lr_scheduler.StepLR) and step.step_size == 3
    with pytest.raises(CatalogueError, match="accepted: none, step, cosine"):
        make_scheduler("exponential", opt, epochs=5)


def test_step_schedule_changes_lr():
    opt = make_optimizer("sgd", params(), lr=1.0)
    sched = make_scheduler("step", opt, epochs=4, step_size=2, gamma=0.5)
    lrs = []
    for _ in range(4):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs == [1.0, 0.5, 0.5, 0.25]


def test_cosine_schedule_anneals_to_zero():
    opt = make_optimizer("sgd", params(), lr=1.0)
    sched = make_scheduler("cosine", opt, epochs=4)
    lrs = []
    for _ in range(4):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[0] < 1.0 and all(a > b for a, b in zip(lrs, lrs[1:], strict=False))
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12)
