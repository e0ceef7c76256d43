# Compute budgets: profile each method's training step (FLOPs, peak memory), then give every run the steps per task
# that cost what full fine-tuning's `training.steps` cost (Memory-Adjusted FLOPs by default). Training reads its
# step count from the run's budget file.


rule profile_method:
    input:
        model_config=model_config_input(),
    output:
        PROFILE,
    params:
        spec=profile_spec,
        arch=PLAN.model.arch,
    resources:
        # Only a profile measured on the GPU needs one (budget.memory: cuda); counting runs on shapes alone.
        gpu=1 if PLAN.budget["memory"] == "cuda" else 0,
    log:
        f"{LOGS}/profile_method/{{model}}/{{profile}}.log",
    benchmark:
        f"{BENCH}/profile_method/{{model}}/{{profile}}.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/profile_method.py"


rule run_budget:
    input:
        unpack(budget_profiles),
    output:
        RUN_BUDGET,
    params:
        training=lambda wc: {k: PLAN.runs[wc.run].training[k] for k in ("steps", "budget", "batch_size")},
        version=versions.BUDGET,
    log:
        f"{LOGS}/run_budget/{{run}}.log",
    benchmark:
        f"{BENCH}/run_budget/{{run}}.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/run_budget.py"
