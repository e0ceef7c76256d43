"""Datasets: registry, generation and download, webdataset shards, the duckdb catalog."""
