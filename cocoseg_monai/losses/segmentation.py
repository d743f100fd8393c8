"""The original project's loss choices, built from MONAI's losses.

Every loss takes logits ``[B, C, H, W]`` and a label ``[B, 1, H, W]`` of class indices (the
transforms' output) and applies the softmax itself.
"""

from __future__ import annotations

from monai.losses import DiceCELoss, DiceLoss, FocalLoss, TverskyLoss
from torch import nn

__all__ = ["LOSS_TYPES", "build_loss"]

#: Accepted ``loss_type`` values, as in the original ``--loss_type``.
LOSS_TYPES = ("combined", "dice", "ce", "iou", "tversky", "focal")


def build_loss(
    loss_type: str = "combined",
    dice_weight: float = 0.5,
    ce_weight: float = 0.5,
    tversky_alpha: float = 0.6,
    tversky_beta: float = 0.4,
    focal_alpha: float = 1.0,
    focal_gamma: float = 2.0,
    include_background: bool = False,
    batch_dice: bool = True,
) -> nn.Module:
    """Build the segmentation loss named by ``loss_type``.

    ==========  ==================================================================  ================
    loss_type   MONAI loss                                                          parameters
    ==========  ==================================================================  ================
    combined    ``DiceCELoss`` (``dice_weight`` * Dice + ``ce_weight`` * CE)          dice/ce weights
    dice        ``DiceLoss``                                                        -
    ce          ``DiceCELoss`` with the Dice term weighted 0 (cross-entropy)        -
    iou         ``DiceLoss(jaccard=True)`` (soft IoU)                               -
    tversky     ``TverskyLoss``: ``alpha`` weighs false positives, ``beta``        alpha, beta
                false negatives (alpha 0.6 / beta 0.4 when false positives
                dominate, the original's advice)
    focal       ``FocalLoss`` scaled by ``focal_alpha`` (the original's alpha is a  alpha, gamma
                plain multiplier; 1.0 / 2.0 for hard examples)
    ==========  ==================================================================  ================

    ``include_background`` applies to the Dice-type terms: with the default ``False`` they score
    the lesion class(es) only, as the original's binary Dice did; a background Dice near 1 would
    otherwise halve the lesion's share of the loss. Cross-entropy always sees every class, and so
    does the focal loss (without the background channel it would not penalise false positives).
    ``batch_dice`` sums the overlap terms of the Dice-type losses over the whole batch before
    dividing (as nnU-Net does): patches without lesion then cannot dominate the loss with
    their noisy per-sample ratio.

    Raises:
        ValueError: for an unknown ``loss_type`` or negative weights, naming the value.
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"unknown loss_type {loss_type!r}; choose one of {', '.join(LOSS_TYPES)}.")
    for name, value in (
        ("dice_weight", dice_weight),
        ("ce_weight", ce_weight),
        ("tversky_alpha", tversky_alpha),
        ("tversky_beta", tversky_beta),
        ("focal_alpha", focal_alpha),
        ("focal_gamma", focal_gamma),
    ):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}.")
    dice_like = {"include_background": include_background, "to_onehot_y": True, "softmax": True, "batch": batch_dice}
    if loss_type == "combined":
        if dice_weight + ce_weight == 0:
            raise ValueError("dice_weight and ce_weight are both 0: the combined loss would be constant.")
        return DiceCELoss(lambda_dice=dice_weight, lambda_ce=ce_weight, **dice_like)
    if loss_type == "dice":
        return DiceLoss(**dice_like)
    if loss_type == "ce":
        return DiceCELoss(lambda_dice=0.0, lambda_ce=1.0, **dice_like)
    if loss_type == "iou":
        return DiceLoss(jaccard=True, **dice_like)
    if loss_type == "tversky":
        return TverskyLoss(alpha=tversky_alpha, beta=tversky_beta, **dice_like)
    return FocalLoss(include_background=True, to_onehot_y=True, use_softmax=True, gamma=focal_gamma, weight=focal_alpha)
