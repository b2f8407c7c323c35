"""The source -> target transfer table of udr_hopper.py and bayrn_hopper.py (the seed study's Table IV).

Trains udr_hopper.py on the source, the target (the oracle) and the UDR source for every seed,
plus a sweep of --mass-scale on the first seed, and runs bayrn_hopper.py for every seed, every
policy with the same PPO budget, and writes <results-dir>/<name>.{csv,md,png}: rows S->S, S->T,
T->T, T->S, UDR->S, UDR->T, BayRn->S, BayRn->T (mean +- std over seeds of each run's deterministic
evaluation), the sweep, and a grouped bar chart with error bars.
Runs go through benchmark/run.py's job runner: finished runs are reused, and a BayRn run that
stopped part-way is continued with bayrn_hopper.py --resume, so it resumes.

    python benchmark/transfer.py --total-timesteps 500000 --seeds 1 2 3
"""

from __future__ import annotations

import csv
import datetime
import glob
import json
import os
import platform
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import matplotlib
import numpy as np
import tyro

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from run import ROOT, mean_std, run_job

sys.path.insert(0, ROOT)
import udr_hopper

LABELS = {"source": "S", "target": "T", "udr": "UDR", "bayrn": "BayRn"}


@dataclass
class Args:
    total_timesteps: int = 500_000
    """training steps per run (every row the same)"""
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    """seeds of the source / target / udr rows"""
    mass_scales: list[float] = field(default_factory=lambda: [0.1, 0.3, 0.5])
    """--mass-scale values of the sweep, run on the first seed"""
    eval_episodes: int = 50
    """deterministic evaluation episodes per domain"""
    bayrn: bool = True
    """also run bayrn_hopper.py for every seed (inner budget = --total-timesteps per candidate)"""
    bayrn_init: int = 5
    """bayrn_hopper.py --num-init"""
    bayrn_iterations: int = 5
    """bayrn_hopper.py --iterations (target episodes in the loop: 5 x (init + iterations))"""
    jobs: int = 2
    """runs at once (the machine has 2 cores)"""
    name: str = "transfer-hopper"
    """results file stem"""
    runs_dir: str = os.path.join(ROOT, "benchmark", "runs")
    """where each run's logs go (not committed)"""
    results_dir: str = os.path.join(ROOT, "benchmark", "results")
    """where the csv / md / png go (committed)"""


def command(args: Args, domain: str, seed: int, scale: float | None, log_dir: str) -> list[str]:
    extra = ["--mass-scale", str(scale)] if scale is not None else []
    return [sys.executable, os.path.join(ROOT, "udr_hopper.py"), "--no-progress", "--train-domain", domain,
            "--seed", str(seed), "--total-timesteps", str(args.total_timesteps),
            "--eval-episodes", str(args.eval_episodes), "--log-dir", log_dir, *extra]


def bayrn_command(args: Args, seed: int, job_dir: str) -> list[str]:
    """bayrn_hopper.py for one seed; --resume the run already in job_dir if one stopped part-way.
    Exits (status 2) if that run was started with another budget than this table's."""
    started = glob.glob(os.path.join(job_dir, "*__*", "args.json"))
    if not started:
        return [sys.executable, os.path.join(ROOT, "bayrn_hopper.py"), "--seed", str(seed),
                "--inner-timesteps", str(args.total_timesteps), "--num-init", str(args.bayrn_init),
                "--iterations", str(args.bayrn_iterations), "--eval-episodes", str(args.eval_episodes),
                "--log-dir", job_dir]
    with open(started[0]) as f:
        saved = json.load(f)
    wanted = {"seed": seed, "inner_timesteps": args.total_timesteps, "num_init": args.bayrn_init,
              "iterations": args.bayrn_iterations, "eval_episodes": args.eval_episodes}
    wrong = {k: saved.get(k) for k, v in wanted.items() if saved.get(k) != v}
    if wrong:
        print(f"error: {os.path.dirname(started[0])} was started with {wrong}, this table needs {wanted}; "
              "move it away or match the flags", file=sys.stderr)
        sys.exit(2)
    return [sys.executable, os.path.join(ROOT, "bayrn_hopper.py"), "--resume", os.path.dirname(started[0])]


