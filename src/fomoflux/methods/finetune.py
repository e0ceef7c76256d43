"""Full fine-tuning: every parameter of both towers (and the temperature), continued from task to task."""

from __future__ import annotations

from fomoflux.methods.base import Method, register_method


@register_method("finetune")
class Finetune(Method):
    """The base class's defaults are exactly full fine-tuning: all parameters trainable, no penalty, no merge."""

    summary = "Full fine-tuning: every parameter of both towers (and the temperature), continued from task to task."
