"""The training loops' pieces on real environments: the truncation bootstrap inside a collected rollout,
evaluation that leaves the normalization statistics untouched, and runs that repeat exactly."""

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import scalars
from gymnasium.wrappers.utils import RunningMeanStd

import a2c
import ddpg
import ppo_continuous
import reinforce
import trpo
import udr_hopper

GAMMA, LAMBDA = 0.9, 0.8


class Counter(gym.Env):
    """Observation [t] after t steps, reward 1 per step, never terminates: with a 5-step time limit every
    episode is truncated, its final observation is [5] and the next episode starts again at [0]."""
    observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        self.t += 1
        return np.array([self.t], np.float32), 1.0, False, False, {}


def counter() -> gym.Env:
    return gym.wrappers.TimeLimit(Counter(), max_episode_steps=5)


class Identity(RunningMeanStd):
    """Statistics that normalize to (almost exactly) the raw observation and never move."""
    def __init__(self):
        super().__init__(shape=(1,))
        self.var = np.ones(1) - 1e-8

    def update(self, x):
        pass


def value(agent, x: float) -> float:
    return agent.value(torch.tensor([[float(x)]])).item()


@pytest.mark.parametrize("module", [ppo_continuous, trpo, a2c], ids=lambda m: m.__name__)
def test_async_workers_collect_the_same_rollout_as_sync(module):
    # --vector-env async steps each env in its own process; the rollout (observations, actions, rewards,
    # ends, final observations, episode returns) and the normalizers must not change. 120 steps of
    # Pendulum's 200-step episodes over 2 envs, twice: the second rollout crosses the truncations.
    rollouts, statistics = {}, {}
    for kind in ("sync", "async"):
        torch.manual_seed(0)
        agent = module.Agent(3, 1, False) if module is a2c else module.Agent(3, 1)
        extra = (True,) if module is a2c else ()
        envs, reward_normalizer = module.make_vector_env("Pendulum-v1", 2, 0.99, *extra, vector_env=kind)
        obs_rms = RunningMeanStd(shape=(3,))
        next_obs, _ = envs.reset(seed=3)
        rollouts[kind] = [module.collect_rollout(envs, agent, obs_rms, next_obs, 120)]
        rollouts[kind].append(module.collect_rollout(envs, agent, obs_rms, rollouts[kind][0].next_obs, 120))
        statistics[kind] = (obs_rms.mean, obs_rms.var, reward_normalizer.return_rms.var)
        envs.close()
    assert isinstance(envs.unwrapped, gym.vector.AsyncVectorEnv)
    assert rollouts["sync"][1].dones.sum() == 2  # one truncation per env
    for sync, parallel in zip(rollouts["sync"], rollouts["async"]):
        for name in sync._fields:
            a, b = getattr(sync, name), getattr(parallel, name)
            assert (torch.equal(a, b) if isinstance(a, torch.Tensor) else np.array_equal(a, b)), name
    assert all(np.array_equal(a, b) for a, b in zip(statistics["sync"], statistics["async"]))


