# fomoflux: continual multimodal pretraining of CLIP models (FoMo-in-Flux) as a Snakemake DAG.
#
#   datasets -> shards + catalog -> stream -> base model -> task 1 -> task 2 -> ... (one job per task update)
#                                                 |             |         |
#                                              evaluate      evaluate  evaluate -> metrics -> duckdb + figures
from snakemake.utils import min_version

min_version("9.0")


# The embedded mini benchmark unless a config is given on the command line (`--configfile`): Snakemake merges a
# Snakefile configfile with command-line ones, which would silently add the default runs to every experiment.
if not config:

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/stream.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/budget.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/merge.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


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
    plot_heatmap,
    plot_schedules,
    plot_budgets,
    plot_comparison,


rule all:
    default_target: True
    input:
        all_targets(),
