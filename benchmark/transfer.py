"""The source -> target transfer tables (the seed study's Tables IV and V) of every learner.

For each learner of --algos and each seed, trains a policy on the source Hopper, on the target (the
oracle) and on the UDR source, every policy with the same budget, and evaluates each final policy
on 100 deterministic episodes on source and on target. The learners: udr_hopper.py (PPO, with
bayrn_hopper.py for the BayRn rows), or reinforce.py, a2c.py, ppo_continuous.py, trpo.py with their
default settings on the CustomHopper-* ids (evaluated with `<script> --checkpoint`). Writes
<results-dir>/<name>.{csv,md,png}: rows S->S, S->T, T->T, T->S, UDR->S, UDR->T, BayRn->S, BayRn->T
(mean +- std over seeds), and a grouped bar chart per learner; every final policy is copied to
<results-dir>/policies/<name>/ (weights only). The table is rewritten as each run finishes.

UDR scale: --mass-scale, or, with --tune-seeds, each learner's scale chosen among --mass-scales by
its mean target return over those seeds (disjoint from --seeds); the tuning runs are rows of the csv
(purpose "tune") and the target episodes they spent are counted (loop_target_episodes).

Resuming: runs go through benchmark/run.py's job runner, so finished runs are reused and a BayRn run
that stopped part-way continues with bayrn_hopper.py --resume. benchmark/runs/ is not committed, so a
table also keeps the rows it published in <name>.csv with the same settings (budget, evaluation
episodes, BayRn search) whose policies are in results/: --seeds 1 2 today and --seeds 1 2 3 tomorrow
trains only seed 3.

Seeds: the table's seed s is a label. No two runs share a training seed: a run gets --seed =
numpy SeedSequence(s, spawn_key=key).generate_state(1)[0], key (2, row) for udr_hopper.py and
(3, learner, row) for the others (row 0 source, 1 target, 2 udr, 3 + k the k-th --mass-scales
tuning run); bayrn_hopper.py --seed s draws its own from spawn keys (0, i) and (1,).

    python benchmark/transfer.py --total-timesteps 500000 --seeds 1 2 3
    python benchmark/transfer.py --rows bayrn --seeds 11 12 "--bayrn-args=--common-seed" --name bayrn-crn
    python benchmark/transfer.py --algos reinforce a2c ppo trpo --rows source target udr \
        --total-timesteps 1000000 --tune-seeds 101 --name transfer-learners
"""

from __future__ import annotations

import contextlib
import csv
import glob
import heapq
import itertools
import json
import os
import shlex
import shutil
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import tyro
from run import ROOT, SCRIPTS, runner
from transfer_report import chosen_scale, write_table

Row = Literal["source", "target", "udr", "bayrn"]
Algo = Literal["udr_hopper", "reinforce", "a2c", "ppo", "trpo"]
ALGOS = ("udr_hopper", "reinforce", "a2c", "ppo", "trpo")
UDR_ID_PERCENTS = (5, 10, 20, 30, 50)  # hopper_envs registers CustomHopper-udr<p>-v0 for these


@dataclass
class Args:
    algos: list[Algo] = field(default_factory=lambda: ["udr_hopper"])
    """learners: udr_hopper (PPO; with the BayRn rows), or reinforce a2c ppo trpo (their scripts, default
    settings, on the CustomHopper-* ids; no BayRn rows)"""
    total_timesteps: int = 500_000
    """training steps per run (every row the same; BayRn: per candidate and for its final policy)"""
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    """seed labels of the rows (each run's training seed is derived from its label, see above)"""
    rows: list[Row] = field(default_factory=lambda: ["source", "target", "udr", "bayrn"])
    """which training domains to run"""
    mass_scale: float = 0.1
    """UDR scale of the udr rows without --tune-seeds: masses U((1 -+ scale) x source) (hopper_envs' default)"""
    mass_scales: list[float] = field(default_factory=lambda: [0.1, 0.3, 0.5])
    """with --tune-seeds: the UDR scales tried for each learner"""
    tune_seeds: list[int] = field(default_factory=list)
    """seed labels (not in --seeds) on which each learner's UDR scale is chosen; none: --mass-scale"""
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
    ray_address: str | None = None
    """run every job as a Ray task on this cluster ("auto", "host:port", "ray://host:port"), --jobs at once"""
    reevaluate: bool = False
    """train nothing: evaluate every policy of <name>.csv again (policies/<name>/) and rewrite the csv / md / png"""


