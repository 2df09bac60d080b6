"""Parameter groups and the learning-rate schedule."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from lvu.errors import ConfigError
from lvu.schema import OptimConfig, OptimizerName, SchedulerConfig, SchedulerName
from lvu.tasks.optim import build_optimizer, lr_lambda, parameter_groups


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.head = nn.Linear(4, 2)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 4, 4))
        self.frozen = nn.Linear(4, 4).requires_grad_(False)

    def no_weight_decay(self):
        return {"cls_token"}


def _names(groups, decay):
    return sorted(n for g in groups if (g["weight_decay"] > 0) == decay for n in g["names"])


def test_no_decay_for_biases_norms_and_listed_parameters_and_frozen_left_out():
    groups = parameter_groups(Net(), OptimConfig(weight_decay=0.05))
    assert _names(groups, decay=True) == ["head.weight", "proj.weight"]
    assert _names(groups, decay=False) == ["cls_token", "head.bias", "norm.bias", "norm.weight", "proj.bias"]
    assert not any(n.startswith("frozen") for g in groups for n in g["names"])


def test_lr_by_prefix_longest_prefix_wins_and_unmatched_prefix_is_an_error():
    cfg = OptimConfig(lr=1e-3, lr_by_prefix={"head": 1e-4, "head.bias": 1e-5})
    lrs = {n: g["lr"] for g in parameter_groups(Net(), cfg) for n in g["names"]}
    assert lrs["proj.weight"] == 1e-3 and lrs["head.weight"] == 1e-4 and lrs["head.bias"] == 1e-5
    with pytest.raises(ConfigError, match="no trainable parameter starts with 'frozen'"):
        parameter_groups(Net(), OptimConfig(lr_by_prefix={"frozen": 1.0}))
    with pytest.raises(ConfigError, match="no trainable parameters"):
        parameter_groups(nn.Linear(2, 2).requires_grad_(False), OptimConfig())


@pytest.mark.parametrize(("name", "cls"), [("adamw", torch.optim.AdamW), ("adam", torch.optim.Adam),
                                           ("sgd", torch.optim.SGD)])
def test_optimizer_kinds_and_hyperparameters(name, cls):
    opt = build_optimizer(Net(), OptimConfig(name=OptimizerName(name), lr=0.5, betas=[0.8, 0.9], weight_decay=0.1))
    assert isinstance(opt, cls)
    assert all(g["lr"] == 0.5 for g in opt.param_groups)
    if name != "sgd":
        assert opt.defaults["betas"] == (0.8, 0.9)


def test_warmup_then_cosine_to_floor():
    f = lr_lambda(SchedulerConfig(name=SchedulerName.cosine, warmup_epochs=2, min_lr_ratio=0.1), total_steps=110,
                  steps_per_epoch=5)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)  # 10 warm-up steps
    assert f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.1 + 0.9 * 0.5)  # half way through the decay
    assert f(110) == pytest.approx(0.1)
    values = [f(s) for s in range(10, 111)]
    assert all(a >= b for a, b in itertools.pairwise(values))


def test_linear_constant_and_exponential_per_epoch():
    linear = lr_lambda(SchedulerConfig(name=SchedulerName.linear), total_steps=10, steps_per_epoch=None)
    assert linear(0) == 1.0 and linear(5) == pytest.approx(0.5) and linear(10) == 0.0
    assert lr_lambda(SchedulerConfig(warmup_steps=4), 100, None)(50) == 1.0
    exp = lr_lambda(SchedulerConfig(name=SchedulerName.exponential, gamma=0.9), total_steps=100, steps_per_epoch=7)
    assert [exp(s) for s in (0, 6, 7, 13, 14)] == pytest.approx([1, 1, 0.9, 0.9, 0.81])
    assert math.isclose(exp(99), 0.9 ** 14)


def test_epoch_based_schedule_needs_a_known_epoch_length():
    with pytest.raises(ConfigError, match="epoch length is unknown"):
        lr_lambda(SchedulerConfig(warmup_epochs=1), 100, None)
