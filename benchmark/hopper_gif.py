"""Render one deterministic episode of a trained ppo_continuous.py model to a small GIF (for the README).

    python benchmark/hopper_gif.py --checkpoint runs/<run>/model.pt --out benchmark/results/ppo/ppo-Hopper-v4.gif
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
import tyro
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ppo_continuous as ppo


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


@torch.inference_mode()
def main(args: Args) -> None:
    os.environ.setdefault("MUJOCO_GL", "egl")
    # "track": the camera that hopper.xml attaches to the torso, so the robot stays in frame
    env = gym.make(args.env_id, render_mode="rgb_array", width=args.size, height=args.size, camera_name="track")
    agent, obs_rms = ppo.load_checkpoint(args.checkpoint, env.observation_space.shape[0], env.action_space.shape[0])
    obs, _ = env.reset(seed=args.seed)
    frames = []
    for step in range(args.steps):
        if step % args.every == 0:
            frames.append(Image.fromarray(env.render().copy()))  # the renderer reuses its buffer
        action = agent.actor_mean(ppo.normalize_obs(obs[None], obs_rms))[0].numpy()
        obs, _, terminated, truncated, _ = env.step(np.clip(action, env.action_space.low, env.action_space.high))
        if terminated or truncated:
            break
    frame_ms = round(1000 * env.unwrapped.dt * args.every)
    frames[0].save(args.out, save_all=True, append_images=frames[1:], duration=frame_ms, loop=0, optimize=True)
    print(f"{args.out}: {len(frames)} frames, {os.path.getsize(args.out) / 1e6:.2f} MB")


if __name__ == "__main__":
    main(tyro.cli(Args))
