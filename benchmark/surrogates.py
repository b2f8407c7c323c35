"""The PPO paper's comparison of surrogate objectives (Schulman et al. 2017, arXiv:1707.06347, Table 1),
scaled to this machine.

Runs ppo_continuous.py with each --surrogate setting on each environment and seed, scores a run by the
mean return of its last 100 training episodes (the paper's score), and normalizes the scores of each
environment as the paper does: 0 = a uniformly random policy, 1 = the best setting's mean score there.
A setting's number is its normalized score averaged over environments and seeds. Writes
<results-dir>/<name>.{csv,md,png}, rewritten as each run finishes, beside the paper's numbers.

The paper: 7 MuJoCo tasks (v1), 1M steps, 3 seeds, 21 runs per setting, its own hyperparameters; here
by default 3 tasks (v4), 500k steps, 3 seeds, ppo_continuous.py's defaults otherwise. Runs go through
benchmark/run.py's job runner: finished runs are reused, so an interrupted comparison resumes; a run
already in <results-dir>/<name>.csv with the same flags and steps is kept and not run again, so the
comparison also resumes from a fresh clone (benchmark/runs is not committed).

    python benchmark/surrogates.py
    python benchmark/surrogates.py --env-ids Hopper-v4 --seeds 1 --total-timesteps 100000 --name quick
"""

from __future__ import annotations

import csv
import datetime
import os
import platform
import shlex
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import gymnasium as gym
import matplotlib
import numpy as np
import tyro

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from run import ROOT, run_job, training_curve

# setting name -> ppo_continuous.py flags, in the paper's order, and the paper's normalized score
# (Table 1; its adaptive-KL d_targ 0.003 and fixed-KL beta 0.3 and 10 rows are not run here). The two
# last rows are not the paper's (score None): they take away our two step bounds the paper's setup
# lacks (gradient-norm clipping, then also per-minibatch advantage normalization) from the unclipped
# surrogate, to test whether those are why it does not collapse here; they do not set the scale.
SETTINGS = {
    "no clipping or penalty": (["--surrogate", "none"], -0.39),
    "clipping, epsilon = 0.1": (["--surrogate", "clip", "--clip-coef", "0.1"], 0.76),
    "clipping, epsilon = 0.2": (["--surrogate", "clip", "--clip-coef", "0.2"], 0.82),
    "clipping, epsilon = 0.3": (["--surrogate", "clip", "--clip-coef", "0.3"], 0.70),
    "adaptive KL, d_targ = 0.01": (["--surrogate", "adaptive-kl", "--kl-target", "0.01"], 0.74),
    "adaptive KL, d_targ = 0.03": (["--surrogate", "adaptive-kl", "--kl-target", "0.03"], 0.71),
    "fixed KL, beta = 1": (["--surrogate", "fixed-kl", "--kl-beta", "1"], 0.71),
    "fixed KL, beta = 3": (["--surrogate", "fixed-kl", "--kl-beta", "3"], 0.72),
    "none, no grad-norm clipping": (["--surrogate", "none", "--max-grad-norm", "1e9"], None),
    "none, no grad-norm clipping or adv. normalization": (
        ["--surrogate", "none", "--max-grad-norm", "1e9", "--no-norm-adv"], None),
}


@dataclass
class Args:
    env_ids: list[str] = field(default_factory=lambda: ["Hopper-v4", "HalfCheetah-v4", "InvertedDoublePendulum-v4"])
    """gymnasium ids"""
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    """seeds, one run per setting and environment each"""
    total_timesteps: int = 500_000
    """training steps per run"""
    random_episodes: int = 100
    """episodes of the uniformly random policy per environment (the normalization's 0)"""
    jobs: int = 2
    """runs at once (the machine has 2 cores)"""
    name: str = "surrogates"
    """results file stem"""
    runs_dir: str = os.path.join(ROOT, "benchmark", "runs")
    """where each run's logs go (not committed)"""
    results_dir: str = os.path.join(ROOT, "benchmark", "results", "ppo")
    """where the csv / md / png go (committed)"""