def main(args: Args) -> None:
    # (train domain, seed, mass scale); the udr rows use the script's default scale, the sweep the first seed.
    default = udr_hopper.DEFAULT_MASS_SCALE
    domains = ("source", "target", "udr", "bayrn") if args.bayrn else ("source", "target", "udr")
    keys = [(d, s, default if d == "udr" else None) for s in args.seeds for d in domains]
    keys += [("udr", args.seeds[0], m) for m in args.mass_scales if m != default]
    job_dirs = {k: os.path.join(args.runs_dir, args.name, k[0] + ("" if k[2] is None else f"-scale{k[2]}"),
                                f"seed{k[1]}") for k in keys}
    commands = {k: bayrn_command(args, k[1], job_dirs[k]) if k[0] == "bayrn" else command(args, *k, job_dirs[k])
                for k in keys}
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {k: pool.submit(run_job, commands[k], job_dirs[k]) for k in keys}
        jobs = {k: f.result() for k, f in futures.items()}
    failed = [str(k) for k, job in jobs.items() if job["returncode"] != 0]
    if failed:
        sys.exit(f"error: runs failed: {', '.join(failed)} (see output.log in {args.runs_dir}/{args.name})")

    rows, searches = [], {}
    os.makedirs(args.results_dir, exist_ok=True)
    for (domain, seed, scale), job_dir in job_dirs.items():
        (path,) = glob.glob(os.path.join(job_dir, "*__*", "eval.json"))
        with open(path) as f:
            result = json.load(f)
        if domain == "bayrn":  # keep each search's candidates and figure beside the table
            run_dir = os.path.dirname(path)
            with open(os.path.join(run_dir, "bayrn_history.jsonl")) as f:
                searches[seed] = ([json.loads(line) for line in f], result)
            for source, ext in (("bayrn_history.jsonl", "jsonl"), ("bayrn.png", "png")):
                shutil.copy(os.path.join(run_dir, source), os.path.join(args.results_dir, f"{args.name}-bayrn-seed{seed}.{ext}"))
        rows.append({"train_domain": domain, "mass_scale": scale, "seed": seed, "total_timesteps": args.total_timesteps,
                     "train_return_last100": round(result["train_return_last100"], 1),
                     "source_mean": round(result["source"]["mean"], 1), "source_std": round(result["source"]["std"], 1),
                     "target_mean": round(result["target"]["mean"], 1), "target_std": round(result["target"]["std"], 1),
                     "eval_episodes": result["target"]["episodes"],
                     # BayRn: the target episodes its loop spent choosing phi*, and the whole loop's time
                     "loop_target_episodes": result.get("target_episodes_used", 0),
                     "wall_seconds": round(jobs[domain, seed, scale]["wall_seconds"] + result.get("loop_seconds", 0), 1)})
    with open(os.path.join(args.results_dir, f"{args.name}.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    main_rows = [r for r in rows if r["train_domain"] != "udr" or r["mass_scale"] == default]
    table = {(d, e): [r[f"{e}_mean"] for r in main_rows if r["train_domain"] == d]
             for d in domains for e in ("source", "target")}
    plot(table, domains, args)
    write_summary(table, rows, searches, sorted({j.get("commit", "unknown") for j in jobs.values()}), args)


def plot(table: dict, domains: tuple[str, ...], args: Args) -> None:
    """Grouped bars: one group per training domain, one bar per evaluation domain, std over seeds."""
    names = {"source": "trained on source", "udr": f"UDR source (±{udr_hopper.DEFAULT_MASS_SCALE:.0%})",
             "bayrn": "BayRn source (phi*)", "target": "trained on target (oracle)"}
    order = [d for d in ("source", "udr", "bayrn", "target") if d in domains]
    fig, ax = plt.subplots(figsize=(1.9 * len(order) + 1, 4))
    x = np.arange(len(order))
    for k, evaluation in enumerate(("source", "target")):
        values = [table[d, evaluation] for d in order]
        ax.bar(x + (k - 0.5) * 0.38, [np.mean(v) for v in values], 0.38, yerr=[np.std(v) for v in values],
               capsize=4, label=f"evaluated on {evaluation}")
    ax.set_xticks(x, [names[d] for d in order], fontsize=8)
    ax.set(ylabel="deterministic return (mean ± std over seeds)",
           title=f"Hopper transfer, PPO {args.total_timesteps // 1000}k steps, seeds {args.seeds}")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(args.results_dir, f"{args.name}.png"), dpi=100)
    plt.close(fig)


def write_summary(table: dict, rows: list[dict], searches: dict, commits: list[str], args: Args) -> None:
    made = (f"Made by `python benchmark/transfer.py {' '.join(sys.argv[1:])}` at commit {', '.join(commits)} on "
            f"{datetime.date.today()}, {os.cpu_count()} cores ({platform.processor() or platform.machine()}), "
            f"{args.jobs} runs at a time.")
    scripts = "udr_hopper.py and bayrn_hopper.py" if searches else "udr_hopper.py"
    lines = [f"# Hopper source -> target transfer, {scripts} (PPO), {args.total_timesteps} steps per policy, seeds {args.seeds}",
             "", made, "", "| train -> test | deterministic return (mean ± std over seeds) | per seed |", "|---|---|---|"]
    for d, e in (("source", "source"), ("source", "target"), ("target", "target"), ("target", "source"),
                 ("udr", "source"), ("udr", "target"), ("bayrn", "source"), ("bayrn", "target")):
        if (d, e) in table:
            lines.append(f"| {LABELS[d]} -> {LABELS[e]} | {mean_std(table[d, e])} | "
                         f"{', '.join(f'{v:.0f}' for v in table[d, e])} |")
    udr_t, s_t, t_t = (np.mean(table[d, "target"]) for d in ("udr", "source", "target"))
    lines += ["", (f"UDR uses --mass-scale {udr_hopper.DEFAULT_MASS_SCALE} (the script's default). "
              f"UDR->T / S->T = {udr_t / s_t:.2f} (bar 1.15); UDR->T / T->T = {udr_t / t_t:.2f} (bar 0.90).")]
    bayrn = [r for r in rows if r["train_domain"] == "bayrn"]
    if bayrn:
        bayrn_t = np.mean(table["bayrn", "target"])
        lines += ["", (f"BayRn: {args.bayrn_init} Sobol + {args.bayrn_iterations} BO candidates per seed, each a "
                       f"{args.total_timesteps}-step policy scored on target episodes; target episodes used in "
                       f"the loop per seed: {', '.join(str(r['loop_target_episodes']) for r in bayrn)}. "
                       f"BayRn->T / UDR->T = {bayrn_t / udr_t:.2f} (bar 1.00); "
                       f"BayRn->T / T->T = {bayrn_t / t_t:.2f} (bar 0.95).")]
        lines += ["", ("| seed | phi* = candidate | its J_real in the loop | highest J_real in the loop | phi* policy on T "
                       f"({args.eval_episodes} episodes) |"), "|---|---|---|---|---|"]
        for seed, (history, result) in searches.items():
            top = max(history, key=lambda r: r["target_return"])
            lines.append(f"| {seed} | {result['candidate']} | {history[result['candidate']]['target_return']:.0f} | "
                         f"{top['target_return']:.0f} (candidate {top['index']}) | {result['target']['mean']:.0f} |")
        lines += ["", (f"phi* is the candidate with the highest GP posterior mean (not the highest J_real). Every "
                       f"candidate, its phi and J_real: {args.name}-bayrn-seed<seed>.jsonl; the search and the GP: "
                       f"{args.name}-bayrn-seed<seed>.png.")]
    lines += ["", f"## --mass-scale sweep, seed {args.seeds[0]}", "",
              "| mass scale | UDR -> S | UDR -> T | last-100 training return |", "|---|---|---|---|"]
    for r in sorted((r for r in rows if r["train_domain"] == "udr" and r["seed"] == args.seeds[0]),
                    key=lambda r: r["mass_scale"]):
        lines.append(f"| ±{r['mass_scale']:.0%} | {r['source_mean']:.0f} ± {r['source_std']:.0f} | "
                     f"{r['target_mean']:.0f} ± {r['target_std']:.0f} | {r['train_return_last100']:.0f} |")
    lines += ["", (f"Each run: {args.eval_episodes} deterministic episodes per domain, frozen observation "
                   "normalization, evaluation seeds disjoint from training; the sweep rows show mean ± std over "
                   "episodes of one run. Per-run numbers: the .csv beside this file.")]
    with open(os.path.join(args.results_dir, f"{args.name}.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(tyro.cli(Args))
