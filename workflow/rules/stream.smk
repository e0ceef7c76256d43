# Stream construction: the ordering (FiF format, a list of DATASET+++classname) and its tasks. Orderings the plan
# knows are written as they are; concept-frequency, easy-to-hard and similarity orderings (and chunking by sample
# count) are computed here from the pool's captions, the base model's per-class accuracy or its text embeddings.


rule build_stream:
    input:
        unpack(stream_inputs),
    output:
        ordering=ORDERING,
        tasks=TASKS,
    log:
        f"{LOGS}/build_stream/{{stream}}.log",
    benchmark:
        f"{BENCH}/build_stream/{{stream}}.tsv"
    conda:
        CONDA_ENV
    params:
        stream=stream_params,
    script:
        "../scripts/build_stream.py"
