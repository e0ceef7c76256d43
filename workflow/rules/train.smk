# One job per (run, task): checkpoint of task t-1 -> checkpoint of task t, with its training log.


rule train_task:
    input:
        unpack(previous_task),
        unpack(training_data),
        model_config=model_config_input(),
    output:
        checkpoint=f"{TASK_DIR}/model.safetensors",
        state=f"{TASK_DIR}/method_state.safetensors",
        log=f"{TASK_DIR}/train_log.parquet",
    log:
        f"{LOGS}/train_task/{{run}}/task{{task}}.log",
    benchmark:
        f"{BENCH}/train_task/{{run}}/task{{task}}.tsv"
    conda:
        CONDA_ENV
    threads: lambda wc: PLAN.runs[wc.run].training["threads"]
    resources:
        gpu=train_gpus,
        cpus_per_gpu=train_cpus_per_gpu,
        mem_mb=train_mem_mb,
        runtime=train_runtime,
    params:
        spec=task_spec,
        version=versions.TRAIN,
    script:
        "../scripts/train_task.py"