def run_seed(label: int, algo: str, row: int) -> int:
    """The training seed of a run for this seed label, learner and row index (see the module docstring)."""
    key = (2, row) if algo == "udr_hopper" else (3, ALGOS.index(algo), row)
    return int(np.random.SeedSequence(label, spawn_key=key).generate_state(1)[0])


def command(args: Args, key: tuple, log_dir: str) -> list[str]:
    """The training command of a source / target / udr run; key = (algo, domain, seed, scale)."""
    algo, domain, seed, scale = key
    tune = seed in args.tune_seeds
    row = 3 + args.mass_scales.index(scale) if tune else ("source", "target", "udr").index(domain)
    common = ["--no-progress", "--seed", str(run_seed(seed, algo, row)), "--total-timesteps",
              str(args.total_timesteps), "--log-dir", log_dir]
    if algo == "udr_hopper":
        extra = ["--mass-scale", str(scale)] if domain == "udr" else []
        return [sys.executable, os.path.join(ROOT, "udr_hopper.py"), *common, "--train-domain", domain,
                "--eval-episodes", str(args.eval_episodes), *extra]
    # the learner's own final evaluation is on its training domain: one episode; evaluate() does both
    return [sys.executable, os.path.join(ROOT, SCRIPTS[algo]), *common, "--env-id", env_id(domain, scale),
            "--eval-episodes", "1"]


def env_id(domain: str, scale: float | None) -> str:
    """The --env-id of a learner script: hopper_envs:CustomHopper-<domain>-v0, udr<percent> for a scale."""
    percent = f"{round(100 * scale)}" if domain == "udr" else ""
    return f"hopper_envs:CustomHopper-{domain}{percent}-v0"


def evaluate(args: Args, algo: str, policy: str, train_seed: int, out_dir: str) -> dict:
    """Deterministic evaluation of a published policy on source and target, {domain: {mean, std, episodes}},
    by its own script's --checkpoint with the run's --seed (so the episode seeds are the run's own)."""
    common = ["--no-progress", "--checkpoint", policy, "--seed", str(train_seed), "--eval-episodes",
              str(args.eval_episodes)]
    if algo == "udr_hopper":
        job_dir = os.path.join(out_dir, "eval")
        run(args, [sys.executable, os.path.join(ROOT, "udr_hopper.py"), *common, "--log-dir", job_dir], job_dir, 0)
        result = read_eval(job_dir)
        return {d: result[d] for d in ("source", "target")}
    results = {}
    for domain in ("source", "target"):
        job_dir = os.path.join(out_dir, f"eval-{domain}")
        run(args, [sys.executable, os.path.join(ROOT, SCRIPTS[algo]), *common, "--env-id", env_id(domain, None),
                   "--log-dir", job_dir], job_dir, 0)
        results[domain] = read_eval(job_dir)
    return results


class Slots:
    """At most n jobs at once; among the waiting ones the lowest priority number goes first, then the
    earliest, so an evaluation (0) overtakes the trainings queued before it (1) and rows land sooner."""

    def __init__(self, n: int):
        self.free, self.waiting, self.tickets = n, [], itertools.count()
        self.changed = threading.Condition()

    @contextlib.contextmanager
    def take(self, priority: int):
        with self.changed:
            ticket = (priority, next(self.tickets))
            heapq.heappush(self.waiting, ticket)
            self.changed.wait_for(lambda: self.free > 0 and self.waiting[0] == ticket)
            heapq.heappop(self.waiting)
            self.free -= 1
            self.changed.notify_all()  # the next in line may fit too
        try:
            yield
        finally:
            with self.changed:
                self.free += 1
                self.changed.notify_all()


