"""The stream orderings the FoMo-in-Flux paper studies, and cutting an ordered stream into tasks by sample count.

Every ordering is a pure function that returns a *new* list: a permutation of its input entries
(``DATASET+++classname``), never dropping or duplicating one. Randomness comes only from the ``seed`` argument
(numpy ``default_rng``), so the same inputs always give the same stream.

Orderings (names as in the reference release's ``streams/`` files):

* :func:`random_order` — a seeded permutation (``random_sequence_k``).
* :func:`dataset_incremental` — datasets by release year, each one contiguous block (``time_incremental_dschunked_k``).
* :func:`time_incremental` — year groups in order, classes of same-year datasets interleaved
  (``time_incremental_rsagg_k``).
* :func:`frequency_order` — rare concepts (in the pretraining pool's captions) first (``frequency_sequence_1``);
  the counts come from :func:`concept_frequencies`.
* :func:`easy_to_hard` — highest base-model zero-shot accuracy first (``performance_sequence_1``); the accuracies
  come from :func:`per_class_accuracy`.
* :func:`similarity_chain` — a nearest-neighbour walk over class text embeddings (``similarity_sequence_k``); the
  embeddings come from :func:`class_text_embeddings`.
* :func:`reverse` — any of the above backwards (``*_reverse_1``).
* :func:`read_stream_file` / :func:`read_release_stream` — an ordering given as a file, any of the release's 29 or
  one of the user's; the release's ``random_sequence_1`` (the paper's stream) ships with fomoflux.
  :func:`check_stream_file` checks a file against the stream's datasets.

One module per ordering, like ``fomoflux.methods``; ``common`` holds their shared checks.
:func:`chunk_by_samples` cuts an ordered stream into tasks of (nearly) equal training-sample totals, an alternative
to ``fomoflux.stream.chunk``'s cut by class count.
"""

from fomoflux.orderings.chunking import chunk_by_samples
from fomoflux.orderings.dataset_incremental import dataset_incremental
from fomoflux.orderings.easy_to_hard import easy_to_hard, per_class_accuracy, per_class_schema
from fomoflux.orderings.frequency import concept, concept_frequencies, frequency_order
from fomoflux.orderings.random_order import random_order
from fomoflux.orderings.reverse import reverse
from fomoflux.orderings.similarity import class_text_embeddings, similarity_chain
from fomoflux.orderings.stream_file import (
    RELEASE_STREAMS,
    check_stream_file,
    read_release_stream,
    read_stream_file,
    release_stream_path,
)
from fomoflux.orderings.time_incremental import time_incremental

__all__ = [
    "RELEASE_STREAMS",
    "check_stream_file",
    "chunk_by_samples",
    "class_text_embeddings",
    "concept",
    "concept_frequencies",
    "dataset_incremental",
    "easy_to_hard",
    "frequency_order",
    "per_class_accuracy",
    "per_class_schema",
    "random_order",
    "read_release_stream",
    "read_stream_file",
    "release_stream_path",
    "reverse",
    "similarity_chain",
    "time_incremental",
]
