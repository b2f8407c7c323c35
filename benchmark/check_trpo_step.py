"""Cross-check trpo.py's policy step against sb3-contrib's TRPO on one shared batch.

Both start from the same weights and take one update on the same observations, actions and
advantages. sb3-contrib averages the KL over action dimensions (Normal(...).mean() over a
(batch, act_dim) tensor) where trpo.py sums it, so its target_kl and cg_damping correspond to ours
multiplied by act_dim. With that scaling the updated actor weights must agree to float precision.

    python benchmark/check_trpo_step.py              # exits 1 if they differ by more than 1e-4
"""

from __future__ import annotations

import os
import sys
import warnings

import gymnasium as gym
import torch
from sb3_contrib import TRPO
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import DummyVecEnv

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import trpo  # ours


def main(batch: int = 2048, env_id: str = "Hopper-v4", tolerance: float = 1e-4) -> float:
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    torch.manual_seed(0)
    args = trpo.Args()
    env = DummyVecEnv([lambda: gym.make(env_id)])
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    peer = TRPO("MlpPolicy", env, n_steps=batch, batch_size=128, n_critic_updates=1, device="cpu",
                cg_max_steps=args.cg_iters, target_kl=args.max_kl / act_dim, cg_damping=args.cg_damping / act_dim,
                line_search_shrinking_factor=args.backtrack_coef, line_search_max_iter=args.line_search_steps,
                policy_kwargs={"net_arch": {"pi": [64, 64], "vf": [64, 64]}, "activation_fn": torch.nn.Tanh})
    peer.set_logger(configure(None, [""]))
    policy = peer.policy
    agent = trpo.Agent(obs_dim, act_dim)
    peer_layers = [m for m in policy.mlp_extractor.policy_net if isinstance(m, torch.nn.Linear)] + [policy.action_net]
    our_layers = [m for m in agent.actor_mean if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for theirs, mine in zip(peer_layers, our_layers):
            mine.weight.copy_(theirs.weight)
            mine.bias.copy_(theirs.bias)
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
    peer.train()
    trpo.trpo_step(agent, obs, actions, (advantages - advantages.mean()) / (advantages.std() + 1e-8), args)

    worst = 0.0
    with torch.no_grad():
        pairs = [(t.weight, m.weight) for t, m in zip(peer_layers, our_layers)] + [(policy.log_std, agent.actor_logstd)]
        for k, (theirs, mine) in enumerate(pairs):
            diff = ((theirs - mine).norm() / theirs.norm()).item()
            worst = max(worst, diff)
            print(f"parameter {k}: relative difference {diff:.2e}")
    print(f"largest relative difference {worst:.2e} ({'ok' if worst <= tolerance else 'MISMATCH'})")
    return worst


if __name__ == "__main__":
    sys.exit(0 if main() <= 1e-4 else 1)
