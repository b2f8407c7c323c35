"""Wall-clock time until PPO hops: seconds to a training return, ours against Stable-Baselines3.

What a user feels is the wall time until the robot hops, not steps per second alone. Each run trains
ppo_continuous.py (its defaults, periodic evaluation included, and --fast-args, a setting that amortizes
per-step overhead over more envs) or the Stable-Baselines3 peer with the same settings (benchmark/sb3_peer.py), and the
training curve is read against wall-clock seconds since the process started (imports included):
- the first time the moving mean of --window consecutive training returns reaches --threshold;
- that moving mean at each of --marks seconds (or at the end, if the run finished earlier).
Runs go one at a time by default (--jobs 1): wall time is what is measured, so nothing else should share
the machine. Writes <results-dir>/<name>.{csv,md,png}.
Runs go through benchmark/run.py's job runner: finished runs are reused, so the benchmark resumes.

CleanRL's ppo_continuous_action.py is not a peer here: the package registry this machine reaches has
cleanrl up to 0.4.8, not 1.2.0.

    python benchmark/time_to_return.py
    python benchmark/time_to_return.py --impls ours ours-fast --seeds 1 --name time-to-return-ours
"""

from __future__ import annotations

import csv
import datetime
import glob
import json
import os
import platform
import shlex
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

import matplotlib
import numpy as np
import tyro

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from run import ROOT, mean_std, run_job

Impl = Literal["ours", "ours-fast", "sb3"]


@dataclass
class Args:
    impls: list[Impl] = field(default_factory=lambda: ["ours", "ours-fast", "sb3"])
    """ours: ppo_continuous.py's defaults; ours-fast: with --fast-args; sb3: Stable-Baselines3 PPO, same settings"""
    fast_args: str = "--num-envs 8 --num-steps 256"
    """ppo_continuous.py flags of ours-fast: the same 2048-step batches from 8 envs; the fastest of four settings
    measured on 2 idle cores (benchmark/results/ppo/ppo-Hopper-v4-sps-*.md: 1 env 1722 steps/s, 2 async envs
    1800, 8 envs 2819, 8 async envs 2186)"""
    env_id: str = "Hopper-v4"
    """gymnasium id"""
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    """seeds, one run per implementation each"""
    total_timesteps: int = 1_000_000
    """training steps per run"""
    threshold: float = 2000.0
    """the training return to reach"""
    window: int = 20
    """episodes in the moving mean of training returns"""
    marks: list[float] = field(default_factory=lambda: [180.0, 600.0])
    """wall-clock seconds at which the moving mean is read"""
    jobs: int = 1
    """runs at once (1: each run has the machine to itself)"""
    name: str = "time-to-return"
    """results file stem"""
    runs_dir: str = os.path.join(ROOT, "benchmark", "runs")
    """where each run's logs go (not committed)"""
    results_dir: str = os.path.join(ROOT, "benchmark", "results", "ppo")
    """where the csv / md / png go (committed)"""


def command(args: Args, impl: str, seed: int, log_dir: str) -> list[str]:
    common = ["--env-id", args.env_id, "--seed", str(seed), "--total-timesteps", str(args.total_timesteps),
              "--eval-episodes", "10", "--log-dir", log_dir]
    if impl == "sb3":
        return [sys.executable, os.path.join(ROOT, "benchmark", "sb3_peer.py"), "--algo", "ppo", *common]
    fast = shlex.split(args.fast_args) if impl == "ours-fast" else []
    return [sys.executable, os.path.join(ROOT, "ppo_continuous.py"), "--no-progress", *common, *fast]


def wall_curve(impl: str, job_dir: str, started: float) -> tuple[np.ndarray, np.ndarray]:
    """(seconds since the process started, raw return) of every training episode, in order of its end."""
    if impl == "sb3":  # one Monitor file per env: a JSON header with t_start, then r, l, t (s since t_start)
        ends = []
        for path in glob.glob(os.path.join(job_dir, "*monitor.csv")):
            with open(path) as f:
                t_start = json.loads(f.readline()[1:])["t_start"]
            data = np.genfromtxt(path, delimiter=",", skip_header=2).reshape(-1, 3)
            ends.append(np.stack([t_start + data[:, 2] - started, data[:, 0]], 1))
        ends = np.concatenate(ends)
    else:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
        (run_dir,) = glob.glob(os.path.join(job_dir, "*__*"))
        events = EventAccumulator(run_dir, size_guidance={"scalars": 0})
        events.Reload()
        ends = np.array([(p.wall_time - started, p.value) for p in events.Scalars("charts/episodic_return")])
    ends = ends[np.argsort(ends[:, 0], kind="stable")]
    return ends[:, 0], ends[:, 1]


