"""open_clip models: architectures, creation, checkpoints, seeding.

Architectures are open_clip JSON model configs. The project's own tiny ones live in ``config/models/``
(``fomo-tiny-vit``: the default of the embedded benchmark; ``fomo-micro-vit``: for tests) and are registered with
open_clip on first use; any real open_clip name (``ViT-B-16``, ...) works as well, with weights from a local file
(nothing is ever downloaded: ``pretrained=None``).

A checkpoint is the plain open_clip ``state_dict`` as safetensors, so that outside this project
``open_clip.create_model_and_transforms(arch, pretrained="model.safetensors")`` loads it (after
``open_clip.add_model_config`` for the project's own architectures). open_clip only treats a file as safetensors
when its name ends in ``.safetensors``; use that suffix.

Beside every checkpoint the pipeline writes ``open_clip_config.json`` (:func:`write_open_clip_config`: the
architecture's ``model_cfg`` and the ``preprocess_cfg`` the pipeline evaluated with), open_clip's format for a
model folder, so one line loads a task's model with its transforms and tokenizer, nothing registered first:
``open_clip.create_model_and_transforms("local-dir:results/runs/finetune/task005")`` (and
``open_clip.get_tokenizer("local-dir:...")``). open_clip picks the folder's weights by name: ``model.safetensors``
before any other ``.safetensors`` there (method state, merges).
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from fomoflux.errors import CheckpointError, ConfigError
from fomoflux.io import write_safetensors

__all__ = [
    "CONFIG_DIR",
    "DEFAULT_ARCH",
    "register_architecture",
    "resolve_architecture",
    "architecture_config",
    "create_model",
    "get_tokenizer",
    "save_checkpoint",
    "load_state_dict_file",
    "load_checkpoint_into",
    "read_checkpoint_metadata",
    "set_seed",
    "seeded",
    "OPEN_CLIP_CONFIG_NAME",
    "open_clip_config",
    "write_open_clip_config",
]

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config" / "models"
DEFAULT_ARCH = "fomo-tiny-vit"
# What open_clip's `local-dir:` schema reads from a model folder (open_clip.factory.create_model).
OPEN_CLIP_CONFIG_NAME = "open_clip_config.json"

def _open_clip():
    import open_clip

    return open_clip


def register_architecture(config_path: str | Path) -> str:
    """Make an open_clip JSON model config known to open_clip; returns its name (the file stem).

    Registering is idempotent; registering another file with the same stem replaces the earlier definition.
    """
    path = Path(config_path)
    if not path.is_file():
        raise ConfigError(f"model config {path} does not exist")
    try:
        cfg = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"model config {path} is not valid JSON: {exc}") from exc
    missing = [key for key in ("embed_dim", "vision_cfg", "text_cfg") if key not in cfg]
    if missing:
        raise ConfigError(f"model config {path} lacks {', '.join(missing)} (not an open_clip model config)")
    open_clip = _open_clip()
    if open_clip.get_model_config(path.stem) != cfg:
        open_clip.add_model_config(path.resolve())
    return path.stem


def resolve_architecture(arch: str | Path) -> str:
    """An open_clip model name for ``arch``: a path to a JSON config (registered), a name open_clip knows (built in
    or registered earlier), or the stem of a config in ``CONFIG_DIR`` (registered on first use)."""
    text = str(arch)
    if text.endswith(".json"):
        return register_architecture(text)
    open_clip = _open_clip()
    if text.replace("/", "-") in open_clip.list_models():  # built in, or registered before (wins over CONFIG_DIR)
        return text
    local = CONFIG_DIR / f"{text}.json"
    if local.is_file():
        return register_architecture(local)
    known = sorted(p.stem for p in CONFIG_DIR.glob("*.json")) if CONFIG_DIR.is_dir() else []
    raise ConfigError(
        f"unknown model architecture {text!r}: neither an open_clip model nor a config in {CONFIG_DIR} "
        f"(project architectures: {', '.join(known) or 'none'})"
    )


def architecture_config(arch: str | Path) -> dict[str, Any]:
    """The open_clip model config (embed_dim, vision_cfg, text_cfg) of ``arch``."""
    name = resolve_architecture(arch)
    cfg = _open_clip().get_model_config(name.replace("/", "-"))
    if cfg is None:  # pragma: no cover - resolve_architecture checked it
        raise ConfigError(f"no open_clip model config for {name!r}")
    return cfg


def get_tokenizer(arch: str | Path):
    """open_clip's tokenizer for ``arch`` (the bundled SimpleTokenizer for the project's architectures; offline)."""
    return _open_clip().get_tokenizer(resolve_architecture(arch))


def set_seed(seed: int) -> None:
    """Seed Python's, numpy's (when installed) and torch's global generators."""
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:  # pragma: no cover
        pass


class seeded:
    """Context manager: torch's global RNG seeded with ``seed`` inside, restored afterwards (CPU and CUDA)."""

    def __init__(self, seed: int | None) -> None:
        self.seed = seed
        self._fork = None

    def __enter__(self) -> seeded:
        if self.seed is not None:
            devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
            self._fork = torch.random.fork_rng(devices=devices)
            self._fork.__enter__()
            torch.manual_seed(self.seed)
        return self

    def __exit__(self, *exc) -> None:
        if self._fork is not None:
            self._fork.__exit__(*exc)
            self._fork = None


