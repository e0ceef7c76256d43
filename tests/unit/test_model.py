"""model.py: architectures, seeded creation, checkpoints (round trip, open_clip loading, errors)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from toy import MICRO, states_equal

from fomoflux.errors import CheckpointError, ConfigError
from fomoflux.model import (
    CONFIG_DIR,
    OPEN_CLIP_CONFIG_NAME,
    architecture_config,
    create_model,
    read_checkpoint_metadata,
    register_architecture,
    save_checkpoint,
    write_open_clip_config,
)


def test_project_architectures():
    tiny = architecture_config("fomo-tiny-vit")
    assert tiny["embed_dim"] == 128
    assert tiny["vision_cfg"] == {"image_size": 32, "layers": 3, "width": 128, "head_width": 32, "patch_size": 8}
    assert tiny["text_cfg"] == {"context_length": 16, "vocab_size": 49408, "width": 128, "heads": 4, "layers": 2}
    micro = architecture_config(MICRO)
    assert micro["embed_dim"] == 64 and micro["vision_cfg"]["layers"] == 2 and micro["text_cfg"]["layers"] == 2
    assert micro["vision_cfg"]["patch_size"] == 8 and micro["text_cfg"]["context_length"] == 24


def test_register_architecture(tmp_path):
    assert register_architecture(CONFIG_DIR / f"{MICRO}.json") == MICRO
    with pytest.raises(ConfigError, match="nope.json"):
        register_architecture(tmp_path / "nope.json")
    bad = tmp_path / "bad-arch.json"
    bad.write_text('{"embed_dim": 8}')
    with pytest.raises(ConfigError, match="bad-arch.json"):
        register_architecture(bad)
    with pytest.raises(ConfigError, match="no-such-arch"):
        create_model("no-such-arch")
    # a config registered by path wins; re-registering another file of the same name replaces it
    cfg = architecture_config(MICRO)
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    (tmp_path / "a" / "fomo-unit-arch.json").write_text(json.dumps(cfg))
    (tmp_path / "b" / "fomo-unit-arch.json").write_text(json.dumps({**cfg, "embed_dim": 32}))
    assert register_architecture(tmp_path / "a" / "fomo-unit-arch.json") == "fomo-unit-arch"
    assert architecture_config("fomo-unit-arch")["embed_dim"] == 64
    register_architecture(tmp_path / "b" / "fomo-unit-arch.json")
    assert architecture_config("fomo-unit-arch")["embed_dim"] == 32
    register_architecture(tmp_path / "a" / "fomo-unit-arch.json")
    model, _ = create_model("fomo-unit-arch", seed=0)
    assert model.text_projection.shape == (64, 64)


def test_create_model_and_tokenizer():
    model, tokenizer = create_model(MICRO, seed=0)
    out = model(torch.zeros(2, 3, 32, 32), tokenizer(["a photo of a cat", "a dog"]))
    assert out["image_features"].shape == (2, 64) and out["text_features"].shape == (2, 64)
    assert tokenizer(["x"]).shape == (1, 24)


def test_seeded_init_is_deterministic():
    a, _ = create_model(MICRO, seed=1)
    torch.rand(10)  # global RNG use in between does not matter
    b, _ = create_model(MICRO, seed=1)
    c, _ = create_model(MICRO, seed=2)
    assert states_equal(a.state_dict(), b.state_dict())
    assert not states_equal(a.state_dict(), c.state_dict())


def test_seeded_creation_leaves_global_rng_alone():
    torch.manual_seed(7)
    create_model(MICRO, seed=3)
    after = torch.rand(4)
    torch.manual_seed(7)
    assert torch.equal(after, torch.rand(4))


def test_checkpoint_round_trip(tmp_path):
    model, _ = create_model(MICRO, seed=4)
    path = tmp_path / "m.safetensors"
    save_checkpoint(model, path, metadata={"arch": MICRO, "task": "3"})
    assert read_checkpoint_metadata(path)["arch"] == MICRO
    loaded, _ = create_model(MICRO, checkpoint=path)
    assert states_equal(model.state_dict(), loaded.state_dict())
    assert not list(tmp_path.glob(".*tmp"))  # atomic write left nothing behind


def test_checkpoint_loads_in_plain_open_clip(tmp_path):
    model, _ = create_model(MICRO, seed=5)
    path = tmp_path / "plain.safetensors"
    save_checkpoint(model, path)
    code = textwrap.dedent(
        f"""
        import open_clip, torch
        from safetensors.torch import load_file
        open_clip.add_model_config({str(CONFIG_DIR / (MICRO + '.json'))!r})
        model, _, preprocess = open_clip.create_model_and_transforms({MICRO!r}, pretrained={str(path)!r})
        saved = load_file({str(path)!r})
        state = model.state_dict()
        assert state.keys() == saved.keys()
        assert all(torch.equal(state[k], saved[k]) for k in state)
        print("OK")
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout


