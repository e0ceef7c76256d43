# Aggregation: per-run metric matrix and A_KA / A_ZS / GM per task, one duckdb file over all runs, figures.


rule aggregate_run:
    input:
        run_evals,
    output:
        metrics=RUN_METRICS,
        summary=RUN_SUMMARY,
    params:
        tasks=lambda wc: PLAN.stream_of(wc.run).num_tasks,
        updates=lambda wc: PLAN.runs[wc.run].updates_weights,
        version=versions.REPORT,
    log:
        f"{LOGS}/aggregate_run/{{run}}.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/aggregate_run.py"


rule results_db:
    input:
        metrics=run_outputs("metrics"),
        summary=run_outputs("summary"),
    output:
        RESULTS_DB,
    log:
        f"{LOGS}/results_db.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/results_db.py"


rule plot_trajectories:
    input:
        run_outputs("summary"),
    output:
        png=FIGURE_TRAJECTORIES.format(ext="png"),
        pdf=FIGURE_TRAJECTORIES.format(ext="pdf"),
    params:
        figures=PLAN.figures,
    log:
        f"{LOGS}/plot_trajectories.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/plot_trajectories.py"


rule plot_heatmap:
    input:
        RUN_METRICS,
    output:
        png=f"{RESULTS}/figures/heatmap_{{run}}.png",
        pdf=f"{RESULTS}/figures/heatmap_{{run}}.pdf",
    log:
        f"{LOGS}/plot_heatmap/{{run}}.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/plot_heatmap.py"


rule plot_schedules:
    input:
        summaries=run_outputs("summary"),
        logs=trained_task_logs,
    output:
        png=FIGURE_SCHEDULES.format(ext="png"),
        pdf=FIGURE_SCHEDULES.format(ext="pdf"),
    params:
        schedules=lambda wc: {name: run.training["schedule"] for name, run in PLAN.runs.items()},
    log:
        f"{LOGS}/plot_schedules.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/plot_schedules.py"


rule plot_budgets:
    input:
        budgeted_runs,
    output:
        png=FIGURE_BUDGETS.format(ext="png"),
        pdf=FIGURE_BUDGETS.format(ext="pdf"),
    params:
        methods=lambda wc: {name: run.method for name, run in PLAN.runs.items()},
    log:
        f"{LOGS}/plot_budgets.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/plot_budgets.py"


# A trajectory figure over a chosen set of runs (figures.comparisons), e.g. one method under every stream ordering
# or every data mixture, labelled by what differs.
rule plot_comparison:
    input:
        lambda wc: [RUN_SUMMARY.format(run=r) for r in PLAN.figures["comparisons"][wc.comparison]["runs"]],
    output:
        png=FIGURE_COMPARISON.replace("{ext}", "png"),
        pdf=FIGURE_COMPARISON.replace("{ext}", "pdf"),
    params:
        comparison=lambda wc: dict(PLAN.figures["comparisons"][wc.comparison]),
    log:
        f"{LOGS}/plot_comparison/{{comparison}}.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/plot_comparison.py"
