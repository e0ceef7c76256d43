"""A nearest-neighbour walk over class text embeddings (the reference's ``similarity_sequence_k``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from fomoflux.data.registry import DatasetSpec, split_entry
from fomoflux.errors import ConfigError, DataError
from fomoflux.orderings.common import check_unique, check_unique_specs, seeded_rng

if TYPE_CHECKING:
    import torch

# torch, polars and the evaluation code are imported where they are used: the plan-time orderings run inside
# every Snakefile parse and every job's plan rebuild, which must not pay for importing torch.


def _normalised_rows(entries: Sequence[str], embeddings: torch.Tensor) -> torch.Tensor:
    """The embeddings as float32 unit rows on the CPU; raises ConfigError for a bad shape, DataError for a row that
    is not finite or is zero (naming its entry)."""
    import torch

    if embeddings.ndim != 2 or embeddings.shape[0] != len(entries):
        raise ConfigError(
            f"similarity_chain: embeddings must be [len(entries)={len(entries)}, D], got {tuple(embeddings.shape)}"
        )
    rows = embeddings.detach().to("cpu", torch.float32)
    bad = ~torch.isfinite(rows).all(dim=1)
    norms = rows.norm(dim=1)
    bad |= norms == 0
    if bool(bad.any()):
        position = int(torch.nonzero(bad)[0])
        raise DataError(f"similarity_chain: embedding of entry {entries[position]!r} is zero or not finite")
    return rows / norms[:, None]


# Rows of the similarity matrix computed per block when collecting candidates: block x N float32 stays near 256 MiB.
_SIMILARITY_BLOCK_ELEMENTS = 1 << 26


def _nearest_candidates(rows: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, its k most similar other rows: (similarities [N, k] descending, indices [N, k]).

    One blocked matrix product (compute-bound, far faster per multiply-add than N separate matrix-vector products).
    """
    import torch

    n = rows.shape[0]
    values = np.empty((n, k), dtype=np.float32)
    indices = np.empty((n, k), dtype=np.int64)
    block = max(1, min(n, _SIMILARITY_BLOCK_ELEMENTS // n))
    with torch.inference_mode():
        for start in range(0, n, block):
            stop = min(start + block, n)
            similarity = rows[start:stop] @ rows.T
            own = torch.arange(stop - start)
            similarity[own, own + start] = float("-inf")  # a row is never its own neighbour
            top = similarity.topk(k, dim=1)
            values[start:stop] = top.values.numpy()
            indices[start:stop] = top.indices.numpy()
    return values, indices


class _UnvisitedRows:
    """The not-yet-visited rows as a compact matrix in original order, for the exact fallback step.

    Visited rows are dropped lazily (when at least an eighth of the compact matrix is stale), so a fallback
    multiplies roughly only what is left, and rows stay in ascending original order, which makes ``argmax``'s
    first maximum the lowest original index.
    """

    def __init__(self, rows: torch.Tensor) -> None:
        import torch

        self.rows = rows
        self.original = torch.arange(rows.shape[0])
        self.compact = rows

    def most_similar(self, current: int, alive: np.ndarray) -> int:
        """The unvisited row most similar to row ``current`` (lowest index on ties)."""
        import torch

        live = torch.from_numpy(alive[self.original.numpy()])
        if int((~live).sum()) * 8 >= len(live):
            self.original, self.compact, live = self.original[live], self.compact[live], live[live]
        with torch.inference_mode():
            similarity = torch.mv(self.compact, self.rows[current])
            similarity.masked_fill_(~live, float("-inf"))
            return int(self.original[int(torch.argmax(similarity))])


def similarity_chain(entries: Sequence[str], embeddings: torch.Tensor, seed: int, *, candidates: int = 32) -> list[str]:
    """A nearest-neighbour chain: start at a seeded random entry, then repeatedly move to the unvisited entry whose
    embedding is most cosine-similar to the current one (ties: the lowest index; similarities in float32).

    ``embeddings`` is [len(entries), D], any scale (rows are normalised here). ``candidates`` only tunes speed, never
    the result: each row's ``candidates`` nearest neighbours are found up front with one blocked matrix product, a
    step takes the best unvisited one when it is provably the best overall (strictly above the row's last
    candidate), and otherwise falls back to one matrix-vector product over the unvisited rows. 18,381 x 512 takes
    seconds on one core, against about half a minute for a matrix-vector product at every step.

    Raises ConfigError for a shape mismatch, candidates < 1, a bad seed or a duplicate entry; DataError for a zero
    or non-finite embedding.
    """
    pool = check_unique(entries, "similarity_chain")
    if isinstance(candidates, bool) or not isinstance(candidates, int) or candidates < 1:
        raise ConfigError(f"similarity_chain: candidates must be an integer >= 1, got {candidates!r}")
    rows = _normalised_rows(pool, embeddings)
    rng = seeded_rng(seed)
    if not pool:
        return []
    n = len(pool)
    current = int(rng.integers(n))
    order = [current]
    if n == 1:
        return [pool[current]]
    k = min(candidates, n - 1)
    covers_all = k == n - 1  # every other row is a candidate: no boundary to check
    values, indices = _nearest_candidates(rows, k)
    unvisited = _UnvisitedRows(rows)
    alive = np.ones(n, dtype=bool)
    alive[current] = False
    for _ in range(n - 1):
        open_slots = alive[indices[current]]
        step = -1
        if open_slots.any():
            open_values = values[current][open_slots]
            best = open_values.max()
            # Any row outside the candidates is at most as similar as the last candidate, so a strictly better open
            # candidate is the true maximum; an equal one could tie with a lower-indexed row outside the list.
            if covers_all or best > values[current, -1]:
                step = int(indices[current][open_slots][open_values == best].min())
        if step < 0:
            step = unvisited.most_similar(current, alive)
        alive[step] = False
        order.append(step)
        current = step
    return [pool[i] for i in order]


def class_text_embeddings(
    model, tokenizer, specs: Sequence[DatasetSpec], entries: Sequence[str], *, device="cpu"
) -> torch.Tensor:
    """L2-normalised text embeddings [len(entries), D] (float32, on ``device``) of each entry's class prompt (its
    dataset's template), row i for entry i. Encoded once per dataset with ``evaluate.class_embeddings``.

    Raises ConfigError for no entries, a malformed entry, an entry whose dataset is not among ``specs`` or whose
    class is not one of that dataset's classes (naming the entry), or a dataset given twice.
    """
    import torch

    from fomoflux.evaluate import class_embeddings

    if not entries:
        raise ConfigError("class_text_embeddings: no entries")
    check_unique_specs(specs, "class_text_embeddings")
    by_name = {spec.name: spec for spec in specs}
    positions: dict[str, list[int]] = {}
    classes: dict[str, list[str]] = {}
    for position, entry in enumerate(entries):
        dataset, classname = split_entry(entry)
        if dataset not in by_name:
            raise ConfigError(f"class_text_embeddings: entry {entry!r}: dataset {dataset!r} is not among the specs")
        if classname not in by_name[dataset].classnames:
            raise ConfigError(f"class_text_embeddings: entry {entry!r}: dataset {dataset!r} has no such class")
        positions.setdefault(dataset, []).append(position)
        classes.setdefault(dataset, []).append(classname)
    device = torch.device(device)
    out: torch.Tensor | None = None
    for dataset, rows in positions.items():
        emb = class_embeddings(model, tokenizer, classes[dataset], by_name[dataset].prompt, device)
        if out is None:
            out = torch.empty(len(entries), emb.shape[1], dtype=torch.float32, device=device)
        out[torch.tensor(rows, device=device)] = emb
    assert out is not None  # entries is non-empty, so some dataset was encoded
    return out