_slots: dict[int, Slots] = {}


def run(args: Args, cmd: list[str], job_dir: str, priority: int = 1, resume: bool = False) -> dict:
    """run_job with at most --jobs commands at once, evaluations (priority 0) before trainings (1);
    raises RuntimeError if the command failed."""
    with _slots.setdefault(args.jobs, Slots(args.jobs)).take(priority):
        job = runner(args.ray_address)(cmd, job_dir, resume)
    if job["returncode"] != 0:
        raise RuntimeError(f"{job_dir} exited with {job['returncode']} (see its output.log)")
    return job


def read_eval(job_dir: str) -> dict:
    (path,) = glob.glob(os.path.join(job_dir, "*__*", "eval.json"))
    with open(path) as f:
        return json.load(f)


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


def read_rows(path: str) -> list[dict]:
    """The rows of a table's csv, cells parsed (text columns stay text: commit 870e094 is not 8.7e96);
    rows from before the algo / purpose columns are udr_hopper's."""
    with open(path) as f:
        rows = [{k: v if k in TEXT_COLUMNS else parse(v) for k, v in r.items()} for r in csv.DictReader(f)]
    return [r | {"algo": r.get("algo") or "udr_hopper", "purpose": r.get("purpose") or "report"} for r in rows]


def key_of(row: dict) -> tuple:
    return row["algo"], row["train_domain"], row["seed"], row["mass_scale"]


def published_rows(args: Args) -> dict[tuple, dict]:
    """Rows of <name>.csv made earlier with this table's settings whose policy (and, for BayRn, search) is
    in the results directory, by (algo, train domain, seed, mass scale). They are kept instead of trained
    again, so a table can grow over several sessions although benchmark/runs/ is not kept."""
    path = os.path.join(args.results_dir, f"{args.name}.csv")
    kept = {}
    for r in read_rows(path) if os.path.exists(path) else []:
        same = (r.get("total_timesteps") == args.total_timesteps and r.get("eval_episodes") == args.eval_episodes
                and os.path.exists(policy_path(args, r)))
        if r["train_domain"] == "bayrn":
            same = same and r.get("bayrn_args") == search_settings(args) and os.path.exists(
                os.path.join(args.results_dir, f"{args.name}-bayrn-seed{r['seed']}.json"))
        if same:
            kept[key_of(r)] = r
    return kept


def train_rows(args: Args, publish) -> list[dict]:
    """Run (or reuse) every run of the table: tuning runs first, then each learner's udr rows at its chosen
    scale; copy each final policy, and each BayRn search, to the results directory, and call publish(rows)
    with every row so far each time a run finishes. Returns one row per run, new and published."""
    published = published_rows(args)
    rows = list(published.values())
    if rows:
        print(f"kept {len(rows)} published rows of {args.name}.csv (their settings match this table's)")
    lock = threading.Lock()

    def row_of(key: tuple) -> dict:
        if key in published:
            return published[key]
        row = train_one(args, key)
        with lock:
            rows.append(row)
            publish(sort_rows(rows))
        return row

    algos, failed = [a for a in ALGOS if a in args.algos], []
    bayrn = [("udr_hopper", "bayrn", s, None) for s in args.seeds if "bayrn" in args.rows and "udr_hopper" in algos]
    tuning = {a: [(a, "udr", t, m) for t in args.tune_seeds for m in args.mass_scales]
              for a in algos if "udr" in args.rows}
    fixed = [(a, d, s, None) for a in algos for d in ("source", "target") if d in args.rows for s in args.seeds]
    with ThreadPoolExecutor(max_workers=64) as pool:  # each task waits for a slot of --jobs (run())
        # Longest first (a BayRn search is ~10 runs), so that short runs fill the other core at the end.
        futures = {k: pool.submit(row_of, k) for k in [*bayrn, *(k for t in tuning.values() for k in t), *fixed]}

        def udr_rows(algo: str) -> list:
            scale = args.mass_scale
            if args.tune_seeds:
                tuned = [futures[k].result() for k in tuning[algo]]  # raises if a tuning run failed
                scale = chosen_scale(tuned)
            return [pool.submit(row_of, (algo, "udr", seed, scale)) for seed in args.seeds]

        waits = [pool.submit(udr_rows, a) for a in tuning]
        for f in [*futures.values(), *waits]:
            try:
                f.result()
            except RuntimeError as e:
                failed.append(str(e))
        for f in [g for w in waits if not w.exception() for g in w.result()]:
            try:
                f.result()
            except RuntimeError as e:
                failed.append(str(e))
    if failed:
        sys.exit("error: runs failed:\n" + "\n".join(sorted(set(failed))))
    return sort_rows(rows)


