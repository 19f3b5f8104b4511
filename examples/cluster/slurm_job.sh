#!/bin/bash
# EXAMPLE ONLY (not run by the tests): `tomo4d run` on a SLURM cluster through dask-jobqueue.
# Install the extra on the cluster's Python first: pip install 'tomo4d[cluster]' (distributed, dask-jobqueue).
#
# This script is the *client* job: it asks SLURM for worker jobs (SLURMCluster), runs the experiment on them,
# and gives them back when the run ends. Submit it with:   sbatch examples/cluster/slurm_job.sh
# Adapt partition, account, memory, walltime and the paths to your site. The run folder and every input of
# the experiment file must be on a shared file system (the workers write their steps' outputs there).
#
#SBATCH --job-name=tomo4d-client
#SBATCH --time=12:00:00
#SBATCH --cpus-per-task=2
#SBATCH --mem=32G
#SBATCH --output=tomo4d-client-%j.log

set -euo pipefail
EXPERIMENT=${EXPERIMENT:-examples/cluster/experiment.yaml}
RUN=${RUN:-/shared/runs/insitu-cell-07}
N_WORKERS=${N_WORKERS:-6}            # one worker job per time step is plenty (the steps are the tasks)

python - "$EXPERIMENT" "$RUN" "$N_WORKERS" <<'PY'
import sys

from dask_jobqueue import SLURMCluster
from distributed import Client

from tomo4d.pipeline import load_experiment, run_experiment

experiment, run, n_workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
# One worker per SLURM job: 1 process with 1 thread (a step's library code uses its own threads: numba for
# DVC, torch), 8 cores and 48 GiB for it (a 2048^3 step is 16 GiB as uint16, 32 GiB as float32).
cluster = SLURMCluster(queue="compute", account="my-project", cores=8, processes=1, memory="48GB",
                       walltime="06:00:00", job_extra_directives=["--exclusive"],
                       scheduler_options={"dashboard_address": ":8787"})
cluster.scale(jobs=n_workers)
with cluster, Client(cluster) as client:
    client.wait_for_workers(1, timeout=1800)  # the queue decides when the worker jobs start
    res = run_experiment(load_experiment(experiment), run, source=experiment, client=client)
for s in res.stages:
    print(f"{s.name:<9} {s.status:<13} {s.wall_s:7.1f} s")
print(f"report: {res.report}")
PY

# PBS: the same with `from dask_jobqueue import PBSCluster` (queue, account, cores, memory, walltime; site
# resources in resource_spec="select=1:ncpus=8:mem=48gb") and #PBS lines in place of the #SBATCH ones.
#
# Alternative: start the scheduler and workers yourself (e.g. `dask scheduler` in one job and
# `dask worker tcp://HOST:8786 --nthreads 1` in others), then run the CLI against it:
#   tomo4d run "$EXPERIMENT" -o "$RUN" --scheduler tcp://HOST:8786
# A run stopped by a dead worker or the walltime resumes from its done-markers: submit the job again.
