"""Conv-4's initialisations: PyTorch's defaults unchanged, MAML's code's on request."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from metalab.errors import ConfigError
from metalab.models import build_model
from metalab.models.conv4 import Conv4
from tests.helpers.configs import compose_train


def layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def test_the_default_draws_what_pytorch_draws():
    torch.manual_seed(3)
    default = Conv4(1, 5, 28)
    torch.manual_seed(3)
    explicit = Conv4(1, 5, 28, init="torch", head_init_std=None)
    for a, b in zip(default.state_dict().values(), explicit.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    # PyTorch's conv default is U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases
    conv = layers(default)[1]
    assert float(conv.bias.detach().abs().max()) > 0
    assert float(conv.weight.abs().max()) <= 1 / math.sqrt(64 * 9) + 1e-7


def test_glorot_is_mamls_codes_xavier_uniform_with_zero_biases():
    torch.manual_seed(0)
    model = Conv4(1, 5, 28, downsample="stride", global_pool=True, init="glorot")
    for layer in layers(model):
        fan_out, fan_in = layer.weight.shape[0], layer.weight.shape[1]
        field = layer.weight[0, 0].numel()
        bound = math.sqrt(6 / ((fan_in + fan_out) * field))
        weights = layer.weight.detach()
        assert float(weights.abs().max()) <= bound + 1e-7
        # uniform on [-bound, bound]: its standard deviation is bound / sqrt(3)
        assert float(weights.std()) == pytest.approx(bound / math.sqrt(3), rel=0.15)
        assert not layer.bias.any()
    # batch norm keeps its own scale 1 and shift 0
    norm = model.features[0][1]
    assert torch.equal(norm.weight, torch.ones_like(norm.weight))


def test_head_init_std_draws_the_head_from_a_normal_distribution():
    torch.manual_seed(0)
    model = Conv4(1, 20, 28, global_pool=True, init="glorot", head_init_std=1.0)
    head = model.head.weight.detach()
    assert head.shape == (20, 64)
    assert float(head.std()) == pytest.approx(1.0, rel=0.1)
    assert float(head.abs().max()) > 2.0  # a normal's tail, not a uniform's bounded draw
    assert not model.head.bias.any()


def test_the_config_keys_reach_the_model_and_a_bad_name_is_refused():
    cfg = compose_train(
        "experiment=maml_omniglot_5w1s", "model.init=glorot", "model.head_init_std=1.0"
    )
    torch.manual_seed(0)
    model = build_model(cfg.model, (1, 28, 28), 5)
    assert float(model.head.weight.std()) > 0.5 and not model.head.bias.any()
    with pytest.raises(ConfigError, match=r"model.init='xavier' is not known: choose one of"):
        Conv4(1, 5, 28, init="xavier")