def moving_mean(returns: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last `window` returns at each episode (of all so far while fewer than `window`)."""
    sums = np.cumsum(returns)
    counts = np.minimum(np.arange(1, len(returns) + 1), window)
    return (sums - np.concatenate([np.zeros(window), sums[:-window]])[: len(sums)]) / counts


def time_to(seconds: np.ndarray, returns: np.ndarray, threshold: float, window: int) -> float | None:
    """Seconds at which the moving mean of `window` returns (a full window) first reaches threshold; None if never."""
    reached = np.flatnonzero(moving_mean(returns, window)[window - 1:] >= threshold)
    return float(seconds[window - 1 + reached[0]]) if len(reached) else None


def mean_at(seconds: np.ndarray, returns: np.ndarray, mark: float, window: int) -> float | None:
    """The moving mean of the episodes finished by `mark` seconds (the last one, if the run ended earlier);
    None if no episode had finished."""
    done = np.searchsorted(seconds, mark, side="right")
    return float(moving_mean(returns, window)[done - 1]) if done else None


def main(args: Args) -> None:
    keys = [(impl, seed) for seed in args.seeds for impl in args.impls]
    job_dirs = {k: os.path.join(args.runs_dir, args.name, k[0], f"seed{k[1]}") for k in keys}
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        jobs = dict(zip(keys, pool.map(lambda k: run_job(command(args, *k, job_dirs[k]), job_dirs[k]), keys)))
    failed = [f"{impl} seed {seed}" for (impl, seed), job in jobs.items() if job["returncode"] != 0]
    if failed:
        sys.exit(f"error: runs failed: {', '.join(failed)} (see output.log in {args.runs_dir}/{args.name})")
    rows, curves = [], {}
    for (impl, seed), job in jobs.items():
        seconds, returns = curves[impl, seed] = wall_curve(impl, job_dirs[impl, seed], job["started"])
        reached = time_to(seconds, returns, args.threshold, args.window)
        rows.append({"impl": impl, "seed": seed, "seconds_to_threshold": None if reached is None else round(reached, 1),
                     **{f"return_at_{m:g}s": None if (x := mean_at(seconds, returns, m, args.window)) is None
                        else round(x, 1) for m in args.marks},
                     "final_return": round(float(np.mean(returns[-args.window:])), 1),
                     "wall_seconds": round(job["wall_seconds"], 1), "steps_per_second":
                     round(args.total_timesteps / job["wall_seconds"], 1), "commit": job["commit"]})
    os.makedirs(args.results_dir, exist_ok=True)
    with open(os.path.join(args.results_dir, f"{args.name}.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot(curves, args)
    write_summary(rows, args)


def plot(curves: dict, args: Args) -> None:
    """The moving mean of training returns against wall-clock seconds, one line per run."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    colors = {impl: f"C{k}" for k, impl in enumerate(args.impls)}
    for (impl, seed), (seconds, returns) in curves.items():
        ax.plot(seconds, moving_mean(returns, args.window), color=colors[impl], lw=1,
                label=impl if seed == args.seeds[0] else None)
    ax.axhline(args.threshold, color="gray", ls=":")
    ax.set(xlabel="wall-clock seconds since the process started",
           ylabel=f"training return ({args.window}-episode moving mean)", title=f"PPO on {args.env_id}")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(args.results_dir, f"{args.name}.png"), dpi=100)
    plt.close(fig)


def write_summary(rows: list[dict], args: Args) -> None:
    made = (f"Made by `python benchmark/time_to_return.py {shlex.join(sys.argv[1:])}` at commit "
            f"{', '.join(sorted({r['commit'] for r in rows}))} on {datetime.date.today()}, {os.cpu_count()} cores "
            f"({platform.processor() or platform.machine()}), {args.jobs} run(s) at a time.")
    marks = [f"return_at_{m:g}s" for m in args.marks]
    lines = [f"# Seconds to a training return of {args.threshold:g}, PPO on {args.env_id}, seeds {args.seeds}", "",
             made, "", "| implementation | median seconds to reach it (per seed) | "
             + " | ".join(f"return at {m:g} s" for m in args.marks) + " | steps/s (whole run) |",
             "|---|---|" + "---|" * (len(marks) + 1)]
    for impl in args.impls:
        mine = [r for r in rows if r["impl"] == impl]
        times = [r["seconds_to_threshold"] for r in mine]
        median = f"{np.median(times):.0f}" if None not in times else f"not reached by {times.count(None)} seed(s)"
        lines.append(f"| {impl} | {median} ({', '.join('-' if t is None else f'{t:.0f}' for t in times)}) | "
                     + " | ".join(mean_std([r[m] for r in mine]) for m in marks)
                     + f" | {mean_std([r['steps_per_second'] for r in mine])} |")
    lines += ["", (f"Training return: the mean of {args.window} consecutive training episodes (raw returns), read "
                   "against wall-clock seconds since the process started; a run that finished before a mark is "
                   f"read at its end. ours-fast: `{args.fast_args}`. Per-run numbers: the .csv beside this file.")]
    with open(os.path.join(args.results_dir, f"{args.name}.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(tyro.cli(Args))