@pytest.mark.parametrize("module", [ppo_continuous, trpo, a2c], ids=lambda m: m.__name__)
def test_truncation_bootstraps_the_final_observation_inside_a_real_rollout(module):
    torch.manual_seed(0)
    agent = module.Agent(1, 1, False) if module is a2c else module.Agent(1, 1)
    envs = gym.wrappers.vector.RecordEpisodeStatistics(gym.vector.SyncVectorEnv(
        [counter] * 2, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP))
    next_obs, _ = envs.reset(seed=0)
    rollout = module.collect_rollout(envs, agent, Identity(), next_obs, 12)
    # Each env sees 0 1 2 3 4 | 0 1 2 3 4 | 0 1; the episodes are truncated at t = 4 and 9, never terminated.
    assert rollout.obs[:, 0, 0].tolist() == pytest.approx([0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1], abs=1e-6)
    assert not rollout.terminated.any() and rollout.dones[:, 0].nonzero().flatten().tolist() == [4, 9]
    assert rollout.final_obs[[4, 9], :, 0].flatten().tolist() == pytest.approx([5] * 4, abs=1e-6)
    assert [(t, r, n) for t, r, n in rollout.episodes] == [(4, 5.0, 5)] * 2 + [(9, 5.0, 5)] * 2

    advantages, returns, values = module.advantages_and_returns(agent, rollout, GAMMA, LAMBDA)
    v = {x: value(agent, x) for x in range(6)}
    assert abs(v[5] - v[0]) > 1e-3  # so bootstrapping the wrong state would show
    # At a truncation the sum stops but V(final observation) = V(5) is bootstrapped (not V(0) of the
    # next episode, and not 0 as after a termination).
    assert advantages[4, 0].item() == pytest.approx(1 + GAMMA * v[5] - v[4], abs=1e-5)
    assert advantages[9, 1].item() == pytest.approx(1 + GAMMA * v[5] - v[4], abs=1e-5)
    # Inside an episode: delta_3 + gamma lambda A_4; at the rollout's end: V of the observation after it.
    assert advantages[3, 0].item() == pytest.approx(1 + GAMMA * v[4] - v[3] + GAMMA * LAMBDA * advantages[4, 0].item(),
                                                    abs=1e-5)
    assert advantages[11, 0].item() == pytest.approx(1 + GAMMA * v[2] - v[1], abs=1e-5)
    assert torch.allclose(returns, advantages + values)


def test_reinforce_bootstraps_a_truncated_episode_with_the_value_of_its_final_observation():
    torch.manual_seed(0)
    agent = reinforce.Agent(1, 1, False)
    env = gym.wrappers.RecordEpisodeStatistics(counter())
    obs, _ = env.reset(seed=0)
    # two whole episodes, then a third cut by the budget (max_steps) after 2 steps
    batch = reinforce.collect_episodes(env, agent, Identity(), obs, 3, 12, GAMMA, use_value=True)
    v = {x: value(agent, x) for x in range(6)}
    assert len(batch.returns) == 12
    assert batch.obs[:, 0].tolist() == pytest.approx([0, 1, 2, 3, 4] * 2 + [0, 1], abs=1e-6)
    assert batch.returns[4].item() == pytest.approx(1 + GAMMA * v[5], abs=1e-5)  # truncated at the time limit
    assert batch.returns[3].item() == pytest.approx(1 + GAMMA * batch.returns[4].item(), abs=1e-5)
    assert batch.returns[11].item() == pytest.approx(1 + GAMMA * v[2], abs=1e-5)  # cut by the budget
    assert [(steps, r) for steps, r, _ in batch.episodes] == [(5, 5.0), (10, 5.0)]
    without = reinforce.collect_episodes(env, agent, Identity(), env.reset(seed=0)[0], 1, 12, GAMMA, use_value=False)
    assert without.returns[4].item() == pytest.approx(1.0)  # no value function: nothing to bootstrap with


EVALUATORS = {  # module -> (agent, env id or domain)
    ppo_continuous: (lambda: ppo_continuous.Agent(4, 1), "InvertedPendulum-v4"),
    trpo: (lambda: trpo.Agent(4, 1), "InvertedPendulum-v4"),
    a2c: (lambda: a2c.Agent(4, 1, False), "InvertedPendulum-v4"),
    reinforce: (lambda: reinforce.Agent(4, 1, False), "InvertedPendulum-v4"),
    udr_hopper: (lambda: udr_hopper.Agent(11, 3), "source"),
}


