# Compute budgets: profile each method's training step (FLOPs, peak memory), then give every run the steps per task
# that cost what full fine-tuning's `training.steps` cost (Memory-Adjusted FLOPs by default), or the steps the config
# gives (`fixed`: training.steps; `table`: the run's entry of budget.table). Training reads its step count from the
# run's budget file.


rule profile_method:
    input:
        model_config=model_config_input(),
    output:
        PROFILE,
    log:
        f"{LOGS}/profile_method/{{model}}/{{profile}}.log",
    benchmark:
        f"{BENCH}/profile_method/{{model}}/{{profile}}.tsv"
    conda:
        CONDA_ENV
    resources:
        # Only a profile measured on the GPU needs one (budget.memory: cuda); counting runs on shapes alone.
        gpu=1 if PLAN.budget["memory"] == "cuda" else 0,
    params:
        spec=profile_spec,
        arch=PLAN.model.arch,
    script:
        "../scripts/profile_method.py"


rule run_budget:
    input:
        unpack(budget_profiles),
    output:
        RUN_BUDGET,
    log:
        f"{LOGS}/run_budget/{{run}}.log",
    benchmark:
        f"{BENCH}/run_budget/{{run}}.tsv"
    conda:
        CONDA_ENV
    params:
        training=lambda wc: PLAN.budget_settings(wc.run),
        version=versions.BUDGET,
    script:
        "../scripts/run_budget.py"
