"""docs/your_own_environment.md as a user follows it: the example environment docs/point_goal.py,
registered by importing its module, trained and evaluated by every learner through
--env-id point_goal:PointGoal-v0."""

import json
import sys

import gymnasium as gym
import numpy as np
import pytest
from conftest import ROOT, run_script
from gymnasium.utils.env_checker import check_env

DOCS = str(ROOT / "docs")
ENV_ID = "point_goal:PointGoal-v0"
LEARNERS = ["ppo_continuous.py", "trpo.py", "a2c.py", "reinforce.py", "ddpg.py"]


def test_the_example_follows_the_gymnasium_api_and_a_good_policy_beats_a_random_one(monkeypatch):
    monkeypatch.syspath_prepend(DOCS)
    env = gym.make(ENV_ID)  # imports point_goal, which registers PointGoal-v0
    check_env(env.unwrapped)

    def mean_return(policy):
        returns = []
        for seed in range(10):
            obs, _ = env.reset(seed=seed)
            total, done = 0.0, False
            while not done:
                obs, reward, terminated, truncated, _ = env.step(policy(obs))
                total, done = total + reward, terminated or truncated
            returns.append(total)
        return np.mean(returns)

    assert env.spec.max_episode_steps == 50
    towards_goal = mean_return(lambda obs: np.clip(10 * (obs[2:] - obs[:2]), -1, 1))
    assert towards_goal > -10 and mean_return(lambda obs: np.zeros(2)) < -40
    sys.modules.pop("point_goal", None)


@pytest.mark.slow
@pytest.mark.parametrize("script", LEARNERS)
def test_every_learner_trains_and_evaluates_the_example(script, tmp_path):
    budget = ["--learning-starts", "200", "--total-timesteps", "400"] if script == "ddpg.py" else [
        "--total-timesteps", "2048"]
    result = run_script(script, "--env-id", ENV_ID, *budget, "--eval-freq", "0", "--eval-episodes", "3",
                        "--log-dir", str(tmp_path), pythonpath=DOCS)
    assert result.returncode == 0, result.stderr
    (run_dir,) = tmp_path.iterdir()
    assert run_dir.name.startswith("PointGoal-v0__")  # the module prefix stays out of the directory name
    result = json.loads((run_dir / "eval.json").read_text())
    # 50 steps of minus a distance inside the square [-1, 1]^2 (at most 2 sqrt 2)
    assert result["episodes"] == 3 and all(-50 * 2 * np.sqrt(2) <= r < 0 for r in result["returns"])
    again = run_script(script, "--env-id", ENV_ID, "--checkpoint", str(run_dir / "model.pt"), "--eval-episodes",
                       "3", "--log-dir", str(tmp_path / "again"), pythonpath=DOCS)
    assert again.returncode == 0, again.stderr
    (replay,) = (tmp_path / "again").iterdir()
    assert json.loads((replay / "eval.json").read_text())["returns"] == result["returns"]


@pytest.mark.slow
def test_ppo_learns_the_example(tmp_path):
    # A random policy scores about -55, steering straight to the goal about -6.
    result = run_script("ppo_continuous.py", "--env-id", ENV_ID, "--total-timesteps", "30000", "--eval-freq", "0",
                        "--eval-episodes", "20", "--log-dir", str(tmp_path), pythonpath=DOCS)
    assert result.returncode == 0, result.stderr
    (run_dir,) = tmp_path.iterdir()
    assert json.loads((run_dir / "eval.json").read_text())["mean"] > -25
