"""The pipeline side of fomoflux: what the Snakemake workflow needs, apart from the library it runs.

- ``plan``: the resolved experiment (config -> runs, streams, tasks, paths), rebuilt by the Snakefile and every job.
- ``stages``: one function per rule, wiring a job's files to the library; ``task_data`` reads a job's samples.
- ``resources``: what each job asks a scheduler for; ``slurm``: SLURM-specific parts (time limits, requeue).
- ``versions``: the code version each rule passes as a param, so a bump reruns exactly the affected stages.
- ``workflow_entry``: how a ``workflow/scripts`` file runs its stage (logging, errors, the plan).

The library (``fomoflux.data``, ``model``, ``train``, ``methods``, ``merge``, ``evaluate``, ``metrics``, ``plots``)
knows nothing of Snakemake and is usable on its own.
"""
