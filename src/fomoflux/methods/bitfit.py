"""BitFit (Ben Zaken et al., 2022): only the bias terms of both towers train, every weight matrix stays frozen.

A bias is any parameter whose name ends in ``bias``: Linear and LayerNorm biases and the attention in-projection
bias ``in_proj_bias``. The temperature ``logit_scale`` is frozen. No state crosses tasks beyond the weights.
"""

from __future__ import annotations

import torch

from fomoflux.methods.base import Method, register_method

__all__ = ["BitFit"]


@register_method("bitfit")
class BitFit(Method):
    def trainable_parameters(self, model: torch.nn.Module) -> list[torch.nn.Parameter]:
        return [p for n, p in model.named_parameters() if n.endswith("bias")]
