# The base model θ0: pretrained by the pipeline on the pretraining pool (the embedded default), or imported from
# the local checkpoint named in the config (loaded strictly into the architecture, stored as safetensors).

if PLAN.model.pretrained_by_pipeline:

    rule pretrain_base:
        input:
            pool=pool_dir(),
            model_config=model_config_input(),
        output:
            checkpoint=BASE_CHECKPOINT,
            log=BASE_LOG,
        log:
            f"{LOGS}/pretrain_base/{{model}}.log",
        benchmark:
            f"{BENCH}/pretrain_base/{{model}}.tsv"
        conda:
            CONDA_ENV
        threads: 2
        resources:
            gpu=1,
            cpus_per_gpu=lambda wc, threads: threads,
            mem_mb=pretrain_mem_mb,
            runtime=pretrain_runtime,
        params:
            arch=PLAN.model.arch,
            pretrain=lambda wc: dict(PLAN.model.pretrain or {}),
            version=versions.MODEL,
        script:
            "../scripts/pretrain_base.py"

else:

    rule import_checkpoint:
        input:
            pretrained=pretrained_file_input(),
            model_config=model_config_input(),
        output:
            checkpoint=BASE_CHECKPOINT,
        log:
            f"{LOGS}/import_checkpoint/{{model}}.log",
        benchmark:
            f"{BENCH}/import_checkpoint/{{model}}.tsv"
        conda:
            CONDA_ENV
        params:
            arch=PLAN.model.arch,
            file=PLAN.model.pretrained_file,
            version=versions.MODEL,
        script:
            "../scripts/import_checkpoint.py"


# Per-class zero-shot accuracy of θ0 on the adaptation datasets: what easy-to-hard streams are ordered by.
rule class_accuracy:
    input:
        unpack(lambda wc: class_accuracy_inputs()),
        model_config=model_config_input(),
    output:
        CLASS_ACCURACY,
    log:
        f"{LOGS}/class_accuracy/{{model}}.log",
    benchmark:
        f"{BENCH}/class_accuracy/{{model}}.tsv"
    conda:
        CONDA_ENV
    threads: PLAN.evaluation["threads"]
    resources:
        gpu=1,
        cpus_per_gpu=lambda wc, threads: threads,
        mem_mb=eval_mem_mb,
        runtime=gpu_runtime,
    params:
        batch_size=PLAN.evaluation["batch_size"],
        version=versions.EVAL,
    script:
        "../scripts/class_accuracy.py"
