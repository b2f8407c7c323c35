"""Render one deterministic episode of a trained ppo_continuous.py model to a small GIF (for the README).

It reads the policy from the checkpoint file alone (the actor's weights and the observation statistics),
as benchmark/ reaches every script only through its command line and the files it writes.

    python benchmark/hopper_gif.py --checkpoint runs/<run>/model.pt --out benchmark/results/ppo/ppo-Hopper-v4.gif
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
import tyro
from PIL import Image


@dataclass
class Args:
    checkpoint: str
    """model.pt written by ppo_continuous.py"""
    out: str = "benchmark/results/ppo/ppo-Hopper-v4.gif"
    """GIF to write"""
    env_id: str = "Hopper-v4"
    """environment the model was trained on"""
    seed: int = 1
    """episode seed"""
    steps: int = 400
    """steps to render (Hopper: 125 steps per simulated second)"""
    every: int = 4
    """keep every n-th frame"""
    size: int = 200
    """frame width and height in pixels"""


def deterministic_policy(path: str):
    """The mean action of a ppo_continuous.py model.pt: obs (obs_dim,) raw -> action (act_dim,), no clipping.

    Normalizes with the saved statistics, clip((obs - mean) / sqrt(var + 1e-8), -10, 10), then runs the
    actor's Linear layers (actor_mean.<i>.weight / .bias) with tanh between them."""
    checkpoint = torch.load(path, weights_only=True)
    stats = {k: v.numpy() for k, v in checkpoint["obs_rms"].items()}
    weights = checkpoint["agent"]
    layers = sorted({int(k.split(".")[1]) for k in weights if k.startswith("actor_mean.")})

    def act(obs: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.clip((obs - stats["mean"]) / np.sqrt(stats["var"] + 1e-8), -10, 10).astype(np.float32))
        for n, i in enumerate(layers):
            x = torch.nn.functional.linear(x, weights[f"actor_mean.{i}.weight"], weights[f"actor_mean.{i}.bias"])
            x = torch.tanh(x) if n < len(layers) - 1 else x
        return x.numpy()
    return act


@torch.inference_mode()
def main(args: Args) -> None:
    os.environ.setdefault("MUJOCO_GL", "egl")
    # "track": the camera that hopper.xml attaches to the torso, so the robot stays in frame
    env = gym.make(args.env_id, render_mode="rgb_array", width=args.size, height=args.size, camera_name="track")
    policy = deterministic_policy(args.checkpoint)
    obs, _ = env.reset(seed=args.seed)
    frames = []
    for step in range(args.steps):
        if step % args.every == 0:
            frames.append(Image.fromarray(env.render().copy()))  # the renderer reuses its buffer
        obs, _, terminated, truncated, _ = env.step(np.clip(policy(obs), env.action_space.low, env.action_space.high))
        if terminated or truncated:
            break
    frame_ms = round(1000 * env.unwrapped.dt * args.every)
    frames[0].save(args.out, save_all=True, append_images=frames[1:], duration=frame_ms, loop=0, optimize=True)
    print(f"{args.out}: {len(frames)} frames, {os.path.getsize(args.out) / 1e6:.2f} MB")


if __name__ == "__main__":
    main(tyro.cli(Args))
