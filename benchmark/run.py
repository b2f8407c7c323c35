"""Run one of our algorithms (and optionally its Stable-Baselines3 peer) over seeds; tabulate and plot.

Each (implementation, seed) is a subprocess whose wall time and peak memory (max RSS, from wait4)
are recorded in job.json beside its logs; a job with a job.json that exited 0 is not run again,
so an interrupted benchmark resumes. With --peer, ours and the peer of the same seed are queued
next to each other, so with --jobs 2 they run at the same time; with --paired as well, the next
seed waits until both have finished, so each pair shares the machine with nothing else and
their SPS ratio is a fair speed comparison (the peer, slower, runs alone at the end).
Results: <results-dir>/<name>.csv (one row per run),
<name>.md (the table, the command, commit, date and machine) and <name>.png (learning curves,
mean +- std over seeds).

    python benchmark/run.py --algo ppo --env-id Hopper-v4 --total-timesteps 1000000 --seeds 1 2 3 --peer
    python benchmark/run.py --algo ppo --env-id Hopper-v4 --total-timesteps 100000 --seeds 1 2 3 --peer --paired \
        --name ppo-Hopper-v4-speed
    python benchmark/run.py --algo ppo --seeds 1 --name ppo-Hopper-v4-evalfreq0 "--script-args=--eval-freq 0"
"""

from __future__ import annotations

import csv
import datetime
import glob
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

import matplotlib
import numpy as np
import tyro

matplotlib.use("Agg")
import matplotlib.pyplot as plt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = {"ppo": "ppo_continuous.py", "trpo": "trpo.py", "a2c": "a2c.py", "reinforce": "reinforce.py",
           "ddpg": "ddpg.py"}
# REINFORCE has no Stable-Baselines3 peer
PEERS = {"ppo": "SB3 PPO", "trpo": "sb3-contrib TRPO", "a2c": "SB3 A2C", "ddpg": "SB3 DDPG"}


@dataclass
class Args:
    algo: Literal["ppo", "trpo", "a2c", "reinforce", "ddpg"] = "ppo"
    """our script to benchmark"""
    env_id: str = "Hopper-v4"
    """gymnasium id"""
    total_timesteps: int = 1_000_000
    """training steps per run"""
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    """seeds, one run each (per implementation)"""
    peer: bool = False
    """also run the Stable-Baselines3 peer with the same settings"""
    jobs: int = 2
    """runs at once (the machine has 2 cores)"""
    paired: bool = False
    """with --peer: start the next seed only when ours and the peer of this seed have both finished"""
    eval_episodes: int = 50
    """deterministic evaluation episodes after training"""
    name: str | None = None
    """results file stem; default <algo>-<env-id>"""
    script_args: str = ""
    """more flags for our script, e.g. --script-args "--eval-freq 0" (not passed to the peer)"""
    peer_args: str = ""
    """more flags for the peer (benchmark/sb3_peer.py), e.g. --peer-args "--num-envs 8 --num-steps 256" """
    runs_dir: str = os.path.join(ROOT, "benchmark", "runs")
    """where each run's logs go (not committed)"""
    results_dir: str | None = None
    """where the csv / md / png go (committed); default benchmark/results/<algo>"""
    ray_address: str | None = None
    """run every job as a Ray task on this cluster ("auto", "host:port", "ray://host:port"); --jobs then
    only bounds how many are queued at once"""


def job_command(args: Args, impl: str, seed: int, log_dir: str) -> list[str]:
    common = ["--env-id", args.env_id, "--seed", str(seed), "--total-timesteps", str(args.total_timesteps),
              "--eval-episodes", str(args.eval_episodes), "--log-dir", log_dir]
    if impl == "ours":
        script = os.path.join(ROOT, SCRIPTS[args.algo])
        return [sys.executable, script, "--no-progress", *common, *shlex.split(args.script_args)]
    return [sys.executable, os.path.join(ROOT, "benchmark", "sb3_peer.py"), "--algo", args.algo, *common,
            *shlex.split(args.peer_args)]