@pytest.mark.parametrize("module", list(EVALUATORS), ids=lambda m: m.__name__)
def test_evaluation_leaves_the_normalization_statistics_bit_identical(module):
    # The CLI test cannot see this: it compares a run's final evaluation with that of its saved
    # checkpoint, and both start from the same saved statistics, so an evaluation that moved them would
    # move them alike in both. Here the statistics themselves are compared, before and after.
    make_agent, env_id = EVALUATORS[module]
    agent = make_agent()
    obs_dim = 11 if module is udr_hopper else 4
    obs_rms = RunningMeanStd(shape=(obs_dim,))
    obs_rms.update(np.random.default_rng(0).normal(1.0, 3.0, size=(64, obs_dim)))
    before = copy.deepcopy(obs_rms)
    module.evaluate(agent, obs_rms, env_id, range(3))
    assert np.array_equal(obs_rms.mean, before.mean) and np.array_equal(obs_rms.var, before.var)
    assert obs_rms.count == before.count


RUNS = {  # module -> short-run Args; each run is ~2-5 s
    ppo_continuous: {"total_timesteps": 4096},
    trpo: {"total_timesteps": 4096},
    a2c: {"total_timesteps": 4096},
    reinforce: {"total_timesteps": 4096},
    ddpg: {"total_timesteps": 1500, "learning_starts": 500},
    udr_hopper: {"total_timesteps": 4096},
}


def training_curve(module, log_dir, **extra) -> list[tuple[int, float]]:
    args = module.Args(log_dir=str(log_dir), progress=False, save_model=False, eval_episodes=1, **RUNS[module], **extra)
    module.main(args)
    (run_dir,) = log_dir.iterdir()
    return scalars(run_dir, "charts/episodic_return")


@pytest.mark.slow
@pytest.mark.parametrize("module", list(RUNS), ids=lambda m: m.__name__)
def test_same_seed_same_training_and_evaluating_during_training_changes_nothing(module, tmp_path):
    first = training_curve(module, tmp_path / "a", eval_freq=0)
    again = training_curve(module, tmp_path / "b", eval_freq=0)
    assert len(first) > 10 and first == again  # bit-identical: same steps, same returns
    # Evaluations every 1000 steps read the networks and the statistics, draw from no training RNG:
    # the training episodes stay bit-identical too.
    evaluated = training_curve(module, tmp_path / "c", eval_freq=1000, periodic_eval_episodes=2)
    assert evaluated == first
    assert training_curve(module, tmp_path / "d", eval_freq=0, seed=2) != first  # and the seed matters


MUJOCO_V5 = ["Hopper-v5", "HalfCheetah-v5", "Walker2d-v5", "Ant-v5", "Humanoid-v5", "Swimmer-v5", "Reacher-v5",
             "Pusher-v5", "InvertedPendulum-v5", "InvertedDoublePendulum-v5", "HumanoidStandup-v5"]


@pytest.mark.parametrize("module", [ppo_continuous, trpo, a2c, reinforce, ddpg], ids=lambda m: m.__name__)
def test_every_mujoco_v5_id_is_accepted_with_its_own_sizes(module):
    for env_id in MUJOCO_V5:
        env = gym.make(env_id)
        sizes = (env.observation_space.shape[0], env.action_space.shape[0])
        env.close()
        checked = module.check_args(module.Args(env_id=env_id))
        if module is ddpg:  # ddpg returns the spaces themselves
            checked = (checked[0].shape[0], checked[1].shape[0])
        elif module in (a2c, reinforce):  # (obs_dim, act_dim, discrete)
            checked = checked[:2]
        assert checked == sizes, env_id


@pytest.mark.slow
@pytest.mark.parametrize("module", [ppo_continuous, trpo, a2c, reinforce, ddpg], ids=lambda m: m.__name__)
def test_every_script_trains_and_evaluates_on_hopper_v5(module, tmp_path):
    extra = {"learning_starts": 1536} if module is ddpg else {}
    result = module.main(module.Args(env_id="Hopper-v5", total_timesteps=2048, eval_episodes=2, eval_freq=1024,
                                     periodic_eval_episodes=1, log_dir=str(tmp_path), progress=False, **extra))
    assert result["env_id"] == "Hopper-v5" and result["global_step"] == 2048 and len(result["returns"]) == 2
    assert result["best_model"] is not None and all(r > 0 for r in result["returns"])  # Hopper pays ~1 per step alive
