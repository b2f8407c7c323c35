"""udr_hopper: the mass bounds from the flags, evaluation on both domains, the randomization a
training run really sees (read back from TensorBoard), checkpoints, bad input."""

import json

import numpy as np
import pytest
import torch
from conftest import run_script, scalars
from gymnasium.wrappers.utils import RunningMeanStd
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import hopper_envs
import udr_hopper

SOURCE = hopper_envs.nominal_masses("source")
TARGET = hopper_envs.nominal_masses("target")
BOUNDS = {"thigh": (3.0, 5.0), "leg": (2.0, 2.5)}  # foot not named: stays at the source mass



def test_mass_scale_is_relative_to_the_source_masses():
    bounds = udr_hopper.mass_bounds(udr_hopper.Args(mass_scale=0.1))
    for body in hopper_envs.RANDOMIZED_BODIES:
        assert bounds[body] == pytest.approx((0.9 * SOURCE[body], 1.1 * SOURCE[body]))
    default = udr_hopper.mass_bounds(udr_hopper.Args())
    assert default["leg"] == pytest.approx(((1 - hopper_envs.DEFAULT_MASS_SCALE) * SOURCE["leg"],
                                            (1 + hopper_envs.DEFAULT_MASS_SCALE) * SOURCE["leg"]))
    assert udr_hopper.mass_bounds(udr_hopper.Args(train_domain="source")) is None


def test_absolute_bounds_fix_the_bodies_they_do_not_name():
    low, high = {b: lo for b, (lo, _) in BOUNDS.items()}, {b: hi for b, (_, hi) in BOUNDS.items()}
    bounds = udr_hopper.mass_bounds(udr_hopper.Args(mass_low=low, mass_high=high))
    assert bounds["thigh"] == (3.0, 5.0) and bounds["leg"] == (2.0, 2.5)
    assert bounds["foot"] == (SOURCE["foot"], SOURCE["foot"])


@pytest.mark.parametrize("domain", ["source", "target"])
def test_evaluation_runs_on_the_right_masses(domain):
    torch.manual_seed(0)
    result = udr_hopper.evaluate(udr_hopper.Agent(11, 3), RunningMeanStd(shape=(11,)), domain, seeds=range(2))
    assert result["episodes"] == 2 and len(result["returns"]) == 2
    assert result["masses"] == pytest.approx({"source": SOURCE, "target": TARGET}[domain])
    assert result["masses"]["torso"] == pytest.approx(TARGET["torso"] - (domain == "source"))


@pytest.fixture(scope="module")
def udr_run(tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("runs")
    result = run_script("udr_hopper.py", "--total-timesteps", "4096", "--eval-episodes", "2", "--log-dir", str(log_dir),
                        "--mass-low", "thigh", "3.0", "leg", "2.0", "--mass-high", "thigh", "5.0", "leg", "2.5")
    assert result.returncode == 0, result.stderr
    (run_dir,) = log_dir.iterdir()
    return run_dir


@pytest.mark.slow
def test_training_masses_change_every_episode_within_bounds_and_torso_stays(udr_run):
    events = EventAccumulator(str(udr_run), size_guidance={"scalars": 0})
    events.Reload()
    masses = {b: np.array([e.value for e in events.Scalars(f"domain/{b}_mass")]) for b in hopper_envs.BODIES}
    episodes = len(events.Scalars("charts/episodic_return"))
    assert episodes > 10 and len(masses["thigh"]) >= episodes  # one sample per episode started
    for body, (low, high) in BOUNDS.items():
        assert ((masses[body] >= low) & (masses[body] <= high)).all(), body
        assert len(np.unique(masses[body])) == len(masses[body]), body  # drawn anew every reset
    assert np.allclose(masses["foot"], SOURCE["foot"]) and np.allclose(masses["torso"], SOURCE["torso"])
    for tag in ("eval/source_return", "eval/target_return", "eval/episodic_return", "losses/clipfrac"):
        assert tag in events.Tags()["scalars"], tag


@pytest.mark.slow
def test_eval_json_holds_both_domains_and_the_bounds(udr_run):
    result = json.loads((udr_run / "eval.json").read_text())
    assert result["train_domain"] == "udr" and result["global_step"] == 4096
    assert result["mass_bounds"]["thigh"] == [3.0, 5.0]
    for domain, masses in (("source", SOURCE), ("target", TARGET)):
        assert result[domain]["episodes"] == 2
        assert result[domain]["mean"] == pytest.approx(np.mean(result[domain]["returns"]))
        assert result[domain]["masses"] == pytest.approx(masses)


@pytest.mark.slow
def test_checkpoint_reproduces_the_evaluation(udr_run, tmp_path):
    result = run_script("udr_hopper.py", "--checkpoint", str(udr_run / "model.pt"), "--eval-episodes", "2",
                        "--log-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    (eval_dir,) = tmp_path.iterdir()
    evaluated, trained = (json.loads((d / "eval.json").read_text()) for d in (eval_dir, udr_run))
    for domain in ("source", "target"):
        assert evaluated[domain]["returns"] == pytest.approx(trained[domain]["returns"])


@pytest.mark.slow
def test_async_workers_train_exactly_like_sync(tmp_path):
    # --vector-env async: the 2 randomized Hoppers step in worker processes, with the same mass draws,
    # trajectories, updates and evaluation as in this process.
    runs = {}
    for kind in ("sync", "async"):
        result = run_script("udr_hopper.py", "--num-envs", "2", "--num-steps", "1024", "--total-timesteps", "4096",
                            "--vector-env", kind, "--eval-freq", "0", "--eval-episodes", "2",
                            "--log-dir", str(tmp_path / kind))
        assert result.returncode == 0, result.stderr
        (runs[kind],) = (tmp_path / kind).iterdir()
    returns = {kind: scalars(run, "charts/episodic_return") for kind, run in runs.items()}
    assert returns["sync"] == returns["async"] and len(returns["sync"]) > 10
    assert scalars(runs["sync"], "losses/value_loss") == scalars(runs["async"], "losses/value_loss")
    evaluations = [json.loads((run / "eval.json").read_text()) for run in runs.values()]
    assert evaluations[0]["target"]["returns"] == evaluations[1]["target"]["returns"]
