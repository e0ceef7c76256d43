# fomoflux: continual multimodal pretraining of CLIP models (FoMo-in-Flux) as a Snakemake DAG.
#
#   datasets -> shards + catalog -> stream -> base model -> task 1 -> task 2 -> ... (one job per task update)
#                                                 |             |         |
#                                              evaluate      evaluate  evaluate -> metrics -> duckdb + figures
from snakemake.utils import min_version, update_config

from fomoflux.config_schema import typed_overrides

min_version("9.0")


# `snakemake --report report.html`: this page, then every figure and table (workflow/rules/report.smk).
report: "workflow/report/workflow.rst"


# The default experiment (the embedded mini benchmark) whenever no config file is given on the command line:
# `--config key=value` then applies on top of it (Snakemake merges it in, nested keys included). A `--configfile`
# replaces the default instead: merging the two would silently add the default runs to every experiment.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


# Snakemake types a top-level `--config` value but leaves everything nested in one as strings
# (`--config 'training={lr: 0.01}'` gives lr "0.01"): typed as a config file would type them.
update_config(config, typed_overrides(workflow.config_settings.config))


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/stream.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/budget.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/merge.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/export.smk"


# Jobs that run where Snakemake runs (the submit host under --profile slurm), never as cluster jobs: downloads
# need the internet that compute nodes often lack, and the bookkeeping and report jobs take less time than a
# cluster job takes to start.
localrules:
    all,
    download_archive,
    run_budget,
    aggregate_run,
    results_db,
    plot_trajectories,
    plot_full_test_sets,
    plot_heatmap,
    plot_schedules,
    plot_budgets,
    plot_comparison,
    task_open_clip_config,
    base_open_clip_config,
    run_config,
    score_tables,


rule all:
    default_target: True
    input:
        all_targets(),
