"""The source -> target transfer table of udr_hopper.py and bayrn_hopper.py (the seed study's Table IV).

Trains udr_hopper.py on the source, the target (the oracle) and the UDR source for every seed,
plus a sweep of --mass-scale on the first seed, and runs bayrn_hopper.py for every seed, every
policy with the same PPO budget, and writes <results-dir>/<name>.{csv,md,png}: rows S->S, S->T,
T->T, T->S, UDR->S, UDR->T, BayRn->S, BayRn->T (mean +- std over seeds of each run's deterministic
evaluation), the sweep, and a grouped bar chart with error bars. Every run's final policy is
copied to <results-dir>/policies/<name>/ (weights only; `udr_hopper.py --checkpoint` evaluates it).
Runs go through benchmark/run.py's job runner: finished runs are reused, and a BayRn run that
stopped part-way is continued with bayrn_hopper.py --resume, so it resumes. benchmark/runs/ is not
committed, so a table also keeps the rows it published in <name>.csv with the same settings (budget,
evaluation episodes, BayRn search) whose policies are in results/: a table can grow over sessions,
e.g. --seeds 1 2 today and --seeds 1 2 3 tomorrow trains only seed 3.

Seeds: the table's seed s is a label. No two runs share a training seed: udr_hopper.py runs get
--seed = numpy SeedSequence(s, spawn_key=(2, row)).generate_state(1)[0] (row 0 source, 1 target,
2 udr, 3 + k the k-th sweep scale); bayrn_hopper.py --seed s draws its own from spawn keys (0, i) and (1,).

    python benchmark/transfer.py --total-timesteps 500000 --seeds 1 2 3
    python benchmark/transfer.py --rows bayrn --seeds 11 12 "--bayrn-args=--common-seed" --name bayrn-crn
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
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

import matplotlib
import numpy as np
import tyro

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from run import ROOT, mean_std, run_job

LABELS = {"source": "S", "target": "T", "udr": "UDR", "bayrn": "BayRn"}
Row = Literal["source", "target", "udr", "bayrn"]


@dataclass
class Args:
    total_timesteps: int = 500_000
    """training steps per run (every row the same; BayRn: per candidate and for its final policy)"""
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    """seed labels of the rows (each run's training seed is derived from its label, see above)"""
    rows: list[Row] = field(default_factory=lambda: ["source", "target", "udr", "bayrn"])
    """which training domains to run"""
    mass_scale: float = 0.1
    """udr_hopper.py --mass-scale of the udr rows (the script's default)"""
    mass_scales: list[float] = field(default_factory=lambda: [0.1, 0.3, 0.5])
    """--mass-scale values of the sweep, run on the first seed (with the udr row)"""
    eval_episodes: int = 100
    """deterministic evaluation episodes per domain"""
    bayrn_init: int = 5
    """bayrn_hopper.py --num-init"""
    bayrn_iterations: int = 5
    """bayrn_hopper.py --iterations (target episodes in the loop: --target-episodes x (init + iterations))"""
    bayrn_args: str = ""
    """more flags for bayrn_hopper.py, e.g. "--bayrn-args=--common-seed --target-episodes 10" (with =;
    give each set its own --name)"""
    reuse_search: str | None = None
    """BayRn rows: take each seed's candidates from the finished search of this table name
    (bayrn_hopper.py --search-from) and only train the final policy"""
    jobs: int = 2
    """runs at once (the machine has 2 cores)"""
    name: str = "transfer-hopper"
    """results file stem"""
    runs_dir: str = os.path.join(ROOT, "benchmark", "runs")
    """where each run's logs go (not committed)"""
    results_dir: str = os.path.join(ROOT, "benchmark", "results", "transfer")
    """where the csv / md / png go (committed)"""
    reevaluate: bool = False
    """train nothing: evaluate every policy of <name>.csv again (policies/<name>/) and rewrite the csv / md / png"""


def run_seed(label: int, row: int) -> int:
    """The training seed of udr_hopper.py for this seed label and row index (see the module docstring)."""
    return int(np.random.SeedSequence(label, spawn_key=(2, row)).generate_state(1)[0])


def command(args: Args, domain: str, seed: int, scale: float | None, log_dir: str) -> list[str]:
    if scale in (None, args.mass_scale):
        row = ("source", "target", "udr").index(domain)
    else:
        row = 3 + args.mass_scales.index(scale)
    extra = ["--mass-scale", str(scale)] if scale is not None else []
    return [sys.executable, os.path.join(ROOT, "udr_hopper.py"), "--no-progress", "--train-domain", domain,
            "--seed", str(run_seed(seed, row)), "--total-timesteps", str(args.total_timesteps),
            "--eval-episodes", str(args.eval_episodes), "--log-dir", log_dir, *extra]


def bayrn_command(args: Args, seed: int, job_dir: str) -> list[str]:
    """bayrn_hopper.py for one seed; --resume the run already in job_dir if one stopped part-way.
    Exits (status 2) if that run was started with another budget or other --bayrn-args than this table's
    (a fresh start records them in job_dir/bayrn_args.json)."""
    started = glob.glob(os.path.join(job_dir, "*__*", "args.json"))
    flags = shlex.split(args.bayrn_args)
    if not started:
        if args.reuse_search:
            searched = glob.glob(os.path.join(args.runs_dir, args.reuse_search, "bayrn", f"seed{seed}", "*__*"))
            if len(searched) != 1:
                print(f"error: no search of seed {seed} under {args.runs_dir}/{args.reuse_search}/bayrn "
                      "(run that table first)", file=sys.stderr)
                sys.exit(2)
            flags += ["--search-from", searched[0]]
        os.makedirs(job_dir, exist_ok=True)
        with open(os.path.join(job_dir, "bayrn_args.json"), "w") as f:
            json.dump(shlex.split(args.bayrn_args), f)
        return [sys.executable, os.path.join(ROOT, "bayrn_hopper.py"), "--no-progress", "--seed", str(seed),
                "--inner-timesteps", str(args.total_timesteps), "--final-timesteps", str(args.total_timesteps),
                "--num-init", str(args.bayrn_init), "--iterations", str(args.bayrn_iterations),
                "--eval-episodes", str(args.eval_episodes), "--log-dir", job_dir, *flags]
    with open(started[0]) as f:
        saved = json.load(f)
    recorded = os.path.join(job_dir, "bayrn_args.json")
    saved["bayrn_args"] = []  # runs started before bayrn_args.json existed had none
    if os.path.exists(recorded):
        with open(recorded) as f:
            saved["bayrn_args"] = json.load(f)
    wanted = {"seed": seed, "num_init": args.bayrn_init, "iterations": args.bayrn_iterations,
              "eval_episodes": args.eval_episodes, "inner_timesteps": args.total_timesteps,
              "final_timesteps": args.total_timesteps, "bayrn_args": flags}
    wrong = {k: saved.get(k) for k, v in wanted.items() if saved.get(k) != v}
    if wrong:
        print(f"error: {os.path.dirname(started[0])} was started with {wrong}, this table needs {wanted}; "
              "move it away or match the flags", file=sys.stderr)
        sys.exit(2)
    return [sys.executable, os.path.join(ROOT, "bayrn_hopper.py"), "--no-progress", "--resume",
            os.path.dirname(started[0])]


def search_settings(args: Args) -> str:
    """The BayRn search a row comes from, as bayrn_hopper.py flags (the csv's bayrn_args column)."""
    return f"--num-init {args.bayrn_init} --iterations {args.bayrn_iterations} {args.bayrn_args}".strip()


def published_rows(args: Args) -> dict[tuple, dict]:
    """Rows of <name>.csv made earlier with this table's settings whose policy (and, for BayRn, search) is
    in the results directory, by (train domain, seed, mass scale). They are kept instead of trained
    again, so a table can grow over several sessions although benchmark/runs/ is not kept."""
    path = os.path.join(args.results_dir, f"{args.name}.csv")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        rows = [{k: parse(v) for k, v in r.items()} for r in csv.DictReader(f)]
    kept = {}
    for r in rows:
        key = (r["train_domain"], r["seed"], r["mass_scale"])
        same = (r.get("total_timesteps") == args.total_timesteps and r.get("eval_episodes") == args.eval_episodes
                and os.path.exists(policy_path(args, r["train_domain"], r["mass_scale"], r["seed"])))
        if r["train_domain"] == "bayrn":
            same = same and r.get("bayrn_args") == search_settings(args) and os.path.exists(
                os.path.join(args.results_dir, f"{args.name}-bayrn-seed{r['seed']}.json"))
        if same:
            kept[key] = r
    return kept


def train_rows(args: Args) -> list[dict]:
    """Run (or reuse) every run of the table; copy each final policy, and each BayRn search, to the
    results directory. Returns one row per run: the new ones and every published one (published_rows)."""
    # (train domain, seed, mass scale); the udr rows use --mass-scale, the sweep the first seed.
    keys = [(d, s, args.mass_scale if d == "udr" else None) for s in args.seeds for d in args.rows]
    if "udr" in args.rows:
        keys += [("udr", args.seeds[0], m) for m in args.mass_scales if m != args.mass_scale]
    published = published_rows(args)
    keys = [k for k in keys if k not in published]
    job_dirs = {k: os.path.join(args.runs_dir, args.name, label(k[0], k[2], args), f"seed{k[1]}") for k in keys}
    commands = {k: bayrn_command(args, k[1], job_dirs[k]) if k[0] == "bayrn" else command(args, *k, job_dirs[k])
                for k in keys}
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        # Longest first (a BayRn search is ~10 runs), so that short runs fill the other core at the end.
        longest_first = sorted(keys, key=lambda k: k[0] != "bayrn")
        futures = {k: pool.submit(run_job, commands[k], job_dirs[k]) for k in longest_first}
        jobs = {k: f.result() for k, f in futures.items()}
    failed = [str(k) for k, job in jobs.items() if job["returncode"] != 0]
    if failed:
        sys.exit(f"error: runs failed: {', '.join(failed)} (see output.log in {args.runs_dir}/{args.name})")

    rows = [r for k, r in published.items() if k not in job_dirs]
    if rows:
        print(f"kept {len(rows)} published rows of {args.name}.csv (their settings match this table's)")
    os.makedirs(os.path.join(args.results_dir, "policies", args.name), exist_ok=True)
    for (domain, seed, scale), job_dir in job_dirs.items():
        (path,) = glob.glob(os.path.join(job_dir, "*__*", "eval.json"))
        run_dir = os.path.dirname(path)
        with open(path) as f:
            result = json.load(f)
        shutil.copy(os.path.join(run_dir, "model.pt"), policy_path(args, domain, scale, seed))
        if domain == "bayrn":  # keep each search beside the table: its candidates and its result
            for source, ext in (("bayrn_history.jsonl", "jsonl"), ("eval.json", "json")):
                shutil.copy(os.path.join(run_dir, source),
                            os.path.join(args.results_dir, f"{args.name}-bayrn-seed{seed}.{ext}"))
        cmd = commands[domain, seed, scale]
        rows.append({"train_domain": domain, "mass_scale": scale, "seed": seed,
                     # the --seed of the run that trained the final policy (udr_hopper.py --checkpoint --seed
                     # with it replays the evaluation below)
                     "train_seed": result["final_seed"] if domain == "bayrn" else int(cmd[cmd.index("--seed") + 1]),
                     "total_timesteps": args.total_timesteps,
                     "bayrn_args": search_settings(args) if domain == "bayrn" else None,
                     "simulator_steps": result.get("simulator_steps", result.get("global_step")),
                     "train_return_last100": round(result["train_return_last100"], 1),
                     "source_mean": round(result["source"]["mean"], 1), "source_std": round(result["source"]["std"], 1),
                     "target_mean": round(result["target"]["mean"], 1), "target_std": round(result["target"]["std"], 1),
                     "eval_episodes": result["target"]["episodes"],
                     # BayRn: the target episodes its loop spent choosing phi*
                     "loop_target_episodes": result.get("target_episodes_used", 0),
                     # a BayRn job may have resumed a search: its own clock counts every candidate once
                     "wall_seconds": round(result["loop_seconds"] + result["final_seconds"] if domain == "bayrn"
                                           else jobs[domain, seed, scale]["wall_seconds"], 1),
                     "commit": jobs[domain, seed, scale].get("commit", "unknown")})
    order = ("source", "target", "udr", "bayrn")
    return sorted(rows, key=lambda r: (order.index(r["train_domain"]), r["seed"], r["mass_scale"] or 0))


def label(domain: str, scale: float | None, args: Args) -> str:
    """A run's name in runs/ and policies/: the domain, and the scale of a sweep run."""
    return domain + ("" if scale in (None, args.mass_scale) else f"-scale{scale}")


def policy_path(args: Args, domain: str, scale: float | None, seed: int) -> str:
    return os.path.join(args.results_dir, "policies", args.name, f"{label(domain, scale, args)}-seed{seed}.pt")


def reevaluate(args: Args) -> list[dict]:
    """Evaluate every published policy of <name>.csv again with `udr_hopper.py --checkpoint` on the
    run's own episode seeds, and return the rows with the new evaluation columns."""
    with open(os.path.join(args.results_dir, f"{args.name}.csv")) as f:
        rows = [{k: parse(v) for k, v in r.items()} for r in csv.DictReader(f)]
    scratch = tempfile.mkdtemp(prefix="reevaluate-")

    def again(row: dict) -> dict:
        log_dir = os.path.join(scratch, f"{label(row['train_domain'], row['mass_scale'], args)}-seed{row['seed']}")
        subprocess.run([sys.executable, os.path.join(ROOT, "udr_hopper.py"), "--no-progress", "--checkpoint",
                        policy_path(args, row["train_domain"], row["mass_scale"], row["seed"]), "--seed",
                        str(row["train_seed"]), "--eval-episodes", str(args.eval_episodes), "--log-dir", log_dir],
                       check=True, capture_output=True)
        (path,) = glob.glob(os.path.join(log_dir, "*", "eval.json"))
        with open(path) as f:
            return json.load(f)

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(again, rows))
    for row, result in zip(rows, results):
        print(f"{label(row['train_domain'], row['mass_scale'], args)} seed {row['seed']}: "
              f"target {row['target_mean']} -> "
              f"{result['target']['mean']:.1f}, source {row['source_mean']} -> {result['source']['mean']:.1f}")
        for domain in ("source", "target"):
            row[f"{domain}_mean"], row[f"{domain}_std"] = (round(result[domain][k], 1) for k in ("mean", "std"))
        row["eval_episodes"] = result["target"]["episodes"]
        if row["train_domain"] == "bayrn":
            path = os.path.join(args.results_dir, f"{args.name}-bayrn-seed{row['seed']}.json")
            with open(path) as f:
                search = json.load(f)
            with open(path, "w") as f:
                json.dump(search | {d: result[d] for d in ("source", "target")}, f, indent=2)
    shutil.rmtree(scratch)
    return rows


