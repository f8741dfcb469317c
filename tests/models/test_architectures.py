import dataclasses
import json

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from models import builtin_architectures
from models.architectures import (
    ARCHITECTURES,
    MAX_PARAMETERS,
    count_parameters,
    register_architecture,
)
from models.catalogue import get_architecture, list_architectures
from models.errors import CatalogueError
from models.params import bounded, build_config
from models.torchvision_archs import TORCHVISION_MODELS

FLAT_SHAPES = [(13,), (10,)]
IMAGE_SHAPES = [(1, 28, 28), (3, 32, 32)]
OUTPUT_SIZE = {"regression": 1, "classification": 10}


def _supported_shapes(arch):
    if arch.input_kind == "features":
        return FLAT_SHAPES + IMAGE_SHAPES
    if arch.input_kind == "image":
        return IMAGE_SHAPES
    return [tuple(int(d) for d in arch.input_kind.split("x"))]


CASES = [
    pytest.param(arch.name, shape, task, id=f"{arch.name}-{'x'.join(map(str, shape))}-{task}")
    for arch in list_architectures()
    for shape in _supported_shapes(arch)
    for task in arch.tasks
]


@pytest.mark.parametrize(("name", "shape", "task"), CASES)
def test_builds_and_trains_one_step(name, shape, task):
    torch.manual_seed(0)
    out = OUTPUT_SIZE[task]
    model = get_architecture(name).build(shape, out)
    x = torch.randn(4, *shape)
    pred = model(x)
    assert pred.shape == (4, out)
    if task == "regression":
        loss = F.mse_loss(pred, torch.randn(4, out))
    else:
        loss = F.cross_entropy(pred, torch.tensor([0, 1, 2, 3]))
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
    assert torch.isfinite(loss)


def test_expected_architectures_are_registered():
    names = [a.name for a in list_architectures()]
    assert names == sorted(names)
    expected = {"house_prices_mlp", "mlp", "mnist_convnet", "cnn", *TORCHVISION_MODELS}
    assert expected <= set(names)
    assert {"resnet18", "resnet34", "mobilenet_v3_small", "efficientnet_b0"} <= set(names)


def test_tasks():
    assert get_architecture("house_prices_mlp").task == "regression"
    assert get_architecture("mlp").task == "both"
    assert get_architecture("cnn").task == "both"
    assert get_architecture("resnet18").task == "classification"
    with pytest.raises(CatalogueError, match="resnet18' does not support regression"):
        get_architecture("resnet18").check_task("regression")
    get_architecture("mlp").check_task("regression")


def test_mnist_convnet_matches_the_tutorial():
    model = get_architecture("mnist_convnet").build((1, 28, 28), 10)
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    assert [n for n, _ in layers] == ["conv1", "conv2", "fc1", "fc2"]
    conv1, conv2, fc1, fc2 = (m for _, m in layers)
    assert (conv1.in_channels, conv1.out_channels, conv1.kernel_size) == (1, 16, (3, 3))
    assert (conv2.in_channels, conv2.out_channels, conv2.kernel_size) == (16, 8, (3, 3))
    assert conv1.padding == conv2.padding == (1, 1)
    assert (fc1.in_features, fc1.out_features) == (28 * 28 * 8, 32)
    assert (fc2.in_features, fc2.out_features) == (32, 10)
    by_hand = (1 * 16 * 9 + 16) + (16 * 8 * 9 + 8) + (6272 * 32 + 32) + (32 * 10 + 10)
    assert count_parameters(model) == by_hand == 202_386

    x = torch.randn(2, 1, 28, 28)
    h = F.relu(conv2(F.relu(conv1(x))))
    expected = fc2(F.relu(fc1(h.flatten(1))))
    torch.testing.assert_close(model(x), expected)


def test_house_prices_mlp_uses_sigmoid_and_hidden_13():
    arch = get_architecture("house_prices_mlp")
    assert arch.default_params() == {"hidden_size": 13}
    model = arch.build((13,), 1)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(13, 13), (13, 1)]
    x = torch.randn(5, 13)
    fc1, fc2 = linears
    torch.testing.assert_close(model(x), fc2(torch.sigmoid(fc1(x))))
    assert count_parameters(model) == 13 * 13 + 13 + 13 + 1


