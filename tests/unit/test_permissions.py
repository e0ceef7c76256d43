"""Outputs honour the umask: colleagues on a shared cluster can read them (issue 12, item 4).

``tempfile.mkstemp`` / ``mkdtemp`` create 0600 / 0700; every writer that starts from one must end with the mode
the umask gives a plain ``open()`` / ``mkdir`` (0644 / 0755 under umask 022). Each test runs under two umasks, so a
hard-coded 0644 would fail the second.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import polars as pl
import pytest
import torch

from fomoflux import io
from fomoflux.data.mini import mini_registry
from fomoflux.data.shards import build_dataset
from fomoflux.train.resume import Snapshots


@pytest.fixture(params=[0o022, 0o027], ids=["umask022", "umask027"])
def umask(request):
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_current_umask_reads_without_changing_it(umask):
    assert io.current_umask() == umask
    assert io.current_umask() == umask  # reading twice: still the same (nothing was reset)
    assert io.umask_mode() == 0o666 & ~umask
    assert io.umask_mode(directory=True) == 0o777 & ~umask


def test_atomic_writers_give_the_umask_mode(tmp_path, umask):
    expected = 0o666 & ~umask
    io.write_text(tmp_path / "a.txt", "x\n")
    io.write_json(tmp_path / "b.json", {"k": 1})
    io.write_parquet(tmp_path / "c.parquet", pl.DataFrame({"x": [1, 2]}))
    io.write_safetensors(tmp_path / "d.safetensors", {"w": torch.ones(2)})
    for name in ("a.txt", "b.json", "c.parquet", "d.safetensors"):
        assert mode(tmp_path / name) == expected, (name, oct(mode(tmp_path / name)))
    if umask == 0o022:
        assert mode(tmp_path / "b.json") == 0o644


def test_results_database_gets_the_umask_mode(tmp_path, umask):
    from fomoflux.metrics import write_results_db

    write_results_db(tmp_path / "fomoflux.duckdb", [], [])
    assert mode(tmp_path / "fomoflux.duckdb") == 0o666 & ~umask


def test_snapshot_gets_the_umask_mode(tmp_path, umask):
    snapshots = Snapshots(tmp_path / "resume" / "run" / "task001", key="k", every_steps=1)
    snapshots.save(3, {"model": {"w": torch.ones(2)}})
    assert mode(snapshots.path) == 0o666 & ~umask
    assert mode(snapshots.folder) == 0o777 & ~umask


def test_dataset_folder_and_shards_get_the_umask_mode(tmp_path, umask):
    out = tmp_path / "glyphs"
    build_dataset(mini_registry()["glyphs"], out, seed=0, image_size=32, scale=0.02)
    assert mode(out) == 0o777 & ~umask, oct(mode(out))
    files = sorted(out.iterdir())
    assert any(p.suffix == ".tar" for p in files) and (out / "manifest.parquet") in files
    for path in files:
        assert mode(path) == 0o666 & ~umask, (path.name, oct(mode(path)))
    if umask == 0o022:
        assert mode(out) == 0o755 and mode(out / "manifest.parquet") == 0o644
