"""ZS-merge: every task fine-tunes from θ0 (zero-shot weights); deploy the sequential merge of the experts.

    θ_t = finetune(θ0, task t),   m_t = w · θ_t + (1 − w) · m_{t−1},   m_0 = θ0

as the reference's ``zs_paint`` (its unrolled merge starts from θ0, unlike the TIME grid's ``init: base, deploy:
sequential``, which starts from θ1).

Training never depends on the merge, so changing ``weight``, the operator or LiNeS reruns merges and evaluations only.
"""

from __future__ import annotations

from fomoflux.methods.base import register_method
from fomoflux.methods.merging import (
    MERGE_OPTION_HELP,
    MERGE_OPTIONS,
    PAINT_OPERATOR_DEFAULTS,
    PAINT_OPERATOR_HELP,
    MergeMethod,
)


@register_method("zs_merge")
class ZSMerge(MergeMethod):
    init_from = "base"
    deploy_from = "sequential"
    options = {k: MERGE_OPTIONS[k] for k in ("weight", "operator", "operator_options", "lines")}
    option_help = {**MERGE_OPTION_HELP, "operator_options": PAINT_OPERATOR_HELP}
    operator_defaults = PAINT_OPERATOR_DEFAULTS
