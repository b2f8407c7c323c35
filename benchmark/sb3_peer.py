"""The Stable-Baselines3 peer of one of our scripts, with the same settings, for benchmark/run.py.

Writes into --log-dir: monitor.csv (SB3's Monitor: one row per training episode, raw return r and
length l) and eval.json in our scripts' format (deterministic evaluation with frozen observation
normalization on seeds seed + 10**6 + k, training SPS = steps / seconds spent in learn()).

    python benchmark/sb3_peer.py --algo ppo --env-id Hopper-v4 --seed 1 --log-dir /tmp/peer
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import tyro
from sb3_contrib import TRPO
from stable_baselines3 import A2C, DDPG, PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.noise import NormalActionNoise
from stable_baselines3.common.vec_env import SubprocVecEnv, VecNormalize


@dataclass
class Args:
    algo: Literal["ppo", "trpo", "a2c", "ddpg"] = "ppo"
    """which of our scripts to match"""
    env_id: str = "Hopper-v4"
    """gymnasium id"""
    seed: int = 1
    """seed of the model and the environments"""
    total_timesteps: int = 1_000_000
    """training steps"""
    eval_episodes: int = 10
    """deterministic evaluation episodes after training"""
    log_dir: str = "runs/sb3"
    """directory for monitor.csv and eval.json"""
    num_envs: int | None = None
    """environments (default: the matching script's default, NUM_ENVS)"""
    num_steps: int | None = None
    """steps per environment per rollout of ppo, trpo, a2c (default: the script's default, NUM_STEPS)"""
    vec_env: Literal["dummy", "subproc"] = "dummy"
    """DummyVecEnv steps the envs in this process (our --vector-env sync), SubprocVecEnv in worker processes
    (our --vector-env async)"""


# Our scripts' networks: separate 64-64 tanh actor and critic, orthogonal init, log-std 0.
POLICY = {"net_arch": {"pi": [64, 64], "vf": [64, 64]}, "activation_fn": torch.nn.Tanh, "log_std_init": 0.0,
          "ortho_init": True}
NUM_ENVS = {"ppo": 1, "trpo": 2, "a2c": 8, "ddpg": 1}  # as in each script's defaults
NUM_STEPS = {"ppo": 2048, "trpo": 1024, "a2c": 16}


def ppo(env, args: Args) -> PPO:
    """SB3 PPO with ppo_continuous.py's defaults: 2048 x 1 env, 10 epochs of 32 minibatches (64
    samples: the batch / 32 for other sizes), linear lr 3e-4 -> 0, gamma 0.99, lambda 0.95, clip 0.2
    for policy and value, no entropy bonus, vf_coef 0.5, grad norm 0.5, separate 64-64 tanh nets,
    orthogonal init, log-std 0."""
    n_steps = args.num_steps or NUM_STEPS["ppo"]
    return PPO("MlpPolicy", env, n_steps=n_steps, batch_size=n_steps * env.num_envs // 32, n_epochs=10,
               learning_rate=lambda f: 3e-4 * f, gamma=0.99, gae_lambda=0.95, clip_range=0.2, clip_range_vf=0.2,
               ent_coef=0.0, vf_coef=0.5, max_grad_norm=0.5, seed=args.seed, device="cpu", policy_kwargs=POLICY)


def trpo(env, args: Args) -> TRPO:
    """sb3-contrib TRPO with trpo.py's defaults: 1024 x 2 envs, 10 CG iterations, line search of 10
    steps x 0.8, value fn: 20 epochs of 16 minibatches (128: the batch / 16 for other sizes), Adam lr
    1e-3, gamma 0.99, lambda 0.95, normalized advantages, separate 64-64 tanh nets, log-std 0.
    sb3-contrib averages the KL over action dimensions where trpo.py sums it, so trpo.py's max_kl
    0.03 and damping 0.3 are its target_kl and cg_damping times act_dim (tests/test_trpo_vs_sb3.py
    checks the equivalence)."""
    act_dim = env.action_space.shape[0]
    n_steps = args.num_steps or NUM_STEPS["trpo"]
    return TRPO("MlpPolicy", env, n_steps=n_steps, batch_size=n_steps * env.num_envs // 16, learning_rate=1e-3,
                gamma=0.99, gae_lambda=0.95, cg_max_steps=10, cg_damping=0.3 / act_dim,
                line_search_shrinking_factor=0.8, line_search_max_iter=10, n_critic_updates=20,
                target_kl=0.03 / act_dim, normalize_advantage=True, seed=args.seed, device="cpu", policy_kwargs=POLICY)


def a2c(env, args: Args) -> A2C:
    """SB3 A2C with a2c.py's defaults: 16 steps x 8 envs per update, RMSprop (alpha 0.99, eps 1e-5),
    linear lr 7e-4 -> 0, gamma 0.99, lambda 1 (n-step returns), no advantage normalization, no
    entropy bonus, vf_coef 0.5, grad norm 0.5, separate 64-64 tanh nets, orthogonal init, log-std 0."""
    return A2C("MlpPolicy", env, n_steps=args.num_steps or NUM_STEPS["a2c"], learning_rate=lambda f: 7e-4 * f,
               gamma=0.99, gae_lambda=1.0,
               ent_coef=0.0, vf_coef=0.5, max_grad_norm=0.5, use_rms_prop=True, rms_prop_eps=1e-5,
               normalize_advantage=False, seed=args.seed, device="cpu", policy_kwargs=POLICY)


def ddpg(env, args: Args) -> DDPG:
    """SB3 DDPG with ddpg.py's defaults: 256-256 ReLU actor and critic, Adam lr 3e-4, batch 256,
    buffer 1M, 25k random steps, one gradient step per env step, tau 0.005, gamma 0.99, Gaussian
    noise of std 0.1 x the action half-range; no observation or reward normalization."""
    half_range = (env.action_space.high - env.action_space.low) / 2
    noise = NormalActionNoise(np.zeros_like(half_range), 0.1 * half_range)
    return DDPG("MlpPolicy", env, learning_rate=3e-4, buffer_size=1_000_000, learning_starts=25_000, batch_size=256,
                tau=0.005, gamma=0.99, train_freq=1, gradient_steps=1, action_noise=noise, seed=args.seed, device="cpu",
                policy_kwargs={"net_arch": [256, 256]})


def main(args: Args) -> None:
    if min(args.num_envs or 1, args.num_steps or 1) < 1 or (args.algo == "ddpg" and args.num_steps):
        print("error: --num-envs and --num-steps must be >= 1, and ddpg takes no --num-steps (drop it)",
              file=sys.stderr)
        sys.exit(2)
    torch.set_num_threads(1)  # as our scripts do
    os.makedirs(args.log_dir, exist_ok=True)
    env = make_vec_env(args.env_id, n_envs=args.num_envs or NUM_ENVS[args.algo], seed=args.seed,
                       monitor_dir=args.log_dir, vec_env_cls=SubprocVecEnv if args.vec_env == "subproc" else None)
    normalize = args.algo != "ddpg"  # ddpg.py normalizes neither observations nor rewards
    if normalize:
        env = VecNormalize(env, gamma=0.99, clip_obs=10.0, clip_reward=10.0)
    model = {"ppo": ppo, "trpo": trpo, "a2c": a2c, "ddpg": ddpg}[args.algo](env, args)
    start = time.time()
    model.learn(total_timesteps=args.total_timesteps)
    train_seconds = time.time() - start

    eval_env = make_vec_env(args.env_id, n_envs=1)
    if normalize:
        eval_env = VecNormalize(eval_env, training=False, norm_reward=False)
        eval_env.obs_rms = env.obs_rms  # frozen training statistics
    returns = []
    for k in range(args.eval_episodes):
        eval_env.seed(args.seed + 10**6 + k)
        obs, done, total = eval_env.reset(), False, 0.0
        while not done:
            action, _ = model.predict(obs, deterministic=True)
            obs, reward, dones, _ = eval_env.step(action)
            total, done = total + float(reward[0]), bool(dones[0])
        returns.append(total)
    result = {"env_id": args.env_id, "episodes": len(returns), "returns": returns,
              "mean": float(np.mean(returns)) if returns else None, "std": float(np.std(returns)) if returns else None,
              "global_step": int(model.num_timesteps), "sps": model.num_timesteps / train_seconds,
              "wall_seconds": time.time() - start}
    with open(os.path.join(args.log_dir, "eval.json"), "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main(tyro.cli(Args))
