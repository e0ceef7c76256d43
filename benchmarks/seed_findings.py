"""The paper's findings per seed on the final scores of ``config/seeds.yaml`` (fomoflux.findings).

    .venv/bin/snakemake --cores 2 --configfile config/seeds.yaml
    .venv/bin/python benchmarks/seed_findings.py results/seeds/tables/final_scores.csv [--small-cost 2]

Prints the final A_KA / A_ZS / GM of every run by seed, then each finding per seed (holds or not, with the two
numbers compared) and on how many of its checks (seeds x methods under test) it holds.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import polars as pl

from fomoflux.findings import check_findings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scores", type=Path, help="tables/final_scores.csv of the seeds experiment")
    parser.add_argument("--small-cost", type=float, default=2.0, help="largest A_KA cost (points) called small")
    args = parser.parse_args()
    scores = pl.read_csv(args.scores)

    pl.Config.set_tbl_rows(200)
    pl.Config.set_tbl_hide_dataframe_shape(True)
    percent = [(pl.col(c) * 100).round(1) for c in ("A_KA", "A_ZS", "GM")]
    print(scores.select("seed", "run", "method", "schedule", *percent).sort("seed", "run"))
    findings = check_findings(scores, small_cost=args.small_cost)
    print(findings.with_columns(pl.col("ours").round(1), pl.col("against").round(1)))
    tally = findings.group_by("finding").agg(
        pl.col("holds").sum().alias("checks_holding"), pl.len().alias("checks")
    )
    print(tally.sort("finding"))


if __name__ == "__main__":
    main()
