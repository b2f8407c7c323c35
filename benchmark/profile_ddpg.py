"""Where ddpg.py's time goes: milliseconds per environment step, per actor inference and per gradient
step (ddpg.update, batch 256), the floating-point operations of each (torch's FlopCounterMode, matrix
products only) and the rate they run at, and torch.profiler's table of the operators inside ddpg.update.

After learning_starts, every DDPG step is one env step + one actor inference + one update, so
these three numbers bound the SPS of a 1M-step run. The row "reference: one 256 x 256 product" is a
bare matrix product of the update's most common shape: the rate this core reaches on it is the rate
an update made only of such products could reach, so the update's FLOPs / that rate is about the
shortest the update can take without doing fewer or cheaper operations. `--sb3` adds Stable-Baselines3
DDPG's gradient step with benchmark/sb3_peer.py's settings (the speed bar's peer); `--bf16` times
the update under CPU bfloat16 autocast (a what-if: ddpg.py does not use it, it changes the numerics).

    python benchmark/profile_ddpg.py --env-id Hopper-v4 --sb3
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
from torch.utils.flop_counter import FlopCounterMode

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
    sb3: bool = False
    """also time Stable-Baselines3 DDPG's gradient step (needs benchmark/requirements.txt)"""


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


def flops_of(fn) -> int:
    """Floating-point operations of one call of fn, as torch's FlopCounterMode counts them (matrix
    products and convolutions, forward and backward; 2 per multiply-add)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def sb3_update(env_id: str, batch_size: int):
    """One gradient step of Stable-Baselines3 DDPG built as benchmark/sb3_peer.py builds it (the
    settings of the speed comparison), its replay buffer holding 1000 random transitions.
    Exits with status 2 if Stable-Baselines3 is not installed."""
    try:
        import sb3_peer
        from stable_baselines3.common.env_util import make_vec_env
        from stable_baselines3.common.logger import configure
    except ImportError:
        sys.exit("error: --sb3 needs Stable-Baselines3: pip install -r benchmark/requirements.txt")
    env = make_vec_env(env_id, n_envs=1, seed=0)
    model = sb3_peer.ddpg(env, sb3_peer.Args(algo="ddpg", env_id=env_id, seed=0))
    model.set_logger(configure(None, []))  # train() records its losses; keep them in memory
    obs = env.reset()
    for _ in range(1000):
        action = np.array([env.action_space.sample()])
        next_obs, reward, done, info = env.step(action)
        model.replay_buffer.add(obs, next_obs, action, reward, done, info)
        obs = next_obs
    return lambda: model.train(gradient_steps=1, batch_size=batch_size)


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

    hidden = torch.randn(args.batch_size, 256), torch.randn(256, 256)

    def reference():
        torch.mm(*hidden)

    parts = [("env step + buffer add", env_step, 5000), ("actor inference (1 obs)", act, 2000),
             ("ddpg.update (fp32)", update, args.updates), ("reference: one 256 x 256 product", reference, 2000)]
    if args.bf16:
        parts.append(("ddpg.update (bf16 autocast)", update_bf16, args.updates))
    if args.sb3:
        parts.append(("SB3 DDPG train(gradient_steps=1)", sb3_update(args.env_id, args.batch_size), args.updates))
    print(f"| {args.env_id}, batch {args.batch_size}, {args.threads} thread(s) | ms per call | MFLOP per call "
          "| GFLOP/s |\n|---|---|---|---|")
    rate = {}
    for name, fn, calls in parts:
        ms, flops = per_call_ms(fn, calls, args.repeats), flops_of(fn)
        rate[name] = flops / ms / 1e6
        print(f"| {name} | {ms:.3f} | " + (f"{flops / 1e6:.1f} | {rate[name]:.1f} |" if flops else "0 | |"))
    share = rate["ddpg.update (fp32)"] / rate["reference: one 256 x 256 product"]
    print(f"\nddpg.update runs at {share:.0%} of the bare product's rate: if its every FLOP ran at that rate and "
          f"nothing else took time, it would be {1 / share:.2f}x faster.")
    with profile() as prof:
        for _ in range(args.updates):
            update()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main(tyro.cli(Args))
