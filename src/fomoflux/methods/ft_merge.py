"""FT-merge (WiSE-FT style): after each task, merge the result back towards θ0; train and deploy from that.

    θ_t = finetune(m_{t−1}, task t),   m_t = w · θ_t + (1 − w) · θ0,   m_0 = θ0   (the reference's ``ft_paint``)
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


@register_method("ft_merge")
class FTMerge(MergeMethod):
    init_from = "anchored"
    deploy_from = "anchored"
    options = {k: MERGE_OPTIONS[k] for k in ("weight", "operator", "operator_options", "lines")}
    option_help = {**MERGE_OPTION_HELP, "operator_options": PAINT_OPERATOR_HELP}
    operator_defaults = PAINT_OPERATOR_DEFAULTS