def test_task_folder_loads_in_one_line_with_open_clip_local_dir(tmp_path):
    """A task folder as the pipeline leaves it (trained weights, method state, a merge, open_clip_config.json) loads
    with `local-dir:` in a fresh process where nothing is registered: the trained weights (not the merge or the
    state), the pipeline's preprocessing and a tokenizer of the model's context length."""
    model, _ = create_model(MICRO, seed=6)
    folder = tmp_path / "runs" / "finetune" / "task002"
    save_checkpoint(model, folder / "model.safetensors")
    other, _ = create_model(MICRO, seed=7)
    save_checkpoint(other, folder / "merge_sequential.safetensors")  # sorts before model.safetensors
    save_checkpoint(other, folder / "method_state.safetensors")
    written = write_open_clip_config(folder, MICRO)
    assert written == folder / OPEN_CLIP_CONFIG_NAME
    config = json.loads(written.read_text())
    assert config["model_cfg"] == architecture_config(MICRO)
    assert config["preprocess_cfg"]["size"] == [32, 32] and config["preprocess_cfg"]["interpolation"] == "bicubic"
    base = tmp_path / "models" / "fomo-micro"
    save_checkpoint(other, base / "base.safetensors")  # the base model's folder: its one checkpoint
    write_open_clip_config(base / OPEN_CLIP_CONFIG_NAME, MICRO)
    code = textwrap.dedent(
        f"""
        import sys, open_clip, torch
        from PIL import Image
        from safetensors.torch import load_file
        assert {MICRO!r} not in open_clip.list_models()
        for folder, weights in (({str(folder)!r}, "model.safetensors"), ({str(base)!r}, "base.safetensors")):
            model, _, preprocess = open_clip.create_model_and_transforms("local-dir:" + folder)
            saved = load_file(folder + "/" + weights)
            state = model.state_dict()
            assert state.keys() == saved.keys()
            assert all(torch.equal(state[k], saved[k]) for k in state), folder
        image = preprocess(Image.new("RGB", (50, 40), (200, 10, 10)))
        assert tuple(image.shape) == (3, 32, 32), image.shape
        tokens = open_clip.get_tokenizer("local-dir:" + {str(folder)!r})(["a photo of a cat"])
        assert tuple(tokens.shape) == (1, 24), tokens.shape
        model.eval()
        with torch.no_grad():
            print(model.encode_image(image[None]).abs().sum().item())
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    # The same numbers as the pipeline's own model with those weights (the preprocessing is open_clip's).
    import open_clip
    from PIL import Image

    ours, _ = create_model(MICRO, checkpoint=base / "base.safetensors")
    ours.eval()
    transform = open_clip.image_transform(32, is_train=False)
    with torch.no_grad():
        expected = ours.encode_image(transform(Image.new("RGB", (50, 40), (200, 10, 10)))[None]).abs().sum().item()
    assert float(result.stdout.split()[-1]) == pytest.approx(expected, rel=1e-5)


def test_checkpoint_errors(tmp_path):
    missing = tmp_path / "missing.safetensors"
    with pytest.raises(CheckpointError, match="missing.safetensors"):
        create_model(MICRO, checkpoint=missing)

    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00\x01 not a safetensors file at all")
    with pytest.raises(CheckpointError, match="corrupt.safetensors"):
        create_model(MICRO, checkpoint=corrupt)

    micro, _ = create_model(MICRO, seed=0)
    wrong = tmp_path / "micro.safetensors"
    save_checkpoint(micro, wrong)
    with pytest.raises(CheckpointError, match="micro.safetensors") as info:
        create_model("fomo-tiny-vit", checkpoint=wrong)
    message = str(info.value)
    assert "missing keys" in message and "visual.transformer.resblocks.2" in message
    assert "shape mismatches" in message
