"""Offline merge: independent experts fine-tuned from θ0, deployed as a one-shot merge of all experts so far.

    θ_t = finetune(θ0, task t),   deploy_t = merge([θ0 if include_base] + [θ_1 .. θ_t], weights)

with weights from ``weighting`` (uniform, linear, sqrt, quadratic, cubic, fifth, tenth, exp = 2^(i−1), log, as the
reference's ``offline_merge.py``; ``reverse`` favours early experts) or an explicit ``weights`` list (one per task,
θ0 first with ``include_base``; its length must match the stream's tasks) and any operator of ``fomoflux.merge``
(task arithmetic, TIES, DARE, MagMax, ...). The experts of different tasks do not depend on each other, so their
training jobs run in parallel; merge settings never retrain. After task 1 without ``include_base`` the deployed
model is θ1 itself, as in the reference (nothing to merge).
"""

from __future__ import annotations

from fomoflux.methods.base import register_method
from fomoflux.methods.merging import MERGE_OPTIONS, MergeMethod


@register_method("offline_merge")
class OfflineMerge(MergeMethod):
    init_from = "base"
    deploy_from = "oneshot"
    options = {k: MERGE_OPTIONS[k] for k in ("weighting", "reverse", "include_base", "weights", "operator",
                                             "operator_options", "lines")}
    oneshot_single_is_expert = True
