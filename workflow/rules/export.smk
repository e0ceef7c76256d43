# What the pipeline writes for use outside it: open_clip's model-folder config beside every checkpoint (so that
# `open_clip.create_model_and_transforms("local-dir:<folder>")` loads it in one line) and each run's resolved
# settings (runs/<run>/config.json, also the `runs` table of the results database). Rules of their own, so adding
# them to a finished results folder writes a few small files and retrains nothing. Every checkpoint of a config has
# the base model's architecture: the base model's config is made once (it needs open_clip) and the task folders
# get copies (a `cp` each, not a Python process per task).


rule base_open_clip_config:
    input:
        checkpoint=BASE_CHECKPOINT,
        model_config=model_config_input(),
    output:
        BASE_OPEN_CLIP_CONFIG,
    log:
        f"{LOGS}/base_open_clip_config/{{model}}.log",
    conda:
        CONDA_ENV
    params:
        arch=PLAN.model.arch,
    script:
        "../scripts/open_clip_config.py"


rule task_open_clip_config:
    input:
        checkpoint=f"{TASK_DIR}/model.safetensors",
        base_config=lambda wc: BASE_OPEN_CLIP_CONFIG.format(model=PLAN.model.name),
    output:
        TASK_OPEN_CLIP_CONFIG,
    log:
        f"{LOGS}/task_open_clip_config/{{run}}/task{{task}}.log",
    conda:
        CONDA_ENV
    shell:
        "cp {input.base_config} {output} 2> {log}"


rule run_config:
    input:
        unpack(run_config_inputs),
    output:
        RUN_CONFIG,
    log:
        f"{LOGS}/run_config/{{run}}.log",
    conda:
        CONDA_ENV
    params:
        settings=lambda wc: run_settings(PLAN, wc.run),
    script:
        "../scripts/run_config.py"
