"""benchmark/run.py and transfer.py --ray-address: jobs as Ray tasks on a real local cluster (127.0.0.1)."""

import csv
import json
import os
import secrets
import socket
import subprocess
import sys

import pytest
from conftest import ROOT, run_benchmark

pytest.importorskip("ray", reason="benchmark extras: pip install -r benchmark/requirements.txt")
pytestmark = [pytest.mark.extras, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A 2-CPU Ray head on 127.0.0.1 for this module; yields (address, environment for its clients)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    temp = tmp_path_factory.mktemp("ray")
    # token authentication as `ray start` sets it up, with a token of this module's own (a fresh machine
    # has no ~/.ray/auth_token, and `ray start` does not make one); workers at normal priority (Ray's
    # default niceness is 15, which starves them while other tests run)
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32), RAY_worker_niceness="0")
    ray = os.path.join(os.path.dirname(sys.executable), "ray")
    subprocess.run([ray, "start", "--head", "--num-cpus", "2", "--port", str(port), "--include-dashboard", "false",
                    "--disable-usage-stats", "--temp-dir", str(temp)], env=env, check=True, capture_output=True,
                   timeout=120)
    try:
        yield f"127.0.0.1:{port}", env
    finally:
        subprocess.run([ray, "stop", "--force"], env=env, capture_output=True, timeout=120, check=False)


def benchmark(script, *flags, env=None):
    result = run_benchmark(script, *flags, env=env)
    assert result.returncode == 0, result.stderr
    return result


def without_timing(rows, timing=("sps", "wall_seconds", "peak_rss_mb", "loadavg_at_start", "commit")):
    return [{k: v for k, v in r.items() if k not in timing} for r in rows]


def test_run_py_on_ray_gives_the_local_results_in_the_same_layout(cluster, tmp_path):
    address, env = cluster
    out = {}
    for where, extra in (("local", []), ("ray", ["--ray-address", address])):
        benchmark("run.py", "--algo", "ppo", "--env-id", "Pendulum-v1", "--total-timesteps", "2048",
                  "--seeds", "1", "2", "--eval-episodes", "2", "--name", "t",
                  "--runs-dir", str(tmp_path / where / "runs"), "--results-dir", str(tmp_path / where / "results"),
                  *extra, env=env)
        with open(tmp_path / where / "results" / "t.csv") as f:
            out[where] = list(csv.DictReader(f))
    assert without_timing(out["ray"]) == without_timing(out["local"]) and len(out["ray"]) == 2
    for seed in (1, 2):
        local, remote = (tmp_path / w / "runs" / "t" / "ours" / f"seed{seed}" for w in ("local", "ray"))
        job = json.loads((remote / "job.json").read_text())
        assert job["returncode"] == 0 and job["host"] == socket.gethostname() and "--log-dir" in job["command"]
        # the run directory came back: the same files as a local run's, the same evaluation
        (run_local,), (run_remote,) = local.glob("*__*"), remote.glob("*__*")
        assert sorted(p.name.split(".")[0] for p in run_remote.iterdir()) == sorted(
            p.name.split(".")[0] for p in run_local.iterdir())
        evaluation = [json.loads((d / "eval.json").read_text())["returns"] for d in (run_local, run_remote)]
        assert evaluation[0] == evaluation[1]
        assert (remote / "output.log").read_text() != ""


def test_transfer_py_on_ray_ships_the_checkpoint_its_evaluation_needs(cluster, tmp_path):
    address, env = cluster
    flags = ["--algos", "a2c", "--rows", "source", "--seeds", "1", "--total-timesteps", "2048", "--eval-episodes", "2",
             "--name", "t"]
    rows = {}
    for where, extra in (("local", []), ("ray", ["--ray-address", address])):
        benchmark("transfer.py", *flags, "--runs-dir", str(tmp_path / where / "runs"),
                  "--results-dir", str(tmp_path / where / "results"), *extra, env=env)
        with open(tmp_path / where / "results" / "t.csv") as f:
            rows[where] = without_timing(list(csv.DictReader(f)))
    assert rows["ray"] == rows["local"]
    # the evaluation ran on a node from the published policy, sent along as an input file
    job_dir = tmp_path / "ray" / "runs" / "t" / "a2c-source" / "seed1" / "eval-target"
    job = json.loads((job_dir / "job.json").read_text())
    policy = str(tmp_path / "ray" / "results" / "policies" / "t" / "a2c-source-seed1.pt")
    assert job["returncode"] == 0 and policy in job["command"] and policy not in job["node_command"]
    # on the node: the script, the checkpoint and the log directory all in the task's own scratch directory
    scratch = os.path.dirname(os.path.dirname(job["node_command"][1]))
    assert job["node_command"][1] == os.path.join(scratch, "repo", "a2c.py") and not scratch.startswith(str(ROOT))
    node_policy = job["node_command"][job["command"].index(policy)]
    assert node_policy.startswith(os.path.join(scratch, "inputs")) and node_policy.endswith("a2c-source-seed1.pt")
    assert job["node_command"][job["command"].index("--log-dir") + 1] == os.path.join(scratch, "job")


def test_bayrn_candidates_as_ray_tasks_give_the_local_search(cluster, tmp_path):
    address, env = cluster
    tiny = ["--num-init", "2", "--iterations", "2", "--inner-timesteps", "1024", "--target-episodes", "1",
            "--source-episodes", "1", "--eval-episodes", "1", "--gp-iters", "30", "--final-timesteps", "0",
            "--parallel-candidates", "2", "--no-progress"]
    histories = {}
    for where, extra in (("local", []), ("ray", ["--ray-address", address])):
        command = [sys.executable, str(ROOT / "bayrn_hopper.py"), *tiny, "--log-dir", str(tmp_path / where), *extra]
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, check=False)
        assert result.returncode == 0, result.stderr
        (run_dir,) = (tmp_path / where).iterdir()
        records = [json.loads(line) for line in (run_dir / "bayrn_history.jsonl").read_text().splitlines()]
        for r in records:  # every candidate's policy came back into the run directory
            assert (run_dir / r["policy"]).is_file()
        assert len(list(run_dir.glob("events.out.tfevents.*.candidate*"))) == 4
        histories[where] = [{k: r[k] for k in ("index", "phi", "train_seed", "target_returns")} for r in records]
    # two Sobol candidates, then two kriging-believer proposals: the same search on Ray as in local workers
    assert histories["ray"] == histories["local"] and len(histories["ray"]) == 4
