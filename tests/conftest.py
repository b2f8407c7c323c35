"""Helpers shared by the tests: where the scripts are, running one as a user does, reading a run."""

import os
import subprocess
import sys
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ROOT = Path(__file__).resolve().parent.parent


def run_script(script: str, *args: str, timeout: float = 300, pythonpath: str | None = None
               ) -> subprocess.CompletedProcess:
    """`python <script> --no-progress <args>` from the repository root, with `pythonpath` prepended to
    PYTHONPATH if given; never raises on failure."""
    env = os.environ.copy()
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [pythonpath, env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, str(ROOT / script), "--no-progress", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False, env=env)


def run_benchmark(script: str, *args: str, tmp_path=None, env: dict | None = None, timeout: float = 600
                  ) -> subprocess.CompletedProcess:
    """`python benchmark/<script> <args>`, with --runs-dir and --results-dir under tmp_path if given; never
    raises on failure."""
    dirs = ["--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results")] if tmp_path else []
    return subprocess.run([sys.executable, str(ROOT / "benchmark" / script), *args, *dirs], env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def scalars(run_dir, tag: str) -> list[tuple[int, float]]:
    """(step, value) of every point of a TensorBoard scalar of one run directory."""
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)] if tag in events.Tags()["scalars"] else []


def trpo_step_settings(args) -> dict:
    """trpo.trpo_step's keyword arguments from a trpo.Args."""
    return {k: getattr(args, k) for k in ("max_kl", "cg_iters", "cg_damping", "line_search_steps", "backtrack_coef")}