def train_one(args: Args, key: tuple) -> dict:
    """Train one run of the table (or reuse its finished job), evaluate and publish its policy; its csv row."""
    algo, domain, seed, scale = key
    tune = seed in args.tune_seeds
    job_dir = os.path.join(args.runs_dir, args.name, label(algo, domain, scale, tune), f"seed{seed}")
    cmd = bayrn_command(args, seed, job_dir) if domain == "bayrn" else command(args, key, job_dir)
    job = run(args, cmd, job_dir, resume=domain == "bayrn")  # bayrn_command continues a stopped search
    result = read_eval(job_dir)
    row = {"algo": algo, "train_domain": domain, "mass_scale": scale, "seed": seed,
           "purpose": "tune" if tune else "report"}
    path = policy_path(args, row)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    shutil.copy(os.path.join(glob.glob(os.path.join(job_dir, "*__*"))[0], "model.pt"), path)
    # the --seed of the run that trained the final policy (its --checkpoint --seed replays the evaluation)
    train_seed = result["final_seed"] if domain == "bayrn" else int(cmd[cmd.index("--seed") + 1])
    evaluated = result if algo == "udr_hopper" else evaluate(args, algo, path, train_seed, job_dir)
    if domain == "bayrn":  # keep each search beside the table: its candidates and its result
        (run_dir,) = glob.glob(os.path.join(job_dir, "*__*"))
        for source, ext in (("bayrn_history.jsonl", "jsonl"), ("eval.json", "json")):
            shutil.copy(os.path.join(run_dir, source),
                        os.path.join(args.results_dir, f"{args.name}-bayrn-seed{seed}.{ext}"))
    return row | {
        "train_seed": train_seed, "total_timesteps": args.total_timesteps,
        "bayrn_args": search_settings(args) if domain == "bayrn" else None,
        "simulator_steps": result.get("simulator_steps", result.get("global_step")),
        "train_return_last100": round(result["train_return_last100"], 1),
        "source_mean": round(evaluated["source"]["mean"], 1), "source_std": round(evaluated["source"]["std"], 1),
        "target_mean": round(evaluated["target"]["mean"], 1), "target_std": round(evaluated["target"]["std"], 1),
        "eval_episodes": evaluated["target"]["episodes"],
        # target episodes spent choosing the randomization: BayRn's loop, or a UDR tuning run's evaluation
        "loop_target_episodes": result.get("target_episodes_used", evaluated["target"]["episodes"]
                                           if row["purpose"] == "tune" else 0),
        # a BayRn job may have resumed a search: its own clock counts every candidate once
        "wall_seconds": round(result["loop_seconds"] + result["final_seconds"] if domain == "bayrn"
                              else job["wall_seconds"], 1),
        "commit": job.get("commit", "unknown")}


