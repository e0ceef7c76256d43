"""Versions of the code that produces each kind of artifact.

Snakemake reruns a job when its params change, but it cannot see an edit inside an imported module. Every rule
passes the version of the code it runs as a param, so a change that alters results is published by bumping the
matching number here: Snakemake then reruns exactly the affected stage and everything downstream. Refactors
that leave results bit-identical do not bump, so a cluster's finished updates stay valid.
"""

DATA = 3  # dataset generation, import and sharding (2: original bytes, byte offsets in the manifest; 3: release
# captions as the reference picks them: default_caption, else synthetic_merged_caption, never primer_caption)
MODEL = 3  # base-model pretraining (2: torch's fused AdamW on the CPU too; 3: fomo-tiny-vit with 3 image and 2 text
# blocks, 24 % cheaper per step and a better base model in the same 700 steps)
TRAIN = 6  # the task update: loop, mixture, methods, schedules (3: streamed batches, RandomResizedCrop, pool share;
# 4: dynamic_recovery and the rsqrt family computed as the reference does; 5: the reference's AdamW, separate q/k/v
# adapters with the reference's inits, DoRA's detached norm, EWC's Fisher and SI's path integral as the reference;
# 6: torch's fused AdamW on the CPU too)
EVAL = 3  # zero-shot evaluation and retrieval (2: the reference's PRIMER prompts, retrieval over every caption;
# 3: the reference's per-class subset draw, the base model on the subset, full test sets evaluated apart)
REPORT = 2  # metric aggregation (A_KA, A_ZS, GM) (2: subset and full-test-set results in separate tables)
FIGURES = 3  # figures and score tables (1: A_KA / A_ZS math labels, zero-shot reference lines, budget mode;
# 2: trajectories on the subset only, a full-test-set figure and table; 3: the legend beside the axes from five curves)
BUDGET = 2  # step profiling (FLOPs, memory) and budgets (2: q/k/v adapters, EWC's Fisher pass and SI's copies)
MERGE = 2  # merge operators over saved checkpoints (2: the reference's argument order, TIME grid from θ1, 2^i / fifth /
# tenth weightings, tower-wide TIES / DARE / breadcrumbs, LiNeS replacing λ)
STREAM = 2  # orderings computed from data (concept frequency, easy-to-hard, similarity) and sample chunking (2: the
# similarity ordering embeds the reference's PRIMER prompts)
