"""PointGoal: a point on a plane steered towards a goal, registered as a gymnasium environment.

The smallest environment the tutorial in docs/your_own_environment.md needs: a Box observation
(the point's position and the goal's, 4 numbers), a Box action (a velocity in [-1, 1]^2), a reward
and a time limit. Importing this module registers it, as hopper_envs.py registers the custom Hoppers,
so any script of this project trains on it with

    PYTHONPATH=docs python ppo_continuous.py --env-id point_goal:PointGoal-v0 --total-timesteps 50000
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np


class PointGoalEnv(gym.Env):
    """Move a point in the square [-1, 1]^2 to a goal drawn at every reset.

    Observation: (x, y, goal_x, goal_y). Action: a velocity (vx, vy) in [-1, 1]^2; the point moves by
    0.1 x velocity per step and stays in the square. Reward: minus the distance to the goal after the
    step, so the return of an episode is larger the faster the point gets there and stays. The episode
    never terminates; the TimeLimit of its registration truncates it after 50 steps.
    """

    def __init__(self, render_mode: str | None = None):
        self.observation_space = gym.spaces.Box(-1.0, 1.0, shape=(4,), dtype=np.float64)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.render_mode = render_mode

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)  # seeds self.np_random
        self.point = self.np_random.uniform(-1.0, 1.0, size=2)
        self.goal = self.np_random.uniform(-1.0, 1.0, size=2)
        return np.concatenate([self.point, self.goal]), {}

    def step(self, action):
        velocity = np.clip(action, -1.0, 1.0)
        self.point = np.clip(self.point + 0.1 * velocity, -1.0, 1.0)
        distance = float(np.linalg.norm(self.point - self.goal))
        return np.concatenate([self.point, self.goal]), -distance, False, False, {"distance": distance}


gym.register(id="PointGoal-v0", entry_point=PointGoalEnv, max_episode_steps=50)