def run_job(command: list[str], job_dir: str, resume: bool = False) -> dict:
    """Run one command to completion; record its start (Unix seconds), wall seconds and its own peak RSS
    (MiB) in job.json. A job whose job.json says it exited 0 is not run again. What an interrupted run
    left in job_dir is removed first (its half-written run directory would be read as a second run),
    unless resume: the command continues it (bayrn_hopper.py --resume)."""
    done = finished_job(job_dir)
    if done:
        return done
    if not resume:
        shutil.rmtree(job_dir, ignore_errors=True)
    os.makedirs(job_dir, exist_ok=True)
    commit, load = git_commit(), os.getloadavg()[0]  # load: what else ran on the machine as this job began
    start = datetime.datetime.now().timestamp()
    with open(os.path.join(job_dir, "output.log"), "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        _, status, usage = os.wait4(process.pid, 0)
    return write_job(job_dir, {"command": command, "commit": commit, "returncode": os.waitstatus_to_exitcode(status),
                               "started": start, "wall_seconds": datetime.datetime.now().timestamp() - start,
                               "peak_rss_mb": usage.ru_maxrss / 1024, "loadavg_at_start": load})


def finished_job(job_dir: str) -> dict | None:
    """The job.json of a job that exited 0, or None."""
    path = os.path.join(job_dir, "job.json")
    if os.path.exists(path):
        with open(path) as f:
            job = json.load(f)
        if job["returncode"] == 0:
            return job
    return None


def write_job(job_dir: str, job: dict) -> dict:
    with open(os.path.join(job_dir, "job.json"), "w") as f:
        json.dump(job, f, indent=2)
    return job


def runner(ray_address: str | None):
    """run_job, or its Ray twin (benchmark/cluster.py, imported only then) on the cluster at ray_address."""
    if not ray_address:
        return run_job
    import cluster

    cluster.connect(ray_address)
    return cluster.run_job


def git_commit() -> str:
    """Short hash of HEAD, with "+dirty" if tracked files differ from it (the code a job runs)."""
    def git(*words):
        return subprocess.run(["git", *words], cwd=ROOT, capture_output=True, text=True, check=False).stdout.strip()
    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def training_curve(impl: str, job_dir: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, returns) of every finished training episode, raw returns, x = env steps at its end."""
    if impl == "ours":
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
        (run_dir,) = glob.glob(os.path.join(job_dir, "*__*"))
        events = EventAccumulator(run_dir, size_guidance={"scalars": 0})
        events.Reload()
        points = events.Scalars("charts/episodic_return")
        return np.array([p.step for p in points]), np.array([p.value for p in points])
    # One monitor file per env; the envs step in lockstep, so an episode of env i that ends at
    # its own step k ends at global step k * num_envs.
    files = sorted(glob.glob(os.path.join(job_dir, "*monitor.csv")))
    ends = []
    for path in files:
        data = np.genfromtxt(path, delimiter=",", skip_header=2).reshape(-1, 3)  # r, l, t
        ends.append(np.stack([np.cumsum(data[:, 1]) * len(files), data[:, 0]], 1))
    ends = np.concatenate(ends)
    ends = ends[np.argsort(ends[:, 0], kind="stable")]
    return ends[:, 0], ends[:, 1]


def eval_result(job_dir: str) -> dict:
    (path,) = glob.glob(os.path.join(job_dir, "eval.json")) or glob.glob(os.path.join(job_dir, "*__*", "eval.json"))
    with open(path) as f:
        return json.load(f)


def ours_sps(job_dir: str) -> float:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    (run_dir,) = glob.glob(os.path.join(job_dir, "*__*"))
    events = EventAccumulator(run_dir, size_guidance={"scalars": 0})
    events.Reload()
    return float(events.Scalars("charts/SPS")[-1].value)


def best_moving_mean(returns: np.ndarray, window: int = 100) -> float:
    """Highest mean of `window` consecutive training episodes (of all of them if fewer): the training
    analogue of the "max average return" that Fujimoto et al. 2018 (Table 1) report, where our
    last-100 column is the average at the end."""
    if len(returns) <= window:
        return float(np.mean(returns))
    return float(np.convolve(returns, np.ones(window) / window, mode="valid").max())


def mean_std(values) -> str:
    """"mean ± std" over seeds, or "-" where a run has no such number (a peer has no best checkpoint)."""
    return "-" if None in values else f"{np.mean(values):.0f} ± {np.std(values):.0f}"


def main(args: Args) -> None:
    if args.peer and args.algo not in PEERS:
        print(f"error: --algo {args.algo} has no Stable-Baselines3 peer (run it without --peer)", file=sys.stderr)
        sys.exit(2)
    name = args.name or f"{args.algo}-{args.env_id}"
    args.results_dir = args.results_dir or os.path.join(ROOT, "benchmark", "results", args.algo)
    impls = ["ours", "peer"] if args.peer else ["ours"]
    queue = [(impl, seed) for seed in args.seeds for impl in impls]  # ours and peer of a seed side by side
    job_dirs = {key: os.path.join(args.runs_dir, name, key[0], f"seed{key[1]}") for key in queue}
    batches = [queue[i:i + len(impls)] for i in range(0, len(queue), len(impls))] if args.paired else [queue]
    jobs, run = {}, runner(args.ray_address)
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for batch in batches:
            futures = {key: pool.submit(run, job_command(args, *key, job_dirs[key]), job_dirs[key])
                       for key in batch}
            jobs.update({key: future.result() for key, future in futures.items()})
    failed = [f"{impl} seed {seed}" for (impl, seed), job in jobs.items() if job["returncode"] != 0]
    if failed:
        sys.exit(f"error: runs failed: {', '.join(failed)} (see output.log in {args.runs_dir}/{name})")

    rows, curves = [], {impl: [] for impl in impls}
    for impl, seed in queue:
        job_dir, job = job_dirs[impl, seed], jobs[impl, seed]
        steps, returns = training_curve(impl, job_dir)
        curves[impl].append((steps, returns))
        result = eval_result(job_dir)
        rows.append({"impl": "ours" if impl == "ours" else PEERS[args.algo], "seed": seed,
                     "total_timesteps": args.total_timesteps,
                     "train_return_last100": round(float(np.mean(returns[-100:])), 1),
                     "train_return_best100": round(best_moving_mean(returns), 1),
                     "eval_mean": round(result["mean"], 1), "eval_std": round(result["std"], 1),
                     "eval_episodes": result["episodes"],
                     # best_model.pt: the policy of the best evaluation during training, evaluated like the last
                     "best_eval_mean": round(best["mean"], 1) if (best := result.get("best_model")) else None,
                     "best_step": best["global_step"] if best else None,
                     "sps": round(ours_sps(job_dir) if impl == "ours" else result["sps"], 1),
                     "wall_seconds": round(job["wall_seconds"], 1), "peak_rss_mb": round(job["peak_rss_mb"], 1),
                     "loadavg_at_start": job.get("loadavg_at_start")})
    os.makedirs(args.results_dir, exist_ok=True)
    with open(os.path.join(args.results_dir, f"{name}.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot(curves, args, name)
    write_summary(rows, sorted({job.get("commit", "unknown") for job in jobs.values()}), args, name)


def plot(curves: dict, args: Args, name: str) -> None:
    """Mean +- std over seeds of the 20-episode moving average, on a common grid of env steps."""
    grid = np.linspace(0, args.total_timesteps, 200)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for impl, runs in curves.items():
        smoothed = []
        for steps, returns in runs:
            window = min(20, len(returns))
            average = np.convolve(returns, np.ones(window) / window, mode="valid")
            smoothed.append(np.interp(grid, steps[window - 1:], average, left=np.nan))
        with warnings.catch_warnings():  # grid points before any seed's first average are NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            mean, std = np.nanmean(smoothed, 0), np.nanstd(smoothed, 0)
        label = f"{'ours' if impl == 'ours' else PEERS[args.algo]} ({len(runs)} seeds)"
        ax.plot(grid, mean, label=label)
        ax.fill_between(grid, mean - std, mean + std, alpha=0.25)
    ax.set(xlabel="environment steps", ylabel="training episodic return (20-episode mean)",
           title=f"{args.algo} on {args.env_id}")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(args.results_dir, f"{name}.png"), dpi=100)
    plt.close(fig)


def write_summary(rows: list[dict], commits: list[str], args: Args, name: str) -> None:
    """<name>.md: per-implementation mean ± std over seeds, the SPS ratio, and how it was made."""
    made = (f"Made by `python benchmark/run.py {' '.join(sys.argv[1:])}` at commit {', '.join(commits)} on "
            f"{datetime.date.today()}, {os.cpu_count()} cores ({platform.processor() or platform.machine()}), "
            f"{args.jobs} runs at a time{', ours and the peer of a seed in pairs' if args.paired else ''}.")
    lines = [f"# {args.algo} on {args.env_id}, {args.total_timesteps} steps, seeds {args.seeds}", "", made, "",
             ("| implementation | last-100 training return | best 100 in a row | deterministic eval, last "
              "| deterministic eval, best checkpoint | SPS | wall s | peak MiB |"), "|---|---|---|---|---|---|---|---|"]
    impls = list(dict.fromkeys(r["impl"] for r in rows))
    for impl in impls:
        mine = [r for r in rows if r["impl"] == impl]
        columns = ("train_return_last100", "train_return_best100", "eval_mean", "best_eval_mean", "sps", "wall_seconds")
        lines.append(f"| {impl} | " + " | ".join(mean_std([r[c] for r in mine]) for c in columns)
                     + f" | {max(r['peak_rss_mb'] for r in mine):.0f} |")
    if len(impls) == 2 and (args.paired or args.jobs == 1):
        sps = {(r["impl"], r["seed"]): r["sps"] for r in rows}
        ratios = [sps[impls[0], seed] / sps[impls[1], seed] for seed in args.seeds]
        loads = [r["loadavg_at_start"] for r in rows]
        load = "not recorded" if None in loads else ", ".join(f"{x:.1f}" for x in loads)
        how = ("each run alone on the machine" if args.jobs == 1
               else "ours and the peer of a seed run side by side, under the same load")
        lines += ["", (f"SPS ratio ours / {impls[1]}, per seed ({how}): {', '.join(f'{r:.2f}' for r in ratios)}; "
                       f"median {np.median(ratios):.2f}. 1-minute load average as each run started: {load}.")]
    elif len(impls) == 2:
        lines += ["", ("SPS here is measured while other runs share the machine; compare speed with a --paired run "
                       "or with --jobs 1.")]
    lines += ["", (f"Mean ± std over seeds; best 100 in a row = the highest mean of 100 consecutive training "
                   f"episodes; deterministic evaluation = {args.eval_episodes} episodes with frozen "
                   "observation normalization, of the last policy (model.pt) and of the best of the evaluations "
                   "during training (best_model.pt), on the same episode seeds. Per-run numbers: the .csv beside "
                   "this file.")]
    with open(os.path.join(args.results_dir, f"{name}.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(tyro.cli(Args))