def test_mlp_is_the_tutorial_classifier_on_mnist_shapes():
    model = get_architecture("mlp").build((1, 28, 28), 10)
    kinds = [type(m) for m in model]
    assert kinds == [nn.Flatten, nn.Linear, nn.ReLU, nn.Linear]
    assert (model[1].in_features, model[1].out_features) == (784, 128)
    assert (model[3].in_features, model[3].out_features) == (128, 10)


def test_mlp_hidden_layers_and_dropout():
    model = get_architecture("mlp").build((10,), 3, {"hidden_layers": 3, "dropout": 0.2})
    assert sum(isinstance(m, nn.Linear) for m in model) == 4
    assert sum(isinstance(m, nn.Dropout) for m in model) == 3


def test_cnn_pooling_stops_at_one_pixel():
    params = {"channels": [4, 4, 4, 4, 4, 4], "hidden_size": 8}
    model = get_architecture("cnn").build((1, 28, 28), 10, params)
    # 28 -> 14 -> 7 -> 3 -> 1, then no more pooling
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 4
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    tiny = get_architecture("cnn").build((3, 1, 1), 2)
    assert not any(isinstance(m, nn.MaxPool2d) for m in tiny.modules())


def test_cnn_eval_mode_is_deterministic():
    torch.manual_seed(0)
    params = {"batch_norm": True, "dropout": 0.5, "channels": [8, 16]}
    model = get_architecture("cnn").build((3, 32, 32), 10, params)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert any(isinstance(m, nn.Dropout2d) for m in model.modules())
    x = torch.randn(8, 3, 32, 32)
    model.train()
    assert not torch.equal(model(x), model(x))  # dropout is active while training
    model.eval()
    with torch.inference_mode():
        torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)


def test_torchvision_stem_adapted_to_channels_and_small_inputs():
    arch = get_architecture("resnet18")
    model = arch.build((1, 28, 28), 10)
    assert model.conv1.in_channels == 1
    assert (model.conv1.kernel_size, model.conv1.stride) == ((3, 3), (1, 1))
    assert isinstance(model.maxpool, nn.Identity)
    big = arch.build((3, 64, 64), 10, {"small_input_stem": False})
    assert (big.conv1.kernel_size, big.conv1.stride) == ((7, 7), (2, 2))
    assert isinstance(big.maxpool, nn.MaxPool2d)
    effnet = get_architecture("efficientnet_b0").build((1, 28, 28), 10)
    assert effnet.features[0][0].in_channels == 1
    assert effnet.features[0][0].stride == (1, 1)


@pytest.mark.parametrize(
    ("name", "params", "needle"),
    [
        ("mlp", {"hidden_size": 100_000}, "hidden_size"),
        ("mlp", {"hidden_size": 0}, "hidden_size"),
        ("mlp", {"dropout": 0.95}, "dropout"),
        ("mlp", {"hidden_layers": "two"}, "hidden_layers"),
        ("mlp", {"hidden_size": 12.5}, "hidden_size"),
        ("mlp", {"depth": 3}, "depth"),
        ("house_prices_mlp", {"hidden_size": 2000}, "hidden_size"),
        ("cnn", {"channels": [16] * 9}, "channels"),
        ("cnn", {"channels": [1024]}, "channels"),
        ("cnn", {"channels": 16}, "channels"),
        ("cnn", {"kernel_size": 4}, "kernel_size"),
        ("cnn", {"batch_norm": 1}, "batch_norm"),
        ("mnist_convnet", {"dropout": -0.1}, "dropout"),
        ("resnet18", {"small_input_stem": "yes"}, "small_input_stem"),
    ],
)
def test_bad_params_are_refused(name, params, needle):
    shape = (1, 28, 28) if name != "house_prices_mlp" else (13,)
    with pytest.raises(CatalogueError, match=needle) as info:
        get_architecture(name).build(shape, 10, params)
    assert f"architecture '{name}'" in str(info.value)


def test_unknown_architecture_lists_known_names():
    with pytest.raises(CatalogueError) as info:
        get_architecture("resnet99")
    message = str(info.value)
    assert message.startswith("architecture 'resnet99' is unknown; known: cnn, efficientnet_b0")
    for arch in list_architectures():
        assert arch.name in message


