"""Each algorithm script as a user runs it: a short Hopper run, its outputs, --checkpoint, bad input."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ROOT = Path(__file__).resolve().parent.parent
COMMON_TAGS = ["charts/episodic_return", "charts/episodic_length", "charts/SPS", "charts/learning_rate",
               "eval/episodic_return"]
ON_POLICY_TAGS = COMMON_TAGS + ["losses/policy_loss", "losses/value_loss", "losses/entropy", "losses/approx_kl",
                                "losses/explained_variance"]
ON_POLICY_CHECKPOINT = {"agent", "obs_rms", "args"}
SCRIPTS = {  # script -> (TensorBoard tags, model.pt keys, extra args of the smoke run, its own bad inputs)
    "ppo_continuous.py": (ON_POLICY_TAGS + ["losses/clipfrac"], ON_POLICY_CHECKPOINT, [],
                          [(["--num-minibatches", "7"], "does not divide"), (["--surrogate", "trust-me"], "unknown surrogate"),
                           (["--env-id", "CartPole-v1"], "Discrete")]),
    "trpo.py": (ON_POLICY_TAGS + ["losses/kl", "losses/surrogate_improvement", "charts/line_search_steps"],
                ON_POLICY_CHECKPOINT, [],
                [(["--vf-minibatches", "7"], "does not divide"), (["--backtrack-coef", "1.5"], "--backtrack-coef"),
                 (["--max-kl", "0"], "--max-kl"), (["--env-id", "CartPole-v1"], "Discrete")]),
    # a2c and reinforce take Discrete actions too; Blackjack's observations are a Tuple
    "a2c.py": (ON_POLICY_TAGS, ON_POLICY_CHECKPOINT, [],
               [(["--optimizer", "sgd"], "unknown optimizer"), (["--gae-lambda", "1.5"], "--gae-lambda"),
                (["--env-id", "Blackjack-v1"], "observations")]),
    "reinforce.py": (ON_POLICY_TAGS, ON_POLICY_CHECKPOINT, [],
                     [(["--baseline", "median"], "unknown baseline"),
                      (["--episodes-per-update", "0"], "--episodes-per-update"),
                      (["--env-id", "Blackjack-v1"], "observations")]),
    "ddpg.py": (COMMON_TAGS + ["losses/qf_loss", "losses/qf_values", "losses/actor_loss"],
                {"actor", "critic", "actor_target", "critic_target", "args"}, ["--learning-starts", "2048"],
                [(["--noise", "pink"], "unknown noise"), (["--tau", "0"], "--tau"),
                 (["--env-id", "CartPole-v1"], "Discrete")]),
}
COMMON_BAD_INPUT = [
    (["--env-id", "NoSuchEnv-v0"], "unknown env id"),
    (["--total-timesteps", "0"], "--total-timesteps"),
    (["--checkpoint", "no/such/model.pt"], "cannot load checkpoint"),
]


def run(script, *args):
    return subprocess.run([sys.executable, str(ROOT / script), "--no-progress", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module", params=list(SCRIPTS))
def hopper_run(request, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("runs")
    result = run(request.param, "--env-id", "Hopper-v4", "--total-timesteps", "4096", "--eval-episodes", "2",
                 "--log-dir", str(log_dir), *SCRIPTS[request.param][2])
    assert result.returncode == 0, result.stderr
    (run_dir,) = log_dir.iterdir()
    return request.param, run_dir


def test_smoke_run_writes_every_tag_model_and_eval(hopper_run):
    script, run_dir = hopper_run
    assert run_dir.name.startswith(f"Hopper-v4__{script[:-3]}__1__")
    events = EventAccumulator(str(run_dir))
    events.Reload()
    tags, checkpoint_keys = SCRIPTS[script][:2]
    missing = [t for t in tags if t not in events.Tags()["scalars"]]
    assert not missing
    assert any(t.startswith("hyperparameters") for t in events.Tags()["tensors"])
    steps = [e.step for e in events.Scalars("charts/episodic_return")]
    assert len(steps) > 10 and steps == sorted(steps) and steps[-1] <= 4096

    result = json.loads((run_dir / "eval.json").read_text())
    assert result["env_id"] == "Hopper-v4" and result["episodes"] == 2 and len(result["returns"]) == 2
    assert result["mean"] == pytest.approx(sum(result["returns"]) / 2)
    assert result["global_step"] == 4096

    checkpoint = torch.load(run_dir / "model.pt", weights_only=True)
    assert set(checkpoint) == checkpoint_keys
    if "obs_rms" in checkpoint:
        assert checkpoint["obs_rms"]["mean"].shape == (11,) and checkpoint["obs_rms"]["count"] > 4096
    assert checkpoint["args"]["env_id"] == "Hopper-v4"


def test_checkpoint_is_evaluated_with_its_frozen_statistics(hopper_run, tmp_path):
    script, run_dir = hopper_run
    result = run(script, "--env-id", "Hopper-v4", "--checkpoint", str(run_dir / "model.pt"),
                 "--eval-episodes", "2", "--log-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    (eval_dir,) = tmp_path.iterdir()
    evaluated = json.loads((eval_dir / "eval.json").read_text())
    trained = json.loads((run_dir / "eval.json").read_text())
    # Same weights, same frozen statistics, same evaluation seeds: the same returns.
    assert evaluated["returns"] == pytest.approx(trained["returns"])
    assert not (eval_dir / "model.pt").exists()


@pytest.mark.parametrize(
    "script, args, words",
    [(script, args, words) for script, (*_, own) in SCRIPTS.items() for args, words in COMMON_BAD_INPUT + own],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(script, args, words, tmp_path):
    result = run(script, *args, "--log-dir", str(tmp_path / "runs"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], result.stderr
    assert not (tmp_path / "runs").exists()


def test_checkpoint_for_another_env_exits_2(hopper_run, tmp_path):
    script, run_dir = hopper_run
    result = run(script, "--env-id", "InvertedPendulum-v5", "--checkpoint", str(run_dir / "model.pt"),
                 "--log-dir", str(tmp_path / "runs"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "does not match" in lines[0], result.stderr
    assert not (tmp_path / "runs").exists()


def test_capture_video_records_each_evaluation_episode(tmp_path):
    result = run("ppo_continuous.py", "--env-id", "Hopper-v4", "--total-timesteps", "2048", "--eval-episodes", "2", "--capture-video",
                 "--no-save-model", "--log-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    videos = sorted((next(tmp_path.iterdir()) / "videos").glob("*.mp4"))
    assert len(videos) == 2 and all(v.stat().st_size > 1000 for v in videos)
