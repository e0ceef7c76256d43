# Merges of saved task checkpoints (methods/merging.py): a job per (run, task, kind), streaming tensors so memory
# stays bounded by a few models. Deploy-only merge settings rerun these jobs and the evaluations, never training.


rule merge_task:
    input:
        unpack(merge_inputs),
    output:
        TASK_MERGE,
    log:
        f"{LOGS}/merge_task/{{run}}/task{{task}}_{{kind}}.log",
    benchmark:
        f"{BENCH}/merge_task/{{run}}/task{{task}}_{{kind}}.tsv"
    conda:
        CONDA_ENV
    resources:
        mem_mb=merge_mem_mb,
    params:
        merge=merge_params,
    script:
        "../scripts/merge_task.py"
