"""LN-fit: only the LayerNorm affine parameters (γ, β of y = γ·(x − μ)/σ + β) of both towers train.

A LayerNorm is any ``torch.nn.LayerNorm`` instance — open_clip's ``LayerNorm`` / ``LayerNormFp32`` subclass it.
The temperature ``logit_scale`` is frozen. No state crosses tasks beyond the weights.
"""

from __future__ import annotations

import torch

from fomoflux.methods.base import Method, register_method

__all__ = ["LNFit", "layernorm_parameters"]


def layernorm_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The weight and bias (when affine) of every LayerNorm module of ``model``, in module order."""
    params: list[torch.nn.Parameter] = []
    for module in model.modules():
        if isinstance(module, torch.nn.LayerNorm):
            params.extend(module.parameters(recurse=False))
    return params


@register_method("lnfit")
class LNFit(Method):
    def trainable_parameters(self, model: torch.nn.Module) -> list[torch.nn.Parameter]:
        return layernorm_parameters(model)