def load_state_dict_file(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The tensors of a safetensors checkpoint; missing or unreadable → CheckpointError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        from safetensors.torch import load_file

        return load_file(str(path), device=str(device))
    except Exception as exc:  # safetensors raises its own error types, OSError, ValueError...
        raise CheckpointError(f"checkpoint {path} is not a readable safetensors file: {exc}") from exc


def read_checkpoint_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata stored in a safetensors checkpoint's header."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        from fomoflux.io import read_safetensors_metadata

        return read_safetensors_metadata(path)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} is not a readable safetensors file: {exc}") from exc


def _first(items, n: int = 5) -> str:
    items = list(items)
    shown = ", ".join(items[:n])
    return shown + (f" (+{len(items) - n} more)" if len(items) > n else "")


def load_checkpoint_into(model: torch.nn.Module, path: str | Path, *, name: str | None = None) -> None:
    """Load a checkpoint strictly into ``model``: same keys, same shapes, else CheckpointError naming the file."""
    state = load_state_dict_file(path)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys: {_first(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_first(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches (file vs model): {_first(shapes, 3)}")
        arch = f" architecture {name!r}" if name else " the model"
        raise CheckpointError(f"checkpoint {path} does not match{arch}: " + "; ".join(parts))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # pragma: no cover - the checks above catch what load_state_dict would
        raise CheckpointError(f"checkpoint {path} could not be loaded: {exc}") from exc


def create_model(
    arch: str | Path,
    checkpoint: str | Path | None = None,
    device: str | torch.device = "cpu",
    *,
    seed: int | None = None,
):
    """``(model, tokenizer)``: open_clip's ``arch`` (``output_dict=True``), weights from ``checkpoint`` if given.

    Without a checkpoint the weights are open_clip's random init; with ``seed`` that init is a pure function of
    the seed (torch's global RNG is seeded for the creation and restored afterwards). On device ``"meta"`` the model
    has shapes but no storage (for checks and FLOP counting; no checkpoint can be loaded into it).
    """
    name = resolve_architecture(arch)
    on_meta = torch.device(device).type == "meta"
    if on_meta and checkpoint is not None:
        raise CheckpointError(f"checkpoint {checkpoint} cannot be loaded into a model on device 'meta'")
    open_clip = _open_clip()
    with _quiet_open_clip():
        # On "meta", construct under the meta device context as well: otherwise open_clip builds (and randomly
        # initialises) every tensor on the CPU first and then moves it, ~1 s for a ViT-B/16 instead of ~0.04 s.
        with seeded(seed), (torch.device("meta") if on_meta else contextlib.nullcontext()):
            model = open_clip.create_model(
                name, pretrained=None, output_dict=True, device="meta" if on_meta else "cpu"
            )
        tokenizer = open_clip.get_tokenizer(name)
    if checkpoint is not None:
        load_checkpoint_into(model, checkpoint, name=name)
    if not on_meta:
        model = model.to(device)
    return model, tokenizer


@contextlib.contextmanager
def _quiet_open_clip():
    """Silence open_clip's chatter for the duration: it warns "initialized randomly" on every pretrained=None, and it
    logs through the module-level ``logging.info()``, which installs a stderr handler on a root logger that has none
    (inside Snakemake that doubled every later log line); a handler for the duration prevents that."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    guard = logging.NullHandler()
    root.addHandler(guard)
    try:
        yield
    finally:
        root.removeHandler(guard)
        root.setLevel(level)


def save_checkpoint(model: torch.nn.Module, path: str | Path, metadata: Mapping[str, str] | None = None) -> None:
    """Write ``model.state_dict()`` as safetensors, atomically; ``metadata`` values are stored as strings."""
    meta = {}
    for key, value in (metadata or {}).items():
        meta[str(key)] = value if isinstance(value, str) else json.dumps(value)
    write_safetensors(path, model.state_dict(), metadata=meta)


def open_clip_config(arch: str | Path) -> dict[str, Any]:
    """open_clip's model-folder config for ``arch``: ``model_cfg`` (the architecture) and ``preprocess_cfg`` (image
    size, mean / std, interpolation, resize mode: what open_clip sets on the model the pipeline trains and
    evaluates, so the transforms a loader gets are the pipeline's)."""
    model, _ = create_model(arch, device="meta")  # shapes only: milliseconds even for a ViT-B/16
    preprocess = dict(_open_clip().get_model_preprocess_cfg(model))
    return {"model_cfg": architecture_config(arch),
            "preprocess_cfg": {k: list(v) if isinstance(v, tuple) else v for k, v in preprocess.items()}}


def write_open_clip_config(path: str | Path, arch: str | Path) -> Path:
    """Write :func:`open_clip_config` to ``path`` (a file, or a folder to hold ``open_clip_config.json``),
    atomically; returns the file."""
    from fomoflux.io import write_json

    target = Path(path)
    if target.is_dir() or not target.suffix:
        target = target / OPEN_CLIP_CONFIG_NAME
    write_json(target, open_clip_config(arch))
    return target