def random_policy_return(env_id: str, episodes: int) -> float:
    """Mean undiscounted return of uniformly random actions over `episodes` episodes (seeds 0, 1, ...)."""
    env = gym.make(env_id)
    env.action_space.seed(0)
    returns = []
    for episode in range(episodes):
        env.reset(seed=episode)
        total, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            total, done = total + float(reward), terminated or truncated
        returns.append(total)
    env.close()
    return float(np.mean(returns))


def normalized(rows: list[dict], random: dict[str, float]) -> dict[tuple[str, str], list[float]]:
    """{(setting, env id): [normalized score of each seed]}: (score - random) / (best - random), where
    best is the highest mean score over seeds of any of the paper's settings on that environment (the
    paper's scale; the ablation rows, without a paper score, are scored on it but do not set it)."""
    means = {}
    for r in rows:
        means.setdefault((r["setting"], r["env_id"]), []).append(r["last100"])
    best = {}
    for (s, e), v in means.items():
        if SETTINGS[s][1] is not None:
            best[e] = max(best.get(e, -np.inf), float(np.mean(v)))
    return {(s, e): [(x - random[e]) / (best[e] - random[e]) for x in v] for (s, e), v in means.items()}


def main(args: Args) -> None:
    for env_id in args.env_ids:
        if env_id not in gym.registry:
            print(f"error: unknown env id {env_id!r} (see gymnasium.registry for the ids installed)", file=sys.stderr)
            sys.exit(2)
    random = {e: random_policy_return(e, args.random_episodes) for e in args.env_ids}
    rows = recorded_rows(args)
    done = {(r["setting"], r["env_id"], r["seed"]) for r in rows}
    keys = [(s, e, seed) for e in args.env_ids for seed in args.seeds for s in SETTINGS if (s, e, seed) not in done]
    lock, failed = threading.Lock(), []

    def one(key: tuple) -> None:
        setting, env_id, seed = key
        job_dir = os.path.join(args.runs_dir, args.name, env_id, setting.replace(" ", "").replace(",", "-"),
                               f"seed{seed}")
        command = [sys.executable, os.path.join(ROOT, "ppo_continuous.py"), "--no-progress", "--env-id", env_id,
                   "--seed", str(seed), "--total-timesteps", str(args.total_timesteps), "--eval-freq", "0",
                   "--eval-episodes", "1", "--log-dir", job_dir, *SETTINGS[setting][0]]
        job = run_job(command, job_dir)
        if job["returncode"] != 0:
            failed.append(f"{setting} {env_id} seed {seed}")
            return
        _, returns = training_curve("ours", job_dir)
        with lock:
            rows.append({"setting": setting, "flags": shlex.join(SETTINGS[setting][0]), "env_id": env_id,
                         "seed": seed, "total_timesteps": args.total_timesteps,
                         "last100": round(float(np.mean(returns[-100:])), 1), "random_policy": round(random[env_id], 1),
                         "wall_seconds": round(job["wall_seconds"], 1), "commit": job["commit"]})
            write(rows, random, args)

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        list(pool.map(one, keys))
    if failed:
        sys.exit(f"error: runs failed: {', '.join(failed)} (see output.log in {args.runs_dir}/{args.name})")
    with open(os.path.join(args.results_dir, f"{args.name}.md")) as f:
        print(f.read())


def recorded_rows(args: Args) -> list[dict]:
    """The rows of <results-dir>/<name>.csv this comparison would run again (same setting flags,
    environment in --env-ids, seed in --seeds, same --total-timesteps), typed as main() writes them."""
    path = os.path.join(args.results_dir, f"{args.name}.csv")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        rows = [{**r, "seed": int(r["seed"]), "total_timesteps": int(r["total_timesteps"]),
                 "last100": float(r["last100"]), "random_policy": float(r["random_policy"]),
                 "wall_seconds": float(r["wall_seconds"])} for r in csv.DictReader(f)]
    return [r for r in rows if r["setting"] in SETTINGS and r["flags"] == shlex.join(SETTINGS[r["setting"]][0])
            and r["env_id"] in args.env_ids and r["seed"] in args.seeds
            and r["total_timesteps"] == args.total_timesteps]


