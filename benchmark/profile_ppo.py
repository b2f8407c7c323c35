"""Where an on-policy script's time goes: cProfile of one short training run, grouped by who spends it.

The script runs as a user runs it (its command line, under `python -m cProfile`), so any version of it can
be profiled: `--script` takes a path, e.g. ppo_continuous.py in a worktree of an older commit.
Each function's own time (cProfile's tottime) goes to one group by the file it is defined in:
- simulator: MuJoCo (the mujoco package and its C functions) and gymnasium's MuJoCo envs (mujoco/*.py);
- gymnasium: everything else of gymnasium (wrappers, vector envs, spaces, utils);
- torch: networks, autograd, optimizer, distributions;
- numpy: numpy's Python and C functions;
- script: the profiled script's own Python lines (its loops, bookkeeping);
- other: start-up (the interpreter, imports: about 3 s whatever the budget), tensorboard, the rest.
cProfile adds a fixed cost per Python call, so Python-heavy groups look larger than they are; the wall
time of the same command without the profiler is printed beside it. Runs go one at a time.

    python benchmark/profile_ppo.py
    git worktree add /tmp/before e208a80~1  # before the rollout was written through numpy views
    python benchmark/profile_ppo.py --script /tmp/before/ppo_continuous.py --script-args ""
"""

from __future__ import annotations

import os
import pstats
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import tyro

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GROUPS = ("simulator", "gymnasium", "torch", "numpy", "script", "other")


@dataclass
class Args:
    script: str = os.path.join(ROOT, "ppo_continuous.py")
    """the script to profile (any version of ppo_continuous.py, trpo.py, a2c.py)"""
    env_id: str = "Hopper-v4"
    """gymnasium id"""
    total_timesteps: int = 40960
    """training steps of the profiled run (start-up is a fixed cost, so longer runs dilute it)"""
    script_args: str = "--eval-freq 0"
    """more flags for the script (the default turns periodic evaluation off, as older versions had none)"""


def group_of(filename: str, function: str, script: str) -> str:
    """The group of one cProfile entry: its file (or, for C functions, its name) says who spent the time."""
    name = f"{filename} {function}"
    if os.path.abspath(filename) == os.path.abspath(script):
        return "script"
    if "gymnasium/envs/mujoco" in name or "mujoco" in function or "/mujoco/" in filename:
        return "simulator"
    for group in ("gymnasium", "torch", "numpy"):
        if f"/{group}/" in filename or f"{group}." in function or f"'{group}" in function:
            return group
    return "other"


def grouped_seconds(profile_path: str, script: str) -> dict[str, float]:
    """Seconds of own time (tottime) per group, from a cProfile output file."""
    seconds = dict.fromkeys(GROUPS, 0.0)
    for (filename, _, function), (_, _, tottime, _, _) in pstats.Stats(profile_path).stats.items():
        seconds[group_of(filename, function, script)] += tottime
    return seconds


def main(args: Args) -> None:
    if not os.path.isfile(args.script) or args.total_timesteps < 1:
        print(f"error: no script {args.script} or --total-timesteps < 1 (give an existing file, a positive budget)",
              file=sys.stderr)
        sys.exit(2)
    with tempfile.TemporaryDirectory() as tmp:
        command = [args.script, "--env-id", args.env_id, "--total-timesteps", str(args.total_timesteps),
                   "--no-progress", "--log-dir", tmp, *shlex.split(args.script_args)]
        start = time.perf_counter()
        subprocess.run([sys.executable, *command], check=True, capture_output=True, cwd=ROOT)
        plain = time.perf_counter() - start
        profile_path = os.path.join(tmp, "run.prof")
        # not `python -m cProfile script`: that leaves cProfile as __main__, where tyro looks up the Args annotations
        runner = ("import cProfile, runpy, sys; path = sys.argv.pop(1); sys.argv[0] = sys.argv.pop(1); "
                  "cProfile.run('runpy.run_path(sys.argv[0], run_name=\"__main__\")', path)")
        subprocess.run([sys.executable, "-c", runner, profile_path, *command], check=True, capture_output=True,
                       cwd=ROOT)
        seconds = grouped_seconds(profile_path, args.script)
    total = sum(seconds.values())
    per_k = 1000 / args.total_timesteps
    print(f"{shlex.join(command[:1] + command[1:5])} {args.script_args}: {plain:.1f} s without the profiler, "
          f"{total:.1f} s under it")
    print("| group | s under cProfile | share | ms per 1000 env steps |\n|---|---|---|---|")
    for group in GROUPS:
        print(f"| {group} | {seconds[group]:.2f} | {seconds[group] / total:.0%} | {seconds[group] * 1e3 * per_k:.0f} |")


if __name__ == "__main__":
    main(tyro.cli(Args))
