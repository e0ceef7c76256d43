"""EMA-merge ("Best-in-TIME", arXiv 2412.06712): fine-tune from the last merged model, deploy the merge.

Task t trains from m_{t−1} (m_0 = θ0) to θ_t; the pipeline's merge job then writes, as the reference's ``ema_paint``
(its unrolled merge starts from θ0; ``merge([θ_t, m_{t−1}])``)

    m_t = w · θ_t + (1 − w) · m_{t−1}

(interpolation of task vectors over every floating-point tensor, the temperature included), which is both
deployed and the next task's starting point. ``weight`` w = 0.5 (default) is the paper's equal-weight merge, an
EMA with α = 0.5. Another operator (e.g. SLERP) or LiNeS scaling can be chosen (see methods/merging.py).
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


@register_method("ema_merge")
class EMAMerge(MergeMethod):
    init_from = "sequential"
    deploy_from = "sequential"
    options = {k: MERGE_OPTIONS[k] for k in ("weight", "operator", "operator_options", "lines")}
    option_help = {**MERGE_OPTION_HELP, "operator_options": PAINT_OPERATOR_HELP}
    operator_defaults = PAINT_OPERATOR_DEFAULTS
