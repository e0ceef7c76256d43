"""Rare concepts first (the reference's ``frequency_sequence_1``), with the concept counts in the pretraining pool's
captions computed by one duckdb query."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from fomoflux.errors import ConfigError, DataError
from fomoflux.orderings.common import check_unique, entry_scores, sorted_by_key

# A "word" for concept matching: a maximal run of Unicode letters and digits (RE2 syntax, run inside duckdb).
# Everything else (spaces, punctuation, '_', '-', apostrophes) separates words, for captions and concepts alike.
WORD_PATTERN = r"[\pL\pN]+"


_SEPARATORS = re.compile(r"[\s_\-]+")


def concept(classname: str) -> str:
    """The concept text of a class name: lowercase, ``_`` and ``-`` read as spaces, runs of spaces collapsed.

    ``"Golden_Retriever"`` -> ``"golden retriever"``; ``"t-shirt"`` -> ``"t shirt"``.
    """
    return _SEPARATORS.sub(" ", classname.lower()).strip()


def _check_manifests(pool_manifests: Sequence[Path | str]) -> list[str]:
    """The manifest paths as strings; a missing file, or one without a ``captions`` column, is a DataError naming it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not pool_manifests:
        raise ConfigError("concept_frequencies: no pool manifests given")
    paths = []
    for manifest in pool_manifests:
        path = Path(manifest)
        if not path.is_file():
            raise DataError(f"pool manifest {path} does not exist")
        try:
            names = pq.read_schema(path).names
        except (pa.ArrowException, OSError, ValueError) as err:  # corrupt or truncated file
            raise DataError(f"pool manifest {path} is not a readable parquet file: {err}") from None
        if "captions" not in names:
            raise DataError(f"pool manifest {path} has no 'captions' column (columns: {names})")
        paths.append(str(path))
    return paths


# Counting in one query. Both captions and concepts are split into words by WORD_PATTERN, so matching is
# case-insensitive and on word boundaries by construction. Rather than pairing every caption with every concept, the
# query keeps only caption positions whose word starts some concept (a hash semi-join), builds at those positions the
# n-grams of the lengths that concepts actually have, and hash-joins them on the concept's phrase: the work grows
# with the number of words in the pool, not with captions x concepts.
_FREQUENCY_SQL = """
WITH concept_words AS (
    SELECT concept, regexp_extract_all(lower(concept), $pattern) AS words FROM concept_input
),
concept_table AS (
    SELECT concept, array_to_string(words, ' ') AS phrase, words[1] AS first_word, len(words) AS n_words
    FROM concept_words
),
first_words AS (SELECT DISTINCT first_word FROM concept_table),
lengths AS (SELECT DISTINCT n_words FROM concept_table),
caption_words AS (
    SELECT filename AS file, file_row_number AS row_id,
           regexp_extract_all(lower(unnest(captions)), $pattern) AS words
    FROM read_parquet($files, filename = true, file_row_number = true, union_by_name = true)
),
positions AS (
    SELECT file, row_id, words, unnest(range(1, len(words) + 1)) AS pos FROM caption_words
),
starts AS (
    SELECT * FROM positions WHERE words[pos] IN (SELECT first_word FROM first_words)
),
ngrams AS (
    SELECT s.file, s.row_id, l.n_words, array_to_string(s.words[s.pos : s.pos + l.n_words - 1], ' ') AS phrase
    FROM starts s CROSS JOIN lengths l
    WHERE s.pos + l.n_words - 1 <= len(s.words)
),
matches AS (
    SELECT DISTINCT c.concept, g.file, g.row_id
    FROM ngrams g JOIN concept_table c ON c.n_words = g.n_words AND c.phrase = g.phrase
)
SELECT concept, count(*) AS samples FROM matches GROUP BY concept
"""


def _concept_words(concepts: Iterable[str]) -> list[str]:
    """The distinct concepts; one without any word (empty, only punctuation) is a ConfigError naming it."""
    distinct = list(dict.fromkeys(concepts))
    for text in distinct:
        if not isinstance(text, str) or not re.search(r"[^\W_]", text):
            raise ConfigError(f"concept_frequencies: concept {text!r} has no word to match")
    return distinct


def concept_frequencies(
    pool_manifests: Sequence[Path | str], concepts: Sequence[str], *, threads: int | None = None
) -> dict[str, int]:
    """For each concept, the number of pool *samples* with a caption that contains it as a whole word sequence.

    Words are maximal runs of Unicode letters and digits, compared in lowercase, so ``"cat"`` matches ``"A Cat!"``
    and ``"cat's"`` but not ``"category"``, and ``"hot dog"`` matches ``"hot-dog"``. A sample (one row of a manifest,
    with its ``captions`` list) counts at most once per concept however many of its captions, or how often one
    caption, mention it: the pool's images are the unit of pretraining exposure, and a sample's extra captions
    describe the same image. One duckdb query over all manifests; ``threads`` caps duckdb's threads (None: its
    default, all cores).

    Returns ``{concept: count}`` for every given concept (0 when absent), keyed by the concept string as given.
    Raises DataError for a missing or unreadable manifest or one without ``captions``; ConfigError for no manifests
    or a concept without any word.
    """
    import duckdb
    import pyarrow as pa

    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"concept_frequencies: threads must be an integer >= 1, got {threads!r}")
    paths = _check_manifests(pool_manifests)
    distinct = _concept_words(concepts)
    if not distinct:
        return {}
    con = duckdb.connect()
    try:
        if threads is not None:
            con.execute(f"SET threads = {threads}")
        con.register("concept_input", pa.table({"concept": pa.array(distinct, pa.string())}))
        rows = con.execute(_FREQUENCY_SQL, {"pattern": WORD_PATTERN, "files": paths}).fetchall()
    except duckdb.Error as err:
        raise DataError(f"concept_frequencies: reading pool manifests {paths} failed: {err}") from None
    finally:
        con.close()
    counts = dict.fromkeys(distinct, 0)
    counts.update({text: int(samples) for text, samples in rows})
    return {text: counts[text] for text in concepts}


def frequency_order(entries: Sequence[str], counts: Mapping[str, int], seed: int) -> list[str]:
    """Rare first: entries by ascending ``counts[entry]``, ties in a seeded random order.

    ``counts`` is keyed by entry (map each entry's ``concept`` through :func:`concept_frequencies`). Raises
    ConfigError for an entry without a count (naming it) or given twice; DataError for a negative count.
    """
    pool = check_unique(entries, "frequency_order")
    return sorted_by_key(pool, entry_scores(pool, counts, "count", "frequency_order", allow_negative=False), seed)