def sort_rows(rows: list[dict]) -> list[dict]:
    order = ("source", "target", "udr", "bayrn")
    return sorted(rows, key=lambda r: (ALGOS.index(r["algo"]), r.get("purpose") == "tune",
                                       order.index(r["train_domain"]), r["seed"], r["mass_scale"] or 0))


def label(algo: str, domain: str, scale: float | None, tune: bool) -> str:
    """A run's name in runs/ and policies/: the learner (but udr_hopper), the domain, a tuning run's scale."""
    return ("" if algo == "udr_hopper" else f"{algo}-") + domain + (f"-scale{scale}" if tune else "")


def policy_path(args: Args, row: dict) -> str:
    name = label(row["algo"], row["train_domain"], row["mass_scale"], row.get("purpose") == "tune")
    return os.path.join(args.results_dir, "policies", args.name, f"{name}-seed{row['seed']}.pt")


def reevaluate(args: Args) -> list[dict]:
    """Evaluate every published policy of <name>.csv again with its script's --checkpoint on the run's
    own episode seeds, and return the rows with the new evaluation columns."""
    rows = read_rows(os.path.join(args.results_dir, f"{args.name}.csv"))
    scratch = tempfile.mkdtemp(prefix="reevaluate-")

    def again(row: dict) -> dict:
        out = os.path.join(scratch, f"{label(row['algo'], row['train_domain'], row['mass_scale'], False)}"
                                    f"-{row['mass_scale']}-seed{row['seed']}")
        return evaluate(args, row["algo"], policy_path(args, row), row["train_seed"], out)

    with ThreadPoolExecutor(max_workers=len(rows)) as pool:
        results = list(pool.map(again, rows))
    for row, result in zip(rows, results):
        print(f"{row['algo']} {row['train_domain']} {row['mass_scale'] or ''} seed {row['seed']}: target "
              f"{row['target_mean']} -> {result['target']['mean']:.1f}, source {row['source_mean']} -> "
              f"{result['source']['mean']:.1f}")
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


TEXT_COLUMNS = ("algo", "train_domain", "purpose", "bayrn_args", "commit")


def parse(value: str):
    """A csv cell back to None, int, float or str."""
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return None if value == "" else value


def main(args: Args) -> None:
    check(args)
    rows = reevaluate(args) if args.reevaluate else train_rows(args, lambda rows: write_table(rows, args))
    write_table(rows, args)
    with open(os.path.join(args.results_dir, f"{args.name}.md")) as f:
        print(f.read())


def check(args: Args) -> None:
    """Refuse, before anything runs, a table that cannot be made: one line on stderr, exit status 2."""
    problems = []
    if set(args.tune_seeds) & set(args.seeds):
        problems.append(f"--tune-seeds {args.tune_seeds} overlap --seeds {args.seeds} (tune on other seeds)")
    learners = [a for a in args.algos if a != "udr_hopper"]
    scales = (args.mass_scales if args.tune_seeds else [args.mass_scale]) if "udr" in args.rows else []
    if learners and any(round(100 * m, 6) not in UDR_ID_PERCENTS for m in scales):
        problems.append(f"UDR scales {scales} of {learners} must be one of {[p / 100 for p in UDR_ID_PERCENTS]} "
                        "(the CustomHopper-udr<percent>-v0 ids hopper_envs registers)")
    if set(args.rows) == {"bayrn"} and "udr_hopper" not in args.algos:
        problems.append("--rows bayrn needs --algos udr_hopper (bayrn_hopper.py carries udr_hopper's PPO)")
    if args.reevaluate and not os.path.exists(os.path.join(args.results_dir, f"{args.name}.csv")):
        problems.append(f"--reevaluate: no {args.name}.csv in {args.results_dir} (make the table first)")
    if problems:
        print(f"error: {problems[0]}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main(tyro.cli(Args))
