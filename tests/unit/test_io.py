import subprocess
import sys

import pytest

from fomoflux import io

WRITE = """
import sys, torch
from fomoflux.io import write_safetensors
write_safetensors(sys.argv[1], {"w": torch.arange(6.0).view(2, 3), "b": torch.ones(3)},
                  metadata={"run": "r", "task": "3", "method": "finetune", "arch": "a", "z": "last"})
"""


def test_safetensors_bytes_are_identical_across_processes(tmp_path):
    """Bit-identical resume needs byte-identical checkpoints, whatever order a process hashes metadata keys in."""
    paths = [tmp_path / f"{i}.safetensors" for i in range(3)]
    for path in paths:
        subprocess.run([sys.executable, "-c", WRITE, str(path)], check=True)
    blobs = {p.read_bytes() for p in paths}
    assert len(blobs) == 1
    assert io.read_safetensors_metadata(paths[0])["method"] == "finetune"


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    io.write_json(target, {"a": 1})
    assert io.read_json(target) == {"a": 1} and [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_write_parquet_accepts_polars(tmp_path):
    import polars as pl

    io.write_parquet(tmp_path / "t.parquet", pl.DataFrame({"x": [1, 2]}))
    assert pl.read_parquet(tmp_path / "t.parquet")["x"].to_list() == [1, 2]
