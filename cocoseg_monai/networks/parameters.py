"""Parameter counts: total, trainable and frozen, for a model and for each of its parts."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

__all__ = ["ParameterCount", "count_parameters", "parameter_breakdown", "format_breakdown"]


@dataclass(frozen=True)
class ParameterCount:
    """Numbers of parameters (elements, not tensors)."""

    total: int
    trainable: int
    frozen: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def count_parameters(module: nn.Module) -> ParameterCount:
    """Count ``module``'s parameters; a parameter shared by several submodules counts once."""
    trainable = frozen = 0
    for p in module.parameters():  # parameters() already yields each shared tensor once
        if p.requires_grad:
            trainable += p.numel()
        else:
            frozen += p.numel()
    return ParameterCount(trainable + frozen, trainable, frozen)


def parameter_breakdown(model: nn.Module) -> dict[str, ParameterCount]:
    """Counts per direct child of ``model`` plus ``"total"``.

    A child that is the same module as an earlier one (``share_vgg``) is listed once, under
    the first name, so the parts add up to the total.
    """
    parts: dict[str, ParameterCount] = {}
    seen: set[int] = set()
    for name, child in model.named_children():
        if id(child) in seen:
            continue
        seen.add(id(child))
        parts[name] = count_parameters(child)
    parts["total"] = count_parameters(model)
    return parts


def format_breakdown(parts: dict[str, ParameterCount]) -> str:
    """A fixed-width table of :func:`parameter_breakdown`, counts in millions."""
    lines = [f"{'part':<14}{'total':>10}{'trainable':>12}{'frozen':>10}"]
    for name, c in parts.items():
        if name == "total":
            lines.append("-" * 46)
        lines.append(f"{name:<14}{c.total / 1e6:>9.3f}M{c.trainable / 1e6:>11.3f}M{c.frozen / 1e6:>9.3f}M")
    return "\n".join(lines)
