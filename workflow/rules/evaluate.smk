# One job per (run, checkpoint): zero-shot top-1 on classification sets, R@1/R@5 on retrieval sets.
# Full test sets for the base model and the last task; the fixed seeded subsets in between. A task's checkpoint is
# the one its run deploys: the trained weights, or their merge (rule merge_task).


rule evaluate_base:
    input:
        unpack(eval_inputs),
        checkpoint=base_checkpoint(),
        model_config=model_config_input(),
    output:
        BASE_EVAL,
    params:
        eval=eval_params(full=True),
    threads: PLAN.evaluation["threads"]
    resources:
        gpu=1,
        cpus_per_gpu=lambda wc, threads: threads,
        mem_mb=eval_mem_mb,
        runtime=gpu_runtime,
    log:
        f"{LOGS}/evaluate_base/{{model}}.log",
    benchmark:
        f"{BENCH}/evaluate_base/{{model}}.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/evaluate.py"


rule evaluate_task:
    input:
        unpack(eval_inputs),
        checkpoint=lambda wc: deployed_checkpoint(wc.run, wc.task),
        model_config=model_config_input(),
    output:
        TASK_EVAL,
    params:
        eval=lambda wc: eval_params(full=PLAN.is_full_eval(wc.run, int(wc.task))),
    threads: PLAN.evaluation["threads"]
    resources:
        gpu=1,
        cpus_per_gpu=lambda wc, threads: threads,
        mem_mb=eval_mem_mb,
        runtime=gpu_runtime,
    log:
        f"{LOGS}/evaluate_task/{{run}}/task{{task}}.log",
    benchmark:
        f"{BENCH}/evaluate_task/{{run}}/task{{task}}.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/evaluate.py"
