"""Model merging over task vectors τ_i = θ_i − θ0: operators, offline weightings, LiNeS, streaming over checkpoints.

``merge_checkpoints(base, checkpoints, weights, operator, options, lines, seed)`` merges safetensors checkpoints one
tensor at a time (memory independent of their number); ``merge_state_dicts`` does the same over in-memory states.
Operators are registered by name (``available_operators()``; ``check_operator`` validates a name and its options),
``offline_weights(n, scheme, reverse)`` gives the one-shot weightings, ``lines_scales`` the LiNeS depth factors.
"""

from fomoflux.merge.lines import LinesDepth, LinesSetting, check_lines, lines_depths, lines_scales, tower_of
from fomoflux.merge.operators import (
    OPERATORS,
    MergeOperator,
    available_operators,
    check_operator,
    register_operator,
    slerp_pair,
    top_fraction_threshold,
)
from fomoflux.merge.sources import TaskVectors, tensor_generator
from fomoflux.merge.streaming import merge_checkpoints, merge_state_dicts
from fomoflux.merge.weighting import WEIGHTINGS, offline_weights

__all__ = [
    "OPERATORS",
    "WEIGHTINGS",
    "LinesDepth",
    "LinesSetting",
    "MergeOperator",
    "TaskVectors",
    "available_operators",
    "check_lines",
    "check_operator",
    "lines_depths",
    "lines_scales",
    "merge_checkpoints",
    "merge_state_dicts",
    "offline_weights",
    "register_operator",
    "slerp_pair",
    "tensor_generator",
    "tower_of",
    "top_fraction_threshold",
]
