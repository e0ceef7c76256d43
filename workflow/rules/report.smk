# Aggregation: per-run metric matrix and A_KA / A_ZS / GM per task, one duckdb file over all runs, figures.
#
# `snakemake --report report.html` shows every figure (its PNG; the PDF lies beside it) and the score tables, each
# with the caption in workflow/report/ and labels run / method / figure. Label values are strings: the report app
# sorts them as text. Each aggregate figure has a subcategory of its own and the heatmaps one per method: the app
# turns a label with two values, each on half of a subcategory's items, into a toggle between them, which breaks
# (shows nothing) where the items are not pairs.


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
        configs=expand(RUN_CONFIG, run=list(PLAN.runs)),
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
        png=report(
            FIGURE_TRAJECTORIES.format(ext="png"),
            caption="../report/trajectories.rst",
            category="Figures",
            subcategory="Trajectories",
            labels=report_labels("trajectories", method=run_methods(PLAN.runs)),
        ),
        pdf=FIGURE_TRAJECTORIES.format(ext="pdf"),
    params:
        figures=PLAN.figures,
        version=versions.FIGURES,
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
        png=report(
            f"{RESULTS}/figures/heatmap_{{run}}.png",
            caption="../report/heatmap.rst",
            category="Heatmaps",
            subcategory=lambda wc: PLAN.runs[wc.run].method,
            # the run first: it is what tells the heatmaps apart (the report's first label column)
            labels=lambda wc: {"run": wc.run, "method": PLAN.runs[wc.run].method, "figure": "heatmap"},
        ),
        pdf=f"{RESULTS}/figures/heatmap_{{run}}.pdf",
    params:
        version=versions.FIGURES,
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
        png=report(
            FIGURE_SCHEDULES.format(ext="png"),
            caption="../report/schedules.rst",
            category="Figures",
            subcategory="Schedules",
            labels=report_labels("schedules", "trained runs", run_methods(trained_runs())),
        ),
        pdf=FIGURE_SCHEDULES.format(ext="pdf"),
    params:
        schedules=lambda wc: {name: run.training["schedule"] for name, run in PLAN.runs.items()},
        version=versions.FIGURES,
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
        png=report(
            FIGURE_BUDGETS.format(ext="png"),
            caption="../report/budgets.rst",
            category="Figures",
            subcategory="Budgets",
            labels=report_labels("budgets", "trained runs", run_methods(trained_runs())),
        ),
        pdf=FIGURE_BUDGETS.format(ext="pdf"),
    params:
        methods=lambda wc: {name: run.method for name, run in PLAN.runs.items()},
        version=versions.FIGURES,
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
        png=report(
            FIGURE_COMPARISON.replace("{ext}", "png"),
            caption="../report/comparison.rst",
            category="Figures",
            subcategory="Comparison: {comparison}",
            labels=lambda wc: report_labels(
                f"compare_{wc.comparison}",
                ", ".join(comparison_runs(wc.comparison)),
                run_methods(comparison_runs(wc.comparison)),
            ),
        ),
        pdf=FIGURE_COMPARISON.replace("{ext}", "pdf"),
    params:
        comparison=lambda wc: dict(PLAN.figures["comparisons"][wc.comparison]),
        version=versions.FIGURES,
    log:
        f"{LOGS}/plot_comparison/{{comparison}}.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/plot_comparison.py"


# Each run's final A_KA / A_ZS / GM (and every task's) as a table: CSV for scripts, an HTML page for the report.
rule score_tables:
    input:
        run_outputs("summary"),
    output:
        csv=report(
            SCORE_TABLE.format(ext="csv"),
            caption="../report/scores.rst",
            category="Tables",
            labels={"table": "final scores (CSV)"},
        ),
        html=report(
            SCORE_TABLE.format(ext="html"),
            caption="../report/scores.rst",
            category="Tables",
            labels={"table": "final scores"},
        ),
    params:
        runs=lambda wc: {
            name: {
                "method": run.method,
                "stream": run.stream,
                "schedule": run.training["schedule"] if run.updates_weights else "-",
                "seed": run.seed,
            }
            for name, run in PLAN.runs.items()
        },
        version=versions.FIGURES,
    log:
        f"{LOGS}/score_tables.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/score_tables.py"
