"""Continual-learning methods, Mammoth-style: one method per module behind the interface of ``base.Method``.

Importing this package registers every built-in method; ``get_method(name, options)`` builds one.
To add a method: a new module here with a ``@register_method("name")`` subclass of ``Method``, imported below.
"""

from fomoflux.methods import (  # noqa: F401  (registration: one module per method)
    bitfit,
    dora,
    ema_merge,
    ewc,
    finetune,
    ft_merge,
    lnfit,
    locked,
    lora,
    offline_merge,
    si,
    time_merge,
    vera,
    zeroshot,
    zs_merge,
)
from fomoflux.methods.base import (
    Method,
    TaskContext,
    available_methods,
    get_method,
    load_method_state,
    method_class,
    register_method,
    save_method_state,
)

__all__ = [
    "Method",
    "TaskContext",
    "available_methods",
    "get_method",
    "load_method_state",
    "method_class",
    "register_method",
    "save_method_state",
]
