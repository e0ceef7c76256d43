# The base model: pretrained by the pipeline on the pretraining pool (the embedded default), or a local
# checkpoint named in the config (then this rule does not run).


rule pretrain_base:
    input:
        pool=pool_dir(),
        model_config=model_config_input(),
    output:
        checkpoint=BASE_CHECKPOINT,
        log=BASE_LOG,
    params:
        arch=PLAN.model.arch,
        pretrain=lambda wc: dict(PLAN.model.pretrain or {}),
        version=versions.MODEL,
    threads: 2
    resources:
        gpu=1 if PLAN.model.pretrained_by_pipeline else 0,
    log:
        f"{LOGS}/pretrain_base/{{model}}.log",
    benchmark:
        f"{BENCH}/pretrain_base/{{model}}.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/pretrain_base.py"