def test_duplicate_registration_is_refused(monkeypatch):
    monkeypatch.setattr(ARCHITECTURES, "_entries", dict(ARCHITECTURES._entries))
    before = get_architecture("mlp")
    with pytest.raises(ValueError, match="already registered"):
        register_architecture(
            "mlp",
            tasks=("regression",),
            description="x",
            config_cls=builtin_architectures.MLPConfig,
            input_kind="features",
        )(lambda config, shape, out: nn.Linear(shape[0], out))
    assert get_architecture("mlp") is before


def test_register_new_architecture_and_unbounded_params(monkeypatch):
    monkeypatch.setattr(ARCHITECTURES, "_entries", dict(ARCHITECTURES._entries))

    @dataclasses.dataclass(frozen=True)
    class LinearConfig:
        bias: bool = bounded(True)

    @register_architecture(
        "linear",
        tasks=("regression",),
        description="A linear model.",
        config_cls=LinearConfig,
        input_kind="features",
    )
    def build(config, shape, out):
        return nn.Linear(shape[0], out, bias=config.bias)

    assert get_architecture("linear").build((3,), 1, {"bias": False}).bias is None

    @dataclasses.dataclass(frozen=True)
    class Unbounded:
        width: int = 10

    with pytest.raises(ValueError, match="width"):
        register_architecture(
            "unbounded", tasks=("regression",), description="", config_cls=Unbounded, input_kind=""
        )


@pytest.mark.parametrize(
    ("name", "shape", "needle"),
    [
        ("mnist_convnet", (13,), "needs inputs of shape 1x28x28; got 13"),
        ("mnist_convnet", (3, 32, 32), "needs inputs of shape 1x28x28; got 3x32x32"),
        ("cnn", (13,), "needs image inputs of shape CxHxW; got 13"),
        ("resnet18", (28, 28), "got 28x28"),
        ("mlp", (), "positive integers"),
        ("mlp", (0, 3), "positive integers"),
    ],
)
def test_wrong_input_shape_is_refused(name, shape, needle):
    with pytest.raises(CatalogueError, match=needle):
        get_architecture(name).build(shape, 10)


def test_bad_output_size_is_refused():
    with pytest.raises(CatalogueError, match="output size"):
        get_architecture("mlp").build((13,), 0)


def test_parameter_count_guard():
    params = {"channels": [256], "pool": False, "hidden_size": 1024}
    with pytest.raises(CatalogueError, match="over the limit"):
        get_architecture("cnn").build((3, 32, 32), 10, params)


def _largest_config(arch):
    values = {}
    for name, bound in arch.param_bounds().items():
        default = arch.default_params()[name]
        if "choices" in bound:
            values[name] = max(bound["choices"])
        elif isinstance(default, list):
            values[name] = [bound["max"]] * bound["max_len"]
        elif isinstance(default, bool):
            values[name] = default
        else:
            values[name] = bound["max"]
    return values


@pytest.mark.parametrize("name", ["house_prices_mlp", "mlp", "mnist_convnet", *TORCHVISION_MODELS])
def test_worst_case_sizes_stay_under_the_limit(name):
    arch = get_architecture(name)
    config = build_config(arch.config_cls, _largest_config(arch), owner=name)
    for shape in _supported_shapes(arch):
        with torch.device("meta"):
            model = arch.builder(config, shape, 10)
        assert count_parameters(model) < MAX_PARAMETERS


def test_catalogue_listing_is_json_serialisable():
    listing = [arch.describe() for arch in list_architectures()]
    decoded = json.loads(json.dumps(listing))
    assert decoded == listing
    by_name = {entry["name"]: entry for entry in decoded}
    assert by_name["cnn"]["params"]["channels"] == [16, 32]
    assert by_name["cnn"]["bounds"]["kernel_size"]["choices"] == [3, 5]
    assert by_name["mlp"]["task"] == "both"
    for entry in decoded:
        assert entry["task"] in {"regression", "classification", "both"}
        assert entry["description"]
        for name, bound in entry["bounds"].items():
            unbounded = bound["max"] is None and "choices" not in bound
            assert not unbounded or isinstance(entry["params"][name], bool), name


def test_default_params_round_trip_through_build():
    for arch in list_architectures():
        shape = _supported_shapes(arch)[0]
        model = arch.build(shape, 2, arch.default_params())
        assert count_parameters(model) > 0
