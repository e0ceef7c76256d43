"""EMA-merge ("Best-in-TIME", arXiv 2412.06712): fine-tune from the last merged model, then merge.

Task t trains from m_{t−1} (the task's input checkpoint; m_{−1} = θ0) to θ_t, then deploys and continues from

    m_t = (1 − w) · m_{t−1} + w · θ_t

over every floating-point parameter and buffer (the temperature ``logit_scale`` included); non-floating entries
are taken from θ_t. ``weight`` w = 0.5 (default) is the paper's equal-weight merge, i.e. an EMA with α = 0.5.
No state crosses tasks beyond the weights themselves: m_{t−1} is the checkpoint the task starts from.
"""

from __future__ import annotations

import torch

from fomoflux.errors import ConfigError
from fomoflux.methods.base import Method, TaskContext, register_method


@register_method("ema_merge")
class EMAMerge(Method):
    options = {"weight": 0.5}

    def validate(self) -> None:
        if not 0.0 <= self.weight <= 1.0:
            raise ConfigError(f"method 'ema_merge': option 'weight' must lie in [0, 1], got {self.weight}")
        self._previous: dict[str, torch.Tensor] | None = None

    def begin_task(self, model: torch.nn.Module, ctx: TaskContext) -> None:
        self._previous = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def end_task(self, model: torch.nn.Module, ctx: TaskContext) -> None:
        if self._previous is None:
            raise RuntimeError("ema_merge: end_task without begin_task")
        w = self.weight
        for key, current in model.state_dict().items():
            previous = self._previous.get(key)
            if previous is not None:
                current.copy_((1.0 - w) * previous + w * current)
        self._previous = None