def write(rows: list[dict], random: dict[str, float], args: Args) -> None:
    """<name>.csv (a row per run), .md (the table beside the paper's) and .png (bars, ours and the paper's)."""
    rows = sorted(rows, key=lambda r: (list(SETTINGS).index(r["setting"]), args.env_ids.index(r["env_id"]), r["seed"]))
    os.makedirs(args.results_dir, exist_ok=True)
    with open(os.path.join(args.results_dir, f"{args.name}.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    scores = normalized(rows, random)
    settings = [s for s in SETTINGS if any(k[0] == s for k in scores)]
    overall = {s: np.mean([x for (s2, _), v in scores.items() if s2 == s for x in v]) for s in settings}
    done = len(rows) == len(SETTINGS) * len(args.env_ids) * len(args.seeds)
    commits = sorted({r["commit"] for r in rows})
    lines = [f"# PPO surrogate objectives, {args.total_timesteps} steps, seeds {args.seeds}", "",
             (f"Made by `python benchmark/surrogates.py {shlex.join(sys.argv[1:])}` from runs at commit "
              f"{', '.join(commits)}, on {datetime.date.today()}, {os.cpu_count()} cores "
              f"({platform.processor() or platform.machine()}), {args.jobs} runs at a time."
              + ("" if done else f" Partial: {len(rows)} of {len(SETTINGS) * len(args.env_ids) * len(args.seeds)} "
                 "runs so far, so the normalization's best setting may still change.")), "",
             "| setting | " + " | ".join(args.env_ids) + " | ours, normalized (all runs) | paper (Table 1) |",
             "|---|" + "---|" * (len(args.env_ids) + 2)]
    for s in settings:
        cells = [f"{np.mean(scores[s, e]):.2f} ({', '.join(f'{x:.2f}' for x in scores[s, e])})"
                 if (s, e) in scores else "-" for e in args.env_ids]
        paper = "-" if SETTINGS[s][1] is None else f"{SETTINGS[s][1]:.2f}"
        lines.append(f"| {s} | " + " | ".join(cells) + f" | {overall[s]:.2f} | {paper} |")
    raw = {e: [r["last100"] for r in rows if r["env_id"] == e and SETTINGS[r["setting"]][1] is not None]
           for e in args.env_ids}
    lines += ["", ("Each cell: the normalized score, mean (per seed); a run's score is the mean return of its "
                   "last 100 training episodes; 0 = the random policy ("
                   + ", ".join(f"{e} {random[e]:.1f}" for e in args.env_ids) + "), 1 = the best setting's mean "
                   "on that environment (highest raw score: "
                   + ", ".join(f"{e} {max(v):.0f}" for e, v in raw.items() if v) + "). The paper: 7 tasks, "
                   "1M steps, 3 seeds. Rows with no paper score are our ablations, scored on the same scale. "
                   "Per-run numbers: the .csv beside this file.")]
    with open(os.path.join(args.results_dir, f"{args.name}.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(9, 4))
    x = np.arange(len(settings))
    ax.bar(x - 0.2, [overall[s] for s in settings], 0.4, label=f"ours ({len(args.env_ids)} tasks)")
    ax.bar(x + 0.2, [np.nan if SETTINGS[s][1] is None else SETTINGS[s][1] for s in settings], 0.4,
           label="PPO paper (7 tasks)")
    ax.set_xticks(x, [s.replace(", ", "\n") for s in settings], fontsize=7)
    ax.set(ylabel="normalized score (random 0, best 1)", title="PPO surrogate objectives")
    ax.axhline(0, color="gray", lw=0.8)
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(args.results_dir, f"{args.name}.png"), dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main(tyro.cli(Args))
