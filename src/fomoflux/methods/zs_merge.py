"""ZS-merge: every task fine-tunes from θ0 (zero-shot weights); deploy the sequential merge of the experts.

    θ_t = finetune(θ0, task t),   m_t = (1 − w) · m_{t−1} + w · θ_t,   m_0 = θ0

Training never depends on the merge, so changing ``weight``, the operator or LiNeS reruns merges and evaluations only.
"""

from __future__ import annotations

from fomoflux.methods.base import register_method
from fomoflux.methods.merging import MERGE_OPTIONS, MergeMethod


@register_method("zs_merge")
class ZSMerge(MergeMethod):
    init_from = "base"
    deploy_from = "sequential"
    options = {k: MERGE_OPTIONS[k] for k in ("weight", "operator", "operator_options", "lines")}
