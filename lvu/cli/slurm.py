"""``lvu slurm ...``: arguments for submitting recipes as Slurm jobs (lvu.train.slurm does the work)."""

from __future__ import annotations

import argparse
from pathlib import Path

from lvu.cli.common import add_command
from lvu.train.slurm import (
    TEMPLATE_ENV,
    JobShape,
    check_job,
    default_template,
    prepare_script,
    read_array_file,
    submit_job,
)


def cmd_submit(args: argparse.Namespace) -> int:
    shape = JobShape(nodes=args.nodes, gpus_per_node=args.gpus_per_node, cpus_per_task=args.cpus_per_task,
                     time=args.time, partition=args.partition, account=args.account, mem=args.mem,
                     job_name=args.job_name)
    array_sets = read_array_file(Path(args.array)) if args.array else None
    job = check_job(args.recipe, args.overrides, shape, array_sets, command=args.command, ckpt=args.ckpt)
    template = Path(args.template) if args.template else default_template()
    log_dir, workdir = Path(args.log_dir).resolve(), Path.cwd()
    if args.dry_run:
        print(prepare_script(job, shape, template, log_dir, workdir), end="")
        return 0
    done = submit_job(job, shape, template, log_dir, workdir)
    job_id, name = done.job_id, done.name
    if done.array_tasks:
        print(f"submitted array job {job_id} ({done.array_tasks} tasks, {shape.nodes} node(s) x "
              f"{shape.gpus_per_node} task(s) each)")
        print(f"  logs:        {log_dir}/{name}-{job_id}_<task>.out")
        print(f"  checkpoints: {done.runs}/slurm-{job_id}_<task>/checkpoints/")
    else:
        print(f"submitted job {job_id} ({shape.nodes} node(s) x {shape.gpus_per_node} task(s))")
        print(f"  logs:        {log_dir}/{name}-{job_id}.out")
        if job.command == "eval":
            print("  results:     results.json, results.md and answers/ in the evaluation folder (run_dir=, else "
                  "<the checkpoint's run>/eval/<benchmark>); the job log names it")
        elif job.command == "predict":
            print("  outputs:     the task's output folder (seal: output.folder), else predictions*.jsonl in the "
                  "run folder; the job log names it")
        else:
            print(f"  checkpoints: {done.runs}/slurm-{job_id}/checkpoints/")
    print(f"  script:      {done.script}")
    print(f"  watch: squeue -j {job_id}; tail -f {log_dir}/{name}-{job_id}*.out")
    return 0


def add_slurm_commands(subparsers: argparse._SubParsersAction) -> None:
    sub = add_command(subparsers, "submit", "check a recipe, render slurm/train.sbatch and submit it with sbatch",
                      "lvu slurm submit lvmae/pretrain data.train=feats --nodes 2 --gpus-per-node 8 --time 24:00:00")
    sub.add_argument("recipe", help="recipe YAML file, or a built-in recipe name")
    sub.add_argument("overrides", nargs="*", metavar="key=value", help="overrides, as for `lvu fit`")
    sub.add_argument("--nodes", type=int, required=True, help="nodes (trainer.num_nodes)")
    sub.add_argument("--gpus-per-node", type=int, required=True,
                     help="GPUs per node = tasks per node (trainer.devices); with trainer.accelerator=cpu, processes "
                          "per node and no GPUs requested")
    sub.add_argument("--cpus-per-task", type=int, help="CPUs per task (default: data.num_workers + 1)")
    sub.add_argument("--time", help="time limit, e.g. 24:00:00 (default: the partition's)")
    sub.add_argument("--partition", help="partition (default: the cluster's)")
    sub.add_argument("--account", help="account to charge")
    sub.add_argument("--mem", help="memory per node, e.g. 200G")
    sub.add_argument("--job-name", help="job name (default: the recipe name)")
    sub.add_argument("--array", metavar="FILE",
                     help="array job: one override set per line of FILE, one task each (e.g. slurm/lvu_tasks.txt)")
    sub.add_argument("--log-dir", default="slurm-logs", help="folder for job logs and rendered scripts")
    sub.add_argument("--template", help=f"sbatch template (default: slurm/train.sbatch, or ${TEMPLATE_ENV})")
    sub.add_argument("--command", choices=["fit", "eval", "predict"], default="fit",
                     help="what the job runs: fit (train; default), eval (score a benchmark: eval=NAME, --ckpt) or "
                          "predict (e.g. seal/extract, which resumes its output folder after a requeue)")
    sub.add_argument("--ckpt", help="--command eval or predict: the checkpoint to use")
    sub.add_argument("--dry-run", action="store_true", help="print the rendered script, submit nothing")
    sub.set_defaults(func=cmd_submit)
