# One job per (run, checkpoint): zero-shot top-1 on classification sets, R@1/R@5 on retrieval sets.
# Every trajectory point (the base model, task 0, and every task) is scored on the same fixed seeded subset of each
# dataset (fomoflux.evaluate.stratified_subset), so the points compare one to one. The base model and each run's last
# task are also scored on the full test sets (the *_full rules), reported apart: their own tables and figure. A
# task's checkpoint is the one its run deploys: the trained weights, or their merge (rule merge_task).


rule evaluate_base:
    input:
        unpack(eval_inputs),
        checkpoint=base_checkpoint(),
        model_config=model_config_input(),
    output:
        BASE_EVAL,
    log:
        f"{LOGS}/evaluate_base/{{model}}.log",
    benchmark:
        f"{BENCH}/evaluate_base/{{model}}.tsv"
    conda:
        CONDA_ENV
    threads: PLAN.evaluation["threads"]
    resources:
        gpu=1,
        cpus_per_gpu=lambda wc, threads: threads,
        mem_mb=eval_mem_mb,
        runtime=gpu_runtime,
    params:
        eval=eval_params(full=False),
    script:
        "../scripts/evaluate.py"


use rule evaluate_base as evaluate_base_full with:
    output:
        BASE_EVAL_FULL,
    log:
        f"{LOGS}/evaluate_base_full/{{model}}.log",
    benchmark:
        f"{BENCH}/evaluate_base_full/{{model}}.tsv"
    params:
        eval=eval_params(full=True),


rule evaluate_task:
    input:
        unpack(eval_inputs),
        checkpoint=lambda wc: deployed_checkpoint(wc.run, wc.task),
        model_config=model_config_input(),
    output:
        TASK_EVAL,
    log:
        f"{LOGS}/evaluate_task/{{run}}/task{{task}}.log",
    benchmark:
        f"{BENCH}/evaluate_task/{{run}}/task{{task}}.tsv"
    conda:
        CONDA_ENV
    threads: PLAN.evaluation["threads"]
    resources:
        gpu=1,
        cpus_per_gpu=lambda wc, threads: threads,
        mem_mb=eval_mem_mb,
        runtime=gpu_runtime,
    params:
        eval=eval_params(full=False),
    script:
        "../scripts/evaluate.py"


# Only a run's last task is requested (run_full_evals).
use rule evaluate_task as evaluate_task_full with:
    output:
        TASK_EVAL_FULL,
    log:
        f"{LOGS}/evaluate_task_full/{{run}}/task{{task}}.log",
    benchmark:
        f"{BENCH}/evaluate_task_full/{{run}}/task{{task}}.tsv"
    params:
        eval=eval_params(full=True),
