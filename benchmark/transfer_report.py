"""The tables and figures of benchmark/transfer.py: <name>.csv, .md and .png, and each BayRn search's figure.

Everything here reads the rows transfer.py made (one dict per run, the csv's columns) and its Args.
"""

from __future__ import annotations

import csv
import datetime
import json
import os
import platform
import shlex
import sys
from typing import TYPE_CHECKING

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from run import mean_std

if TYPE_CHECKING:
    from transfer import Args

LABELS = {"source": "S", "target": "T", "udr": "UDR", "bayrn": "BayRn"}
NAMES = {"udr_hopper": "PPO (udr_hopper.py)", "reinforce": "REINFORCE", "a2c": "A2C", "ppo": "PPO", "trpo": "TRPO"}


def chosen_scale(tuned: list[dict]) -> float:
    """The UDR scale whose tuning runs have the highest mean target return (the first of equals)."""
    scales = list(dict.fromkeys(r["mass_scale"] for r in tuned))
    return max(scales, key=lambda m: np.mean([r["target_mean"] for r in tuned if r["mass_scale"] == m]))


def write_table(rows: list[dict], args: Args) -> None:
    """<name>.csv (every row), .md (the table) and .png (bars), and each BayRn search's figure."""
    os.makedirs(args.results_dir, exist_ok=True)
    with open(os.path.join(args.results_dir, f"{args.name}.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)), restval="")
        writer.writeheader()
        writer.writerows(rows)
    reported = [r for r in rows if r["purpose"] != "tune"]
    table = {}  # (algo, train domain, test domain): [mean return of each seed]
    for r in reported:
        for e in ("source", "target"):
            table.setdefault((r["algo"], r["train_domain"], e), []).append(r[f"{e}_mean"])
    searches = {}
    for r in reported:
        if r["train_domain"] == "bayrn":
            stem = os.path.join(args.results_dir, f"{args.name}-bayrn-seed{r['seed']}")
            with open(stem + ".jsonl") as f, open(stem + ".json") as g:
                searches[r["seed"]] = ([json.loads(line) for line in f], json.load(g))
            plot_search(*searches[r["seed"]], stem + ".png")
    plot(table, args)
    write_summary(table, rows, searches, args)


def plot(table: dict, args: Args) -> None:
    """Grouped bars, one panel per learner: a group per training domain, a bar per evaluation domain."""
    names = {"source": "source", "udr": "UDR source", "bayrn": "BayRn source (phi*)", "target": "target (oracle)"}
    algos = list(dict.fromkeys(a for a, _, _ in table))
    if not algos:  # only tuning runs so far
        return
    fig, axes = plt.subplots(1, len(algos), figsize=(6.5 * len(algos), 4), squeeze=False)
    for ax, algo in zip(axes[0], algos):
        order = [d for d in ("source", "udr", "bayrn", "target") if (algo, d, "target") in table]
        x = np.arange(len(order))
        for k, evaluation in enumerate(("source", "target")):
            values = [table[algo, d, evaluation] for d in order]
            ax.bar(x + (k - 0.5) * 0.38, [np.mean(v) for v in values], 0.38, yerr=[np.std(v) for v in values],
                   capsize=4, label=f"evaluated on {evaluation}")
        ax.set_xticks(x, [f"trained on\n{names[d]}" for d in order], fontsize=8)
        ax.set(ylabel="deterministic return (mean ± std over seeds)",
               title=f"{NAMES[algo]}, {args.total_timesteps // 1000}k steps")
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(args.results_dir, f"{args.name}.png"), dpi=100)
    plt.close(fig)


def plot_search(history: list[dict], result: dict, path: str) -> None:
    """One BayRn search: each candidate's J_real (mean of its target episodes) and the GP posterior
    mean there, the running best, the posterior mean at phi* and the final policy's target return;
    right, each candidate's mass bounds per body."""
    index = [r["index"] for r in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    left.plot(index, [r["target_return"] for r in history], "o", label="J_real (target episodes of the candidate)")
    left.plot(index, result["candidate_posterior_returns"], "x", label="GP posterior mean there")
    left.plot(index, np.maximum.accumulate([r["target_return"] for r in history]), "-", label="running best J_real")
    left.axhline(result["phi_star_posterior_return"], color="gray", ls=":", label="posterior mean at phi*")
    left.axhline(result["target"]["mean"], color="red", ls="--",
                 label=f"final policy on target ({result['target']['episodes']} episodes)")
    left.set(xlabel="candidate", ylabel="target return", title="BayRn search")
    left.legend(fontsize=7)
    for k, body in enumerate(history[0]["bounds"]):
        low, high = np.array([r["bounds"][body] for r in history]).T
        right.vlines(np.array(index) + 0.2 * (k - 1), low, high, color=f"C{k}", label=body, lw=2)
        right.plot([len(history) + 0.2 * (k - 1)] * 2, result["phi_star"][body], color=f"C{k}", lw=4)
    right.set(xlabel="candidate (last: phi*)", ylabel="mass bounds (kg)", title="U(low, high) per body")
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_summary(table: dict, rows: list[dict], searches: dict, args: Args) -> None:
    commits = sorted({str(r["commit"]) for r in rows})
    made = (f"Made by `python benchmark/transfer.py {shlex.join(sys.argv[1:])}` (and, for rows it kept, the "
            f"earlier invocations of this table with the same settings) from runs at commit {', '.join(commits)}, on "
            f"{datetime.date.today()}, {os.cpu_count()} cores ({platform.processor() or platform.machine()}), "
            f"{args.jobs} runs at a time.")
    reported = [r for r in rows if r["purpose"] != "tune"]
    seeds = sorted({r["seed"] for r in reported})
    lines = [f"# Hopper source -> target transfer, {args.total_timesteps} steps per policy, seeds {seeds}", "",
             made, "", "| learner | train -> test | deterministic return (mean ± std over seeds) | per seed |",
             "|---|---|---|---|"]
    algos = list(dict.fromkeys(r["algo"] for r in rows))
    pairs = (("source", "source"), ("source", "target"), ("target", "target"), ("target", "source"),
             ("udr", "source"), ("udr", "target"), ("bayrn", "source"), ("bayrn", "target"))
    lines += [f"| {NAMES[a]} | {LABELS[d]} -> {LABELS[e]} | {mean_std(table[a, d, e])} | "
              f"{', '.join(f'{v:.0f}' for v in table[a, d, e])} |"
              for a in algos for d, e in pairs if (a, d, e) in table]
    lines.append("")
    for algo in algos:
        target = {d: np.mean(table[algo, d, "target"]) for d in LABELS if (algo, d, "target") in table}
        ratios = [f"{LABELS[a]}->T / {LABELS[b]}->T = {target[a] / target[b]:.2f}"
                  for a, b in (("udr", "source"), ("udr", "target"), ("bayrn", "udr"), ("bayrn", "target"))
                  if a in target and b in target]
        scales = sorted({r["mass_scale"] for r in reported if r["algo"] == algo and r["train_domain"] == "udr"})
        if ratios or scales:
            lines.append(f"- {NAMES[algo]}: UDR scale ±{', ±'.join(f'{m:.0%}' for m in scales)}. " + "; ".join(ratios))
    if searches:
        bayrn = [r for r in reported if r["train_domain"] == "bayrn"]
        minutes = ", ".join(f"{r['wall_seconds'] / 60:.0f}" for r in bayrn)
        lines += ["", (f"BayRn: bayrn_hopper.py {args.bayrn_args or '(defaults)'}, {args.bayrn_init} Sobol + "
                       f"{args.bayrn_iterations} BO candidates per seed. Target episodes spent in the search: "
                       f"{', '.join(str(r['loop_target_episodes']) for r in bayrn)}; simulator steps (candidates and "
                       f"final policy): {', '.join(str(r['simulator_steps']) for r in bayrn)}; wall time: "
                       f"{minutes} min."), "",
                  ("| seed | best candidate (posterior) | its J_real | highest J_real | posterior mean at phi* | "
                   f"final policy on T ({args.eval_episodes} episodes) |"), "|---|---|---|---|---|---|"]
        for seed, (history, result) in searches.items():
            top = max(history, key=lambda r: r["target_return"])
            best = result["best_candidate"]
            lines.append(f"| {seed} | {best} | {history[best]['target_return']:.0f} | {top['target_return']:.0f} "
                         f"(candidate {top['index']}) | {result['phi_star_posterior_return']:.0f} | "
                         f"{result['target']['mean']:.0f} |")
        lines += ["", (f"phi* maximizes the GP posterior mean over the whole box; the final policy trains on U(phi*) "
                       f"({searches[next(iter(searches))][1]['final_init']} start). Every candidate: "
                       f"{args.name}-bayrn-seed<seed>.jsonl; the search: {args.name}-bayrn-seed<seed>.png.")]
    tuned = [r for r in rows if r["purpose"] == "tune"]
    if tuned:
        lines += ["", f"## UDR scale, chosen on seeds {sorted({r['seed'] for r in tuned})} by the mean UDR -> T", "",
                  "| learner | scale | UDR -> T per tuning seed | mean | UDR -> S mean | target episodes spent |",
                  "|---|---|---|---|---|---|"]
        for algo in dict.fromkeys(r["algo"] for r in tuned):
            runs = [r for r in tuned if r["algo"] == algo]
            best = chosen_scale(runs)
            for m in dict.fromkeys(r["mass_scale"] for r in runs):
                at = [r for r in runs if r["mass_scale"] == m]
                lines.append(f"| {NAMES[algo]} | ±{m:.0%}{' (chosen)' if m == best else ''} | "
                             f"{', '.join(str(round(r['target_mean'])) for r in at)} | "
                             f"{np.mean([r['target_mean'] for r in at]):.0f} | "
                             f"{np.mean([r['source_mean'] for r in at]):.0f} | "
                             f"{sum(r['loop_target_episodes'] for r in at)} |")
    lines += ["", (f"Each run: {args.eval_episodes} deterministic episodes per domain, frozen observation "
                   "normalization, evaluation seeds disjoint from training. Per-run numbers: the .csv beside this "
                   f"file; final policies: policies/{args.name}/.")]
    with open(os.path.join(args.results_dir, f"{args.name}.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
