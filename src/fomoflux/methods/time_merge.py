"""The TIME grid (arXiv 2412.06712): choose where each task starts (``init``) and what is deployed (``deploy``).

init ∈ {latest, base, sequential, oneshot, anchored} × deploy ∈ {latest, sequential, oneshot, anchored}, with every
merge option of methods/merging.py. ``init: sequential, deploy: sequential`` is EMA-merge, ``init: base, deploy:
oneshot`` the offline merge, ``init: oneshot, deploy: oneshot`` trains each task from the one-shot merge of all
previous experts, and so on.

As the reference's TIME grid (``continual_lib/double_merge_*``), the sequential merge here unrolls over the experts
[θ1..θt] (m_1 = θ1, m_t = merge([θ_t, m_{t−1}])), not from θ0 as EMA-merge and ZS-merge do; ``sequential_from: base``
starts it from θ0 instead. The reference's grid (init x deploy: ft = latest, zs = base, unrolled = sequential, all =
oneshot) has all_all, all_ft, all_unrolled, ft_all, ft_unrolled, unrolled_all, unrolled_ft and zs_unrolled; its
"all" merge is always uniform (``weighting: uniform``, the default here).
"""

from __future__ import annotations

from fomoflux.methods.base import register_method
from fomoflux.methods.merging import MERGE_OPTION_HELP, MERGE_OPTIONS, MergeMethod


@register_method("time_merge")
class TimeMerge(MergeMethod):
    options = {"init": "sequential", "deploy": "sequential", "sequential_from": "first", **MERGE_OPTIONS}
    option_help = {
        "init": "where each task starts: latest, base, sequential, oneshot or anchored (a merge of the previous task)",
        "deploy": "what is evaluated after each task: latest, sequential, oneshot or anchored",
        "sequential_from": "first: the sequential merge unrolls over [θ1..θt] (m_1 = θ1), as the reference's TIME "
                           "grid; base: from m_0 = θ0, as EMA-merge and ZS-merge (not the reference's grid)",
        **MERGE_OPTION_HELP,
    }

    def validate(self) -> None:
        self.init_from = self.init
        self.deploy_from = self.deploy
        # (the option sequential_from, set as an instance attribute by Method.__init__, overrides the class default)
        super().validate()
