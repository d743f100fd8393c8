"""The original loss choices, built from MONAI's losses."""

from __future__ import annotations

import pytest
import torch

from cocoseg_monai.losses import LOSS_TYPES, build_loss
from cocoseg_monai.networks import CoCoSegNet

from .conftest import TINY_FEATURES


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_each_loss_decreases_on_a_fixed_batch(loss_type):
    net = CoCoSegNet(features=TINY_FEATURES)
    x = torch.rand(2, 2, 24, 24)
    y = torch.zeros(2, 1, 24, 24)
    y[:, :, 6:14, 8:16] = 1
    x[:, 1:2] += y  # a PET-bright lesion: learnable
    loss_fn = build_loss(loss_type)
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(12):
        opt.zero_grad()
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.9 * losses[0], losses


def test_combined_loss_weights_dice_and_ce():
    logits, label = torch.randn(2, 2, 8, 8), (torch.rand(2, 1, 8, 8) > 0.5).float()
    dice = build_loss("dice")(logits, label)
    ce = build_loss("ce")(logits, label)
    torch.testing.assert_close(build_loss("combined", dice_weight=0.7, ce_weight=0.3)(logits, label), 0.7 * dice + 0.3 * ce)


def test_focal_alpha_scales_the_loss():
    logits, label = torch.randn(2, 2, 8, 8), (torch.rand(2, 1, 8, 8) > 0.5).float()
    torch.testing.assert_close(
        build_loss("focal", focal_alpha=0.5)(logits, label), 0.5 * build_loss("focal", focal_alpha=1.0)(logits, label)
    )


def test_tversky_with_equal_weights_is_dice():
    logits, label = torch.randn(2, 2, 8, 8), (torch.rand(2, 1, 8, 8) > 0.5).float()
    torch.testing.assert_close(
        build_loss("tversky", tversky_alpha=0.5, tversky_beta=0.5)(logits, label), build_loss("dice")(logits, label)
    )


def test_unknown_loss_type_is_refused_naming_it_and_the_choices():
    with pytest.raises(ValueError, match="'dicee'.*combined, dice, ce, iou, tversky, focal"):
        build_loss("dicee")


def test_negative_weight_is_refused_naming_it():
    with pytest.raises(ValueError, match="ce_weight"):
        build_loss("combined", ce_weight=-1)
