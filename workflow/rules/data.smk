# Datasets: obtain (generate or download), shard into webdataset tars + a parquet manifest, catalog in duckdb.


rule download_archive:
    output:
        ARCHIVE,
    log:
        f"{LOGS}/download_archive/{{dataset}}.log",
    benchmark:
        f"{BENCH}/download_archive/{{dataset}}.tsv"
    retries: 1
    conda:
        CONDA_ENV
    params:
        source=lambda wc: dict(PLAN.registry[wc.dataset].source["download"]),
    script:
        "../scripts/download_archive.py"


rule shard_dataset:
    input:
        archive=get_archive,
    output:
        directory(DATASET_DIR),
    log:
        f"{LOGS}/shard_dataset/{{dataset}}.log",
    benchmark:
        f"{BENCH}/shard_dataset/{{dataset}}.tsv"
    conda:
        CONDA_ENV
    threads: shard_threads
    params:
        dataset=dataset_params,
    script:
        "../scripts/shard_dataset.py"


rule build_catalog:
    input:
        all_dataset_dirs(),
    output:
        CATALOG,
    log:
        f"{LOGS}/build_catalog.log",
    benchmark:
        f"{BENCH}/build_catalog.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/build_catalog.py"
