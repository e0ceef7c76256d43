"""Model merging as methods: fine-tuning whose starting point and/or deployed model are merges of saved checkpoints.

θ0 is the base model, θ_t the weights fine-tuning reaches in task t (its checkpoint ``task{t}/model.safetensors``).
A merging method is described by two choices (the TIME grid, arXiv 2412.06712) and a merge:

- ``init``: what task t trains from — ``latest`` (θ_{t−1}: plain continual fine-tuning), ``base`` (θ0: independent
  experts), or a merge of the previous task (``sequential``, ``oneshot``, ``anchored``; task 1 always starts from θ0);
- ``deploy``: what is evaluated after task t — ``latest`` (θ_t) or one of the merges;
- merges, over task vectors τ = θ − θ0 with an operator of ``fomoflux.merge`` (interpolation by default), in the
  reference's argument order (FoMo-in-Flux ``continual_lib``: the newest model first):

  ``sequential``  m_t = merge([θ_t, m_{t−1}], weights [w, 1 − w]): an EMA of the experts for w constant. From θ0
                  (m_0 = θ0: EMA-merge, ZS-merge, the reference's ``ema_paint`` / ``zs_paint``) or from θ1
                  (m_1 = θ1 as is: the TIME grid's unrolled merge over [θ1..θt], the reference's ``double_merge_*``)
  ``oneshot``     merge([θ0 if include_base] + [θ_1..θ_t], weights from ``weighting``: uniform, linear, ..., reversed);
                  the offline merge deploys θ1 itself after task 1 (nothing to merge), the TIME grid merges [θ1]
  ``anchored``    merge([θ_t, θ0], weights [w, 1 − w]) (WiSE-FT: pull every result back towards θ0; ``ft_paint``)

The pipeline runs each merge as its own job on the saved checkpoints (rule ``merge_task``), streaming tensors, so
a merge setting that training does not depend on (deploy-only: ZS-merge's or offline merge's weights and operator)
reruns merges and evaluations, never training. Training itself is plain full fine-tuning (no hooks).

The paper's merging methods are presets, one module each: ``ema_merge`` (init = deploy = sequential), ``zs_merge``
(init base, deploy sequential), ``ft_merge`` (init = deploy = anchored), ``offline_merge`` (init base, deploy
oneshot), and ``time_merge``, where init and deploy are options: the whole TIME grid.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from fomoflux.errors import ConfigError
from fomoflux.methods.base import Method

__all__ = ["DEPLOY_CHOICES", "INIT_CHOICES", "MERGE_KINDS", "MERGE_OPTION_HELP", "PAINT_OPERATOR_DEFAULTS",
           "MergeMethod", "merge_input_sequence", "merge_is_copy", "merge_weights"]

MERGE_KINDS = ("sequential", "oneshot", "anchored")
INIT_CHOICES = ("latest", "base", *MERGE_KINDS)
DEPLOY_CHOICES = ("latest", *MERGE_KINDS)

# The options every merge shares; presets keep the ones their merges use.
MERGE_OPTIONS: dict[str, Any] = {
    "weight": 0.5,  # w of sequential / anchored merges
    "weighting": "uniform",  # oneshot weights over the experts
    "reverse": False,  # oneshot: earlier experts weigh more
    "include_base": False,  # oneshot: θ0 is one of the merged models
    "weights": None,  # oneshot: explicit weights, one per task (θ0 first with include_base), instead of `weighting`
    "operator": "interpolation",
    "operator_options": {},
    "lines": None,  # LiNeS depth scaling {"alpha": a, "beta": b}
}
MERGE_OPTION_HELP: dict[str, str] = {
    "weight": "w in [0, 1] of the sequential and anchored merges: m_t = w·θ_t + (1 − w)·m_{t−1}",
    "weighting": "one-shot merge weights over the experts i = 1..n (normalised): uniform, linear (i), sqrt, "
                 "quadratic, cubic, fifth (i^5), tenth (i^10), exp (2^(i−1)) or log (ln(1 + i)), as the reference",
    "reverse": "one-shot merge: reverse the weighting, so that earlier experts weigh more",
    "include_base": "one-shot merge: θ0 is one of the merged models",
    "weights": "one-shot merge: explicit weights, one per task (θ0 first with include_base), instead of weighting",
    "operator": "merge operator over task vectors (fomoflux operators lists them): interpolation, slerp, "
                "task_arithmetic, ties, dare, breadcrumbs, magmax, model_stock, tall_masks, random",
    "operator_options": "options of the operator (e.g. {prune: 0.8} for ties; fomoflux operators lists them)",
    "lines": "LiNeS depth scaling of the merged task vector, {alpha: a, beta: b, scaling: linear|quadratic|sqrt}: "
             "α + β·f(ℓ/(L−1)) in residual block ℓ, α for every other key; replaces the operator's scale λ "
             "(null: off). The reference applies it with task_arithmetic, ties, dare and breadcrumbs only; here "
             "with every operator",
}
# The reference's configs for its EMA/ZS/FT-merge methods (``ema_paint``, ``zs_paint``, ``ft_paint``) prune 70% in
# the TIES family where its offline merge and class defaults (this package's operator defaults) prune 20%.
PAINT_OPERATOR_DEFAULTS: dict[str, dict[str, Any]] = {"ties": {"prune": 0.7}, "dare": {"prune": 0.7},
                                                      "breadcrumbs": {"prune": 0.7}}
PAINT_OPERATOR_HELP = (MERGE_OPTION_HELP["operator_options"] + "; as the reference's configs for this method, "
                       "ties, dare and breadcrumbs default to prune 0.7")
SEQUENTIAL_STARTS = ("base", "first")


class MergeMethod(Method):
    """Base of the merging presets. Subclasses set ``init_from`` / ``deploy_from`` and the options they use."""

    init_from: ClassVar[str] = "latest"
    deploy_from: ClassVar[str] = "latest"
    options: ClassVar[Mapping[str, Any]] = {}
    option_help: ClassVar[Mapping[str, str]] = MERGE_OPTION_HELP
    # Operator options this preset defaults to (the user's operator_options override them).
    operator_defaults: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    # Where the sequential merge starts: m_0 = θ0 ("base") or m_1 = θ1 ("first", the TIME grid's unrolled merge).
    sequential_from: ClassVar[str] = "base"
    # Whether a one-shot merge of a single expert is that expert as is (the reference's offline merge).
    oneshot_single_is_expert: ClassVar[bool] = False

    def validate(self) -> None:
        if self.init_from not in INIT_CHOICES:
            raise ConfigError(f"method {self.name!r}: init {self.init_from!r} is not one of {', '.join(INIT_CHOICES)}")
        if self.deploy_from not in DEPLOY_CHOICES:
            raise ConfigError(
                f"method {self.name!r}: deploy {self.deploy_from!r} is not one of {', '.join(DEPLOY_CHOICES)}"
            )
        opts = self.merge_options()
        if not 0.0 <= float(opts["weight"]) <= 1.0:
            raise ConfigError(f"method {self.name!r}: option 'weight' must lie in [0, 1], got {opts['weight']}")
        from fomoflux.merge import check_lines, check_operator, offline_weights

        if self.sequential_from not in SEQUENTIAL_STARTS:
            raise ConfigError(f"method {self.name!r}: sequential_from {self.sequential_from!r} is not one of "
                              f"{', '.join(SEQUENTIAL_STARTS)}")
        try:
            check_operator(opts["operator"], self.resolved_operator_options())
            offline_weights(2, opts["weighting"], reverse=bool(opts["reverse"]))
            check_lines(opts["lines"])
            weights = opts["weights"]
            if weights is not None and (not isinstance(weights, list) or not weights
                                        or not all(isinstance(w, (int, float)) and w >= 0 for w in weights)
                                        or sum(weights) <= 0):
                raise ConfigError(
                    f"option 'weights' must be a list of numbers >= 0 with a positive sum, got {weights!r}"
                )
        except ConfigError as err:
            raise ConfigError(f"method {self.name!r}: {err}") from None

    # -- what the pipeline needs to build the DAG --------------------------------------------------------------
    def merge_kinds(self) -> list[str]:
        """The merges this method needs per task (for training's init and for deployment)."""
        return [k for k in MERGE_KINDS if k in (self.init_from, self.deploy_from)]

    def merge_options(self) -> dict[str, Any]:
        return {key: getattr(self, key, default) for key, default in MERGE_OPTIONS.items()}

    def resolved_operator_options(self) -> dict[str, Any]:
        """The operator's options: this preset's defaults for it, updated by the user's ``operator_options``."""
        opts = self.merge_options()
        return {**self.operator_defaults.get(opts["operator"], {}), **dict(opts["operator_options"])}

    def training_options(self) -> dict[str, Any]:
        # Training reads its merged starting point from the merge job's output file, so the merge settings reach
        # it through that file (and rerun it when they change); its own parameters are only where it starts.
        return {"init": self.init_from}

    def merge_spec(self, kind: str) -> dict[str, Any]:
        """The merge job's settings for ``kind`` (its Snakemake params)."""
        if kind not in self.merge_kinds():
            raise ConfigError(f"method {self.name!r} has no {kind!r} merge")
        opts = self.merge_options()
        spec = {"kind": kind, "operator": opts["operator"], "operator_options": self.resolved_operator_options(),
                "lines": dict(opts["lines"]) if opts["lines"] else None}
        if kind == "oneshot":
            spec.update(weighting=opts["weighting"], reverse=bool(opts["reverse"]),
                        include_base=bool(opts["include_base"]),
                        weights=[float(w) for w in opts["weights"]] if opts["weights"] is not None else None,
                        single_is_expert=self.oneshot_single_is_expert and not opts["include_base"])
        else:
            spec["weight"] = float(opts["weight"])
        if kind == "sequential":
            spec["start"] = self.sequential_from
        return spec


def merge_input_sequence(spec: Mapping[str, Any], task: int) -> list[tuple[str, int]]:
    """The models a merge job of ``spec`` after ``task`` combines, in order: ("model", t) is θ_t (θ0 for t = 0),
    ("merge", t) this kind's merge after task t (θ0 for t = 0). As the reference orders them: sequential
    [θ_t, m_{t−1}] (only [θ1] after task 1 when it starts from the first expert), anchored [θ_t, θ0], oneshot
    [θ0 if include_base, θ_1, ..., θ_t]."""
    if task < 1:
        raise ConfigError(f"a merge follows a task >= 1, got task {task}")
    kind = spec["kind"]
    if kind == "sequential":
        if spec.get("start") == "first" and task == 1:
            return [("model", 1)]
        return [("model", task), ("merge", task - 1)]
    if kind == "anchored":
        return [("model", task), ("model", 0)]
    return [("model", t) for t in range(0 if spec.get("include_base") else 1, task + 1)]


def merge_is_copy(spec: Mapping[str, Any], n_checkpoints: int) -> bool:
    """Whether a merge job's output is its single input as is: the sequential merge from θ1 after task 1, and the
    offline merge's one-shot merge after task 1 (the reference merges nothing there)."""
    if n_checkpoints != 1:
        return False
    return (spec["kind"] == "sequential" and spec.get("start") == "first") or bool(spec.get("single_is_expert"))


def merge_weights(spec: Mapping[str, Any], n_checkpoints: int) -> list[float]:
    """The weights of a merge job over its ``n_checkpoints`` inputs (in the order the pipeline passes them:
    sequential [θ_t, m_{t−1}], anchored [θ_t, θ0], oneshot [θ0?, θ_1..θ_t])."""
    if merge_is_copy(spec, n_checkpoints):
        return [1.0]
    from fomoflux.merge import offline_weights

    if spec["kind"] == "oneshot":
        explicit = spec.get("weights")
        if explicit is not None:
            # The first n of the configured weights (one per task so far), normalised to sum 1.
            if len(explicit) < n_checkpoints:
                raise ConfigError(f"option 'weights' has {len(explicit)} entries for a merge of {n_checkpoints} models")
            chosen = explicit[:n_checkpoints]
            total = sum(chosen)
            if total <= 0:
                raise ConfigError(f"option 'weights': the first {n_checkpoints} weights sum to 0")
            return [w / total for w in chosen]
        # With include_base, θ0 is the first of the merged models (the earliest position of the weighting).
        return offline_weights(n_checkpoints, spec["weighting"], reverse=spec["reverse"])
    if n_checkpoints != 2:
        raise ConfigError(f"a {spec['kind']} merge combines 2 checkpoints, got {n_checkpoints}")
    w = float(spec["weight"])
    return [w, 1.0 - w]