def parse(value: str):
    """A csv cell back to None, int, float or str."""
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return None if value == "" else value


def main(args: Args) -> None:
    rows = reevaluate(args) if args.reevaluate else train_rows(args)
    with open(os.path.join(args.results_dir, f"{args.name}.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)), restval="")
        writer.writeheader()
        writer.writerows(rows)
    domains = [d for d in ("source", "target", "udr", "bayrn") if any(r["train_domain"] == d for r in rows)]
    main_rows = [r for r in rows if r["train_domain"] != "udr" or r["mass_scale"] == args.mass_scale]
    table = {(d, e): [r[f"{e}_mean"] for r in main_rows if r["train_domain"] == d]
             for d in domains for e in ("source", "target")}
    searches = {}
    for r in rows:
        if r["train_domain"] == "bayrn":
            stem = os.path.join(args.results_dir, f"{args.name}-bayrn-seed{r['seed']}")
            with open(stem + ".jsonl") as f, open(stem + ".json") as g:
                searches[r["seed"]] = ([json.loads(line) for line in f], json.load(g))
            plot_search(*searches[r["seed"]], stem + ".png")
    plot(table, domains, args)
    write_summary(table, domains, rows, searches, args)


def plot(table: dict, domains: list[str], args: Args) -> None:
    """Grouped bars: one group per training domain, one bar per evaluation domain, std over seeds."""
    names = {"source": "trained on source", "udr": f"UDR source (±{args.mass_scale:.0%})",
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
           title=f"Hopper transfer, PPO {args.total_timesteps // 1000}k steps")
    ax.legend()
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


def write_summary(table: dict, domains: list[str], rows: list[dict], searches: dict, args: Args) -> None:
    commits = sorted({str(r["commit"]) for r in rows})
    made = (f"Made by `python benchmark/transfer.py {shlex.join(sys.argv[1:])}` (and, for rows it kept, the "
            f"earlier invocations of this table with the same settings) from runs at commit {', '.join(commits)}, on "
            f"{datetime.date.today()}, {os.cpu_count()} cores ({platform.processor() or platform.machine()}), "
            f"{args.jobs} runs at a time.")
    seeds = sorted({r["seed"] for r in rows})
    lines = [f"# Hopper source -> target transfer (PPO), {args.total_timesteps} steps per policy, seeds {seeds}",
             "", made, "", "| train -> test | deterministic return (mean ± std over seeds) | per seed |",
             "|---|---|---|"]
    for d, e in (("source", "source"), ("source", "target"), ("target", "target"), ("target", "source"),
                 ("udr", "source"), ("udr", "target"), ("bayrn", "source"), ("bayrn", "target")):
        if (d, e) in table:
            lines.append(f"| {LABELS[d]} -> {LABELS[e]} | {mean_std(table[d, e])} | "
                         f"{', '.join(f'{v:.0f}' for v in table[d, e])} |")
    target = {d: np.mean(table[d, "target"]) for d in domains}
    ratios = [f"{LABELS[a]}->T / {LABELS[b]}->T = {target[a] / target[b]:.2f}"
              for a, b in (("udr", "source"), ("udr", "target"), ("bayrn", "udr"), ("bayrn", "target"))
              if a in target and b in target]
    if ratios:
        lines += ["", f"UDR: --mass-scale {args.mass_scale}. " + "; ".join(ratios) + "."]
    if searches:
        bayrn = [r for r in rows if r["train_domain"] == "bayrn"]
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
    sweep = sorted((r for r in rows if r["train_domain"] == "udr" and r["seed"] == args.seeds[0]),
                   key=lambda r: r["mass_scale"])
    if len(sweep) > 1:
        lines += ["", f"## --mass-scale sweep, seed {args.seeds[0]}", "",
                  "| mass scale | UDR -> S | UDR -> T | last-100 training return |", "|---|---|---|---|"]
        lines += [f"| ±{r['mass_scale']:.0%} | {r['source_mean']:.0f} ± {r['source_std']:.0f} | "
                  f"{r['target_mean']:.0f} ± {r['target_std']:.0f} | {r['train_return_last100']:.0f} |" for r in sweep]
    lines += ["", (f"Each run: {args.eval_episodes} deterministic episodes per domain, frozen observation "
                   "normalization, evaluation seeds disjoint from training; the sweep rows show mean ± std over "
                   "episodes of one run. Per-run numbers: the .csv beside this file; final policies: "
                   f"policies/{args.name}/.")]
    with open(os.path.join(args.results_dir, f"{args.name}.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(tyro.cli(Args))
