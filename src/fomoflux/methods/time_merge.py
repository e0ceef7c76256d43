"""The TIME grid (arXiv 2412.06712): choose where each task starts (``init``) and what is deployed (``deploy``).

init ∈ {latest, base, sequential, oneshot, anchored} × deploy ∈ {latest, sequential, oneshot, anchored}, with every
merge option of methods/merging.py. ``init: sequential, deploy: sequential`` is EMA-merge, ``init: base, deploy:
oneshot`` the offline merge, ``init: oneshot, deploy: oneshot`` trains each task from the one-shot merge of all
previous experts, and so on.
"""

from __future__ import annotations

from fomoflux.methods.base import register_method
from fomoflux.methods.merging import MERGE_OPTION_HELP, MERGE_OPTIONS, MergeMethod


@register_method("time_merge")
class TimeMerge(MergeMethod):
    options = {"init": "sequential", "deploy": "sequential", **MERGE_OPTIONS}
    option_help = {
        "init": "where each task starts: latest, base, sequential, oneshot or anchored (a merge of the previous task)",
        "deploy": "what is evaluated after each task: latest, sequential, oneshot or anchored",
        **MERGE_OPTION_HELP,
    }

    def validate(self) -> None:
        self.init_from = self.init
        self.deploy_from = self.deploy
        super().validate()
