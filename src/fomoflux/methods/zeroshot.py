"""Zero-shot: the reference line. The base model is never updated; the loop runs no step and calls no hook."""

from __future__ import annotations

from fomoflux.methods.base import Method, register_method


@register_method("zeroshot")
class ZeroShot(Method):
    updates_weights = False

    def trainable_parameters(self, model):
        return []
