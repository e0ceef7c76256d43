# Stream construction: the ordering (FiF format, a list of DATASET+++classname) and its tasks.


rule build_stream:
    output:
        ordering=ORDERING,
        tasks=TASKS,
    params:
        tasks=lambda wc: [list(t) for t in PLAN.streams[wc.stream].tasks],
    log:
        f"{LOGS}/build_stream/{{stream}}.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/build_stream.py"
