"""Versions of the code that produces each kind of artifact.

Snakemake reruns a job when its params change, but it cannot see an edit inside an imported module. Every rule
passes the version of the code it runs as a param, so a change that alters results is published by bumping the
matching number here: Snakemake then reruns exactly the affected stage and everything downstream. Refactors
that leave results bit-identical do not bump, so a cluster's finished updates stay valid.
"""

DATA = 2  # dataset generation, import and sharding (2: original bytes, byte offsets in the manifest)
MODEL = 1  # base-model pretraining
TRAIN = 3  # the task update: loop, mixture, methods, schedules (3: streamed batches, RandomResizedCrop, pool share)
EVAL = 1  # zero-shot evaluation and retrieval
REPORT = 1  # metric aggregation (A_KA, A_ZS, GM)
BUDGET = 1  # step profiling (FLOPs, memory) and budgets
MERGE = 1  # merge operators over saved checkpoints
STREAM = 1  # orderings computed from data (concept frequency, easy-to-hard, similarity) and sample chunking
