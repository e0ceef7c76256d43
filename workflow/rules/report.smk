# Aggregation: per-run metric matrix and A_KA / A_ZS / GM per task, one duckdb file over all runs, figures.
# Two kinds, never mixed: the trajectories (every task on the fixed evaluation subset) and the full-test-set scores
# (the base model and each run's last task), each with its own tables, figure and score table.
#
# `snakemake --report report.html` shows every figure (its PNG; the PDF lies beside it) and the score tables, each
# with the caption in workflow/report/ and labels run / method / figure. Label values are strings: the report app
# sorts them as text. Each aggregate figure has a subcategory of its own and the heatmaps one per method: the app
# turns a label with two values, each on half of a subcategory's items, into a toggle between them, which breaks
# (shows nothing) where the items are not pairs.


rule aggregate_run:
    input:
        subset=run_evals,
        full=run_full_evals,
    output:
        metrics=RUN_METRICS,
        summary=RUN_SUMMARY,
        metrics_full=RUN_METRICS_FULL,
        summary_full=RUN_SUMMARY_FULL,
    log:
        f"{LOGS}/aggregate_run/{{run}}.log",
    conda:
        CONDA_ENV
    params:
        tasks=lambda wc: PLAN.stream_of(wc.run).num_tasks,
        updates=lambda wc: PLAN.runs[wc.run].updates_weights,
        version=versions.REPORT,
    script:
        "../scripts/aggregate_run.py"


rule results_db:
    input:
        metrics=run_outputs("metrics"),
        summary=run_outputs("summary"),
        metrics_full=run_outputs("metrics_full"),
        summary_full=run_outputs("summary_full"),
        configs=expand(RUN_CONFIG, run=list(PLAN.runs)),
    output:
        RESULTS_DB,
    log:
        f"{LOGS}/results_db.log",
    conda:
        CONDA_ENV
    params:
        version=versions.REPORT,
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
    log:
        f"{LOGS}/plot_trajectories.log",
    conda:
        CONDA_ENV
    params:
        figures=PLAN.figures,
        version=versions.FIGURES,
    script:
        "../scripts/plot_trajectories.py"


# The full-test-set scores: each run from the base model (task 0) to its last task, both on the full test sets.
rule plot_full_test_sets:
    input:
        run_outputs("summary_full"),
    output:
        png=report(
            FIGURE_FULL_SCORES.format(ext="png"),
            caption="../report/full_test_sets.rst",
            category="Figures",
            subcategory="Full test sets",
            labels=report_labels("full test sets", method=run_methods(PLAN.runs)),
        ),
        pdf=FIGURE_FULL_SCORES.format(ext="pdf"),
    log:
        f"{LOGS}/plot_full_test_sets.log",
    conda:
        CONDA_ENV
    params:
        version=versions.FIGURES,
    script:
        "../scripts/plot_full_test_sets.py"


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
    log:
        f"{LOGS}/plot_heatmap/{{run}}.log",
    conda:
        CONDA_ENV
    params:
        version=versions.FIGURES,
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
    log:
        f"{LOGS}/plot_schedules.log",
    conda:
        CONDA_ENV
    params:
        schedules=lambda wc: {name: run.training["schedule"] for name, run in PLAN.runs.items()},
        version=versions.FIGURES,
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
    log:
        f"{LOGS}/plot_budgets.log",
    conda:
        CONDA_ENV
    params:
        methods=lambda wc: {name: run.method for name, run in PLAN.runs.items()},
        version=versions.FIGURES,
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
    log:
        f"{LOGS}/plot_comparison/{{comparison}}.log",
    conda:
        CONDA_ENV
    params:
        comparison=lambda wc: dict(PLAN.figures["comparisons"][wc.comparison]),
        version=versions.FIGURES,
    script:
        "../scripts/plot_comparison.py"


# Each run's final A_KA / A_ZS / GM (and every task's) as a table: CSV for scripts, an HTML page for the report;
# the trajectories' (fixed subset) in final_scores, the full test sets' in full_test_sets.
rule score_tables:
    input:
        summary=run_outputs("summary"),
        summary_full=run_outputs("summary_full"),
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
        full_csv=report(
            FULL_SCORE_TABLE.format(ext="csv"),
            caption="../report/scores_full.rst",
            category="Tables",
            labels={"table": "full test sets (CSV)"},
        ),
        full_html=report(
            FULL_SCORE_TABLE.format(ext="html"),
            caption="../report/scores_full.rst",
            category="Tables",
            labels={"table": "full test sets"},
        ),
    log:
        f"{LOGS}/score_tables.log",
    conda:
        CONDA_ENV
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
    script:
        "../scripts/score_tables.py"
