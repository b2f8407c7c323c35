"""trpo.py's policy step against sb3-contrib's TRPO on one shared batch (benchmark extras).

Both start from the same actor weights and take one update on the same observations, actions and
advantages. sb3-contrib averages the KL over action dimensions (Normal(...).mean() over a
(batch, act_dim) tensor) where trpo.py sums it, so its target_kl and cg_damping are ours divided by
act_dim; with that scaling the updated actor must agree to float precision. benchmark/sb3_peer.py
relies on this equivalence to give the peer trpo.py's settings.
"""

import warnings

import gymnasium as gym
import pytest
import torch
from conftest import trpo_step_settings

import trpo

pytestmark = pytest.mark.extras
sb3_contrib = pytest.importorskip("sb3_contrib", reason="benchmark extras: pip install -r benchmark/requirements.txt")


def test_one_policy_step_equals_sb3_contrib_with_its_kl_averaged_over_action_dims():
    from stable_baselines3.common.logger import configure
    from stable_baselines3.common.vec_env import DummyVecEnv

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    torch.manual_seed(0)
    batch, args = 2048, trpo.Args()
    env = DummyVecEnv([lambda: gym.make("Hopper-v4")])
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    peer = sb3_contrib.TRPO(
        "MlpPolicy", env, n_steps=batch, batch_size=128, n_critic_updates=1, device="cpu",
        cg_max_steps=args.cg_iters, target_kl=args.max_kl / act_dim, cg_damping=args.cg_damping / act_dim,
        line_search_shrinking_factor=args.backtrack_coef, line_search_max_iter=args.line_search_steps,
        policy_kwargs={"net_arch": {"pi": [64, 64], "vf": [64, 64]}, "activation_fn": torch.nn.Tanh})
    peer.set_logger(configure(None, [""]))
    policy, agent = peer.policy, trpo.Agent(obs_dim, act_dim)
    theirs = [m for m in policy.mlp_extractor.policy_net if isinstance(m, torch.nn.Linear)] + [policy.action_net]
    ours = [m for m in agent.actor_mean if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for source, target in zip(theirs, ours):
            target.weight.copy_(source.weight)
            target.bias.copy_(source.bias)
        agent.actor_logstd.copy_(policy.log_std)
        obs = torch.randn(batch, obs_dim)
        dist = agent.dist(obs)
        actions = dist.sample()
        logprob = dist.log_prob(actions).sum(-1)
    advantages = 3 * torch.randn(batch) + 0.5

    buffer = peer.rollout_buffer  # sb3-contrib's update reads the batch from its rollout buffer
    buffer.reset()
    buffer.observations[:], buffer.actions[:] = obs.numpy()[:, None], actions.numpy()[:, None]
    buffer.advantages[:], buffer.log_probs[:] = advantages.numpy()[:, None], logprob.numpy()[:, None]
    buffer.returns[:], buffer.values[:] = 0.0, 0.0
    buffer.full, buffer.pos = True, batch
    before = agent.actor_logstd.detach().clone()
    peer.train()  # sb3-contrib normalizes the advantages itself
    stats = trpo.trpo_step(agent, obs, actions, (advantages - advantages.mean()) / (advantages.std() + 1e-8),
                           **trpo_step_settings(args))

    assert stats["charts/step_accepted"] == 1.0 and not torch.equal(agent.actor_logstd, before)  # a real step
    with torch.no_grad():
        pairs = [(t.weight, m.weight) for t, m in zip(theirs, ours)] + [(policy.log_std, agent.actor_logstd)]
        for their_param, our_param in pairs:
            assert ((their_param - our_param).norm() / their_param.norm()).item() < 1e-4
