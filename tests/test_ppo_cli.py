"""ppo_continuous as a user runs it: a short Hopper run, its outputs, --checkpoint, bad input."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ROOT = Path(__file__).resolve().parent.parent
PPO_TAGS = [
    "charts/episodic_return", "charts/episodic_length", "charts/SPS", "charts/learning_rate",
    "eval/episodic_return", "losses/policy_loss", "losses/value_loss", "losses/entropy",
    "losses/approx_kl", "losses/explained_variance", "losses/clipfrac",
]


def run(*args, cwd=ROOT):
    return subprocess.run([sys.executable, str(ROOT / "ppo_continuous.py"), "--no-progress", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def hopper_run(tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("runs")
    result = run("--env-id", "Hopper-v4", "--total-timesteps", "4096", "--eval-episodes", "2",
                 "--log-dir", str(log_dir))
    assert result.returncode == 0, result.stderr
    (run_dir,) = log_dir.iterdir()
    return run_dir


def test_smoke_run_writes_every_tag_model_and_eval(hopper_run):
    assert hopper_run.name.startswith("Hopper-v4__ppo_continuous__1__")
    events = EventAccumulator(str(hopper_run))
    events.Reload()
    missing = [t for t in PPO_TAGS if t not in events.Tags()["scalars"]]
    assert not missing
    assert any(t.startswith("hyperparameters") for t in events.Tags()["tensors"])
    steps = [e.step for e in events.Scalars("charts/episodic_return")]
    assert len(steps) > 10 and steps == sorted(steps) and steps[-1] <= 4096

    result = json.loads((hopper_run / "eval.json").read_text())
    assert result["env_id"] == "Hopper-v4" and result["episodes"] == 2 and len(result["returns"]) == 2
    assert result["mean"] == pytest.approx(sum(result["returns"]) / 2)
    assert result["global_step"] == 4096

    checkpoint = torch.load(hopper_run / "model.pt", weights_only=True)
    assert set(checkpoint) == {"agent", "obs_rms", "args"}
    assert checkpoint["obs_rms"]["mean"].shape == (11,) and checkpoint["obs_rms"]["count"] > 4096
    assert checkpoint["args"]["env_id"] == "Hopper-v4"


def test_checkpoint_is_evaluated_with_its_frozen_statistics(hopper_run, tmp_path):
    result = run("--env-id", "Hopper-v4", "--checkpoint", str(hopper_run / "model.pt"),
                 "--eval-episodes", "2", "--log-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    (run_dir,) = tmp_path.iterdir()
    evaluated = json.loads((run_dir / "eval.json").read_text())
    trained = json.loads((hopper_run / "eval.json").read_text())
    # Same weights, same frozen statistics, same evaluation seeds: the same returns.
    assert evaluated["returns"] == pytest.approx(trained["returns"])
    assert not (run_dir / "model.pt").exists()


@pytest.mark.parametrize(
    "args, words",
    [
        (["--env-id", "NoSuchEnv-v0"], "unknown env id"),
        (["--env-id", "CartPole-v1"], "Discrete"),
        (["--total-timesteps", "0"], "--total-timesteps"),
        (["--num-minibatches", "7"], "does not divide"),
        (["--surrogate", "trust-me"], "unknown surrogate"),
        (["--checkpoint", "no/such/model.pt"], "cannot load checkpoint"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(args, words, tmp_path):
    result = run(*args, "--log-dir", str(tmp_path / "runs"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], result.stderr
    assert not (tmp_path / "runs").exists()


def test_checkpoint_for_another_env_exits_2(hopper_run, tmp_path):
    result = run("--env-id", "InvertedPendulum-v5", "--checkpoint", str(hopper_run / "model.pt"),
                 "--log-dir", str(tmp_path / "runs"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "does not match" in lines[0], result.stderr
    assert not (tmp_path / "runs").exists()


def test_capture_video_records_each_evaluation_episode(tmp_path):
    result = run("--env-id", "Hopper-v4", "--total-timesteps", "2048", "--eval-episodes", "2", "--capture-video",
                 "--no-save-model", "--log-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    videos = sorted((next(tmp_path.iterdir()) / "videos").glob("*.mp4"))
    assert len(videos) == 2 and all(v.stat().st_size > 1000 for v in videos)
