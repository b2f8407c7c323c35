"""Where ddpg.py's time goes: milliseconds per environment step, per actor inference and per gradient
step (ddpg.update, batch 256), and torch.profiler's table of the operators inside ddpg.update.

After learning_starts, every DDPG step is one env step + one actor inference + one update, so
these three numbers bound the SPS of a 1M-step run. `--bf16` also times the update under CPU
bfloat16 autocast (a what-if: ddpg.py does not use it, it changes the numerics).

    python benchmark/profile_ddpg.py --env-id Hopper-v4
"""

from __future__ import annotations

import copy
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
import tyro
from torch.profiler import profile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ddpg


@dataclass
class Args:
    env_id: str = "Hopper-v4"
    updates: int = 300
    """timed gradient steps per measurement"""
    repeats: int = 3
    """measurements; the table shows the fastest"""
    batch_size: int = 256
    threads: int = 1
    """torch CPU threads (ddpg.py's default is 1)"""
    bf16: bool = False
    """also time the update under bfloat16 autocast"""


def per_call_ms(fn, calls: int, repeats: int) -> float:
    """Fastest of `repeats` timings of `calls` calls of fn, in milliseconds per call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls * 1e3)
    return best


def main(args: Args) -> None:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    env = ddpg.make_env(args.env_id)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    actor = ddpg.Actor(obs_dim, act_dim, env.action_space.low, env.action_space.high)
    critic = ddpg.Critic(obs_dim, act_dim)
    nets = (actor, critic, copy.deepcopy(actor).requires_grad_(False), copy.deepcopy(critic).requires_grad_(False))
    optimizers = [torch.optim.Adam(n.parameters(), lr=3e-4, fused=True) for n in nets[:2]]
    buffer = ddpg.ReplayBuffer(10_000, obs_dim, act_dim, np.random.default_rng(0))
    obs, _ = env.reset(seed=0)

    def env_step():
        nonlocal obs
        action = env.action_space.sample()
        next_obs, reward, terminated, truncated, _ = env.step(action)
        buffer.add(obs, action, reward, next_obs, terminated)
        obs = env.reset()[0] if terminated or truncated else next_obs

    def act():
        with torch.inference_mode():
            actor(torch.from_numpy(obs.astype(np.float32))[None])[0].numpy()

    def update():
        ddpg.update(buffer.sample(args.batch_size), *nets, *optimizers, gamma=0.99, tau=0.005)

    def update_bf16():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            update()

    rows = [("env step + buffer add", per_call_ms(env_step, 5000, args.repeats)),
            ("actor inference (1 obs)", per_call_ms(act, 2000, args.repeats)),
            ("ddpg.update (fp32)", per_call_ms(update, args.updates, args.repeats))]
    if args.bf16:
        rows.append(("ddpg.update (bf16 autocast)", per_call_ms(update_bf16, args.updates, args.repeats)))
    print(f"| {args.env_id}, batch {args.batch_size}, {args.threads} thread(s) | ms per call |\n|---|---|")
    for name, ms in rows:
        print(f"| {name} | {ms:.3f} |")
    with profile() as prof:
        for _ in range(args.updates):
            update()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main(tyro.cli(Args))
