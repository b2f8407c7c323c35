"""Deep Deterministic Policy Gradient (DDPG) for continuous actions, in one file.

DDPG learns a deterministic policy mu(s) and a Q function off-policy from a replay buffer. The
critic regresses Q(s, a) to the one-step target r + gamma (1 - terminated) Q'(s', mu'(s')) computed
with slowly moving target networks; the actor follows the deterministic policy gradient, i.e.
ascends Q(s, mu(s)). Exploration adds Gaussian (or Ornstein-Uhlenbeck) noise to mu(s); the first
`learning_starts` steps use uniform random actions.

Papers: Lillicrap et al. 2015, "Continuous control with deep reinforcement learning",
arXiv:1509.02971 (Algorithm 1: Eq. 4-6 critic target and loss, Eq. 6 / the "Update the actor
policy using the sampled policy gradient" line, soft target updates theta' <- tau theta + (1 - tau)
theta', OU exploration); Silver et al. 2014, "Deterministic Policy Gradient Algorithms", ICML
(Theorem 1, grad J = E[grad_a Q(s, a)|_{a=mu(s)} grad_theta mu(s)]). Network sizes, learning
rates, batch size, Gaussian noise and the 25k random steps follow Fujimoto et al. 2018,
arXiv:1802.09477 ("OurDDPG"). A time-limit truncation is stored as non-terminal with the true
final observation, so the target bootstraps there; a termination does not.

    python ddpg.py --env-id Pendulum-v1 --total-timesteps 20000 --learning-starts 1000
    python ddpg.py --env-id Hopper-v4
    python ddpg.py --env-id Hopper-v4 --checkpoint runs/<run>/best_model.pt
    python ddpg.py --env-id Hopper-v4 --init-checkpoint runs/<run>/model.pt --total-timesteps 500000
"""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import os
import pickle
import random
import sys
import time
import warnings
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial

import gymnasium as gym
import numpy as np
import torch
import tyro
from torch import nn
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

import hopper_envs  # noqa: F401  (registers the CustomHopper-* ids)

NOISES = ("gaussian", "ou")


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]  # name of this experiment, part of the run directory
    seed: int = 1  # seed of random, numpy, torch and the environment
    torch_deterministic: bool = True  # make torch use deterministic algorithms
    torch_threads: int = 1  # torch CPU threads
    env_id: str = "Hopper-v4"  # gymnasium id of an environment with a Box action space
    total_timesteps: int = 1_000_000  # total environment steps of training
    learning_rate: float = 3e-4  # Adam learning rate of actor and critic
    buffer_size: int = 1_000_000  # replay buffer capacity in transitions (allocated once)
    gamma: float = 0.99  # discount factor
    tau: float = 0.005  # target smoothing coefficient: theta' <- tau theta + (1 - tau) theta'
    batch_size: int = 256  # transitions per gradient step
    noise: str = "gaussian"  # exploration noise: gaussian (Fujimoto et al.) or ou (Ornstein-Uhlenbeck, Lillicrap)
    exploration_noise: float = 0.1
    """std of the Gaussian noise (or sigma of the OU process), as a fraction of the action half-range"""
    ou_theta: float = 0.15  # mean reversion of the OU noise (Lillicrap et al.: 0.15)
    learning_starts: int = 25_000  # uniform random actions and no updates for this many steps
    policy_frequency: int = 1  # update the actor and the targets every this many critic updates (1 = DDPG as published)
    log_dir: str = "runs"  # where run directories are created
    save_model: bool = True  # write model.pt into the run directory
    eval_episodes: int = 10  # deterministic evaluation episodes after training
    checkpoint: str | None = None  # load this model.pt and only evaluate it
    init_checkpoint: str | None = None
    """continue training from this model.pt (networks, optimizers, global step; replay_buffer.pt beside it if there)"""
    eval_freq: int = 50_000
    """environment steps between deterministic evaluations during training (0 = off); the best is kept"""
    periodic_eval_episodes: int = 10  # episodes of each evaluation during training
    capture_video: bool = False
    """record the evaluation episodes to <run>/videos (MP4; renders with MUJOCO_GL, default egl)"""
    progress: bool = True  # show a progress bar when stderr is a terminal
    cuda: bool = False
    """networks and updates on the GPU (torch.cuda); the environment and the replay buffer stay in CPU memory"""


def fail(message: str) -> None:
    """Print a one-line error and exit with status 2 (bad input)."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def check_range(args: Args, names: tuple[str, ...], ok: Callable[[float], bool], must: str) -> None:
    """Exit 2 unless ok(value) holds for each of these flags (nan fails every comparison, so it is refused)."""
    for name in names:
        if not ok(getattr(args, name)):
            fail(f"--{name.replace('_', '-')} must be {must}, got {getattr(args, name)} "
                 f"(the default is {Args.__dataclass_fields__[name].default})")


def make_env(env_id: str, render_mode: str | None = None) -> gym.Env:
    """One environment; raises gymnasium.error.Error for an unknown id."""
    return gym.make(env_id, render_mode=render_mode)


class ReplayBuffer:
    """Uniform replay of (s, a, r, s', terminated), preallocated numpy arrays of `capacity` rows.

    s' is the true next observation, also at a time-limit truncation (gymnasium's final
    observation), and terminated is False there, so the critic bootstraps. Once full, new
    transitions overwrite the oldest (a ring); memory never grows after construction.
    """
    FIELDS = ("obs", "actions", "rewards", "next_obs", "terminated")

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, rng: np.random.Generator):
        self.capacity, self.size, self.pos, self.rng = capacity, 0, 0, rng
        self.obs = np.zeros((capacity, obs_dim), dtype=np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), dtype=np.float32)
        self.actions = np.zeros((capacity, act_dim), dtype=np.float32)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.terminated = np.zeros(capacity, dtype=np.float32)

    def add(self, obs, action, reward: float, next_obs, terminated: bool) -> None:
        """Store one transition; obs, next_obs (obs_dim,), action (act_dim,)."""
        i = self.pos
        self.obs[i], self.actions[i], self.rewards[i], self.next_obs[i], self.terminated[i] = (
            obs, action, reward, next_obs, terminated)
        self.pos, self.size = (i + 1) % self.capacity, min(self.size + 1, self.capacity)

    def state(self) -> dict[str, torch.Tensor]:
        """The stored transitions, oldest first, as tensors (for replay_buffer.pt)."""
        order = np.roll(np.arange(self.size), -self.pos) if self.size == self.capacity else np.arange(self.size)
        return {k: torch.from_numpy(getattr(self, k)[order]) for k in self.FIELDS}

    def load(self, state: dict[str, torch.Tensor]) -> None:
        """Refill from state(); keeps the newest `capacity` transitions if there are more."""
        n = min(len(state["rewards"]), self.capacity)
        for k in self.FIELDS:
            getattr(self, k)[:n] = state[k][len(state[k]) - n:].numpy()
        self.size, self.pos = n, n % self.capacity

    def sample(self, batch_size: int) -> tuple[torch.Tensor, ...]:
        """batch_size transitions drawn uniformly with replacement: float32 tensors obs (B, obs_dim),
        actions (B, act_dim), rewards (B,), next_obs (B, obs_dim), terminated (B,) in {0, 1}."""
        idx = self.rng.integers(0, self.size, batch_size)
        return tuple(torch.from_numpy(getattr(self, k)[idx]) for k in self.FIELDS)


class Actor(nn.Module):
    """mu(s): 256-256 ReLU, tanh output scaled to the action bounds. (B, obs_dim) -> (B, act_dim)."""

    def __init__(self, obs_dim: int, act_dim: int, low: np.ndarray, high: np.ndarray):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(obs_dim, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                                 nn.Linear(256, act_dim), nn.Tanh())
        self.register_buffer("action_scale", torch.as_tensor((high - low) / 2, dtype=torch.float32))
        self.register_buffer("action_bias", torch.as_tensor((high + low) / 2, dtype=torch.float32))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs) * self.action_scale + self.action_bias


class Critic(nn.Module):
    """Q(s, a): 256-256 ReLU on the concatenated state and action. -> (B,)."""

    def __init__(self, obs_dim: int, act_dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(obs_dim + act_dim, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                                 nn.Linear(256, 1))

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, actions], 1)).squeeze(-1)


def td_target(rewards: torch.Tensor, terminated: torch.Tensor, next_q: torch.Tensor, gamma: float) -> torch.Tensor:
    """y = r + gamma (1 - terminated) Q'(s', mu'(s')) (Lillicrap et al. 2015, Algorithm 1).

    rewards, terminated (0/1), next_q: shape (B,); returns (B,), in reward units.
    """
    return rewards + gamma * (1.0 - terminated) * next_q


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """theta' <- tau theta + (1 - tau) theta' for every parameter (Lillicrap et al. 2015, Algorithm 1)."""
    for target_param, param in zip(target.parameters(), source.parameters()):
        target_param.lerp_(param, tau)  # theta' + tau (theta - theta')


def update(batch: tuple[torch.Tensor, ...], actor: Actor, critic: Critic, actor_target: Actor, critic_target: Critic,
           actor_optimizer: torch.optim.Optimizer, critic_optimizer: torch.optim.Optimizer, gamma: float, tau: float,
           update_actor: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One DDPG gradient step (Lillicrap et al. 2015, Algorithm 1, the lines after "Sample a random
    minibatch"): the critic, then, if update_actor, the actor and the two Polyak target updates.

    batch: (obs (B, obs_dim), actions (B, act_dim), rewards (B,), next_obs (B, obs_dim), terminated (B,)),
    as ReplayBuffer.sample returns it. Returns (critic loss, Q(s, a) (B,), actor loss or None), detached.
    """
    obs, actions, rewards, next_obs, terminated = batch
    with torch.no_grad():
        y = td_target(rewards, terminated, critic_target(next_obs, actor_target(next_obs)), gamma)
    q = critic(obs, actions)
    qf_loss = ((q - y) ** 2).mean()  # Eq. 4 of Lillicrap et al.
    critic_optimizer.zero_grad(set_to_none=True)
    qf_loss.backward()
    critic_optimizer.step()
    actor_loss = None
    if update_actor:
        # Deterministic policy gradient (Silver et al. 2014, Theorem 1): ascend Q(s, mu(s)) with the
        # critic just updated. autograd.grad asks only for the actor's gradients, so the critic's weight
        # gradients (a 256 x 256 matrix product per layer) are never computed.
        actor_loss = -critic(obs, actor(obs)).mean()
        params = list(actor.parameters())
        for p, g in zip(params, torch.autograd.grad(actor_loss, params)):
            p.grad = g
        actor_optimizer.step()
        soft_update(critic_target, critic, tau)
        soft_update(actor_target, actor, tau)
        actor_loss = actor_loss.detach()
    return qf_loss.detach(), q.detach(), actor_loss


@torch.inference_mode()
def explore(actor: Actor, obs: np.ndarray, noise: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """a_t = mu(s_t) + N_t clipped to the action box (Lillicrap et al. 2015, Algorithm 1, "Select action").

    obs: (obs_dim,) raw observation; noise: (act_dim,) in action units (N_t, already scaled to the
    action range); low, high: (act_dim,) the bounds. Returns (act_dim,) float64.
    """
    action = actor(torch.from_numpy(obs.astype(np.float32))[None].to(actor.action_scale.device))[0].cpu().numpy()
    return np.clip(action + noise, low, high)


class OUNoise:
    """Ornstein-Uhlenbeck process dx = theta (0 - x) dt + sigma sqrt(dt) N(0, 1), dt = 1e-2, per
    action dimension; temporally correlated exploration (Lillicrap et al. 2015, Section 7)."""

    def __init__(self, act_dim: int, theta: float, sigma: float, rng: np.random.Generator, dt: float = 1e-2):
        self.theta, self.sigma, self.dt, self.rng = theta, sigma, dt, rng
        self.x = np.zeros(act_dim)

    def reset(self) -> None:
        self.x[:] = 0.0

    def __call__(self) -> np.ndarray:
        noise = self.rng.standard_normal(self.x.shape)
        self.x += -self.theta * self.x * self.dt + self.sigma * np.sqrt(self.dt) * noise
        return self.x


@torch.inference_mode()
def evaluate(actor: Actor, env_id: str, seeds: range, video_dir: str | None = None) -> list[float]:
    """Returns of one noise-free episode of mu per env seed. Seeds: training uses seed, the
    evaluations during training seed + 2 * 10**6 + k, the final evaluation seed + 10**6 + k."""
    env = make_env(env_id, render_mode="rgb_array" if video_dir else None)
    if video_dir:
        env = gym.wrappers.RecordVideo(env, video_dir, episode_trigger=lambda k: True, disable_logger=True)
    returns, device = [], actor.action_scale.device
    for seed in seeds:
        obs, _ = env.reset(seed=seed)
        done, total = False, 0.0
        while not done:
            action = actor(torch.as_tensor(obs, dtype=torch.float32, device=device)[None])[0].cpu().numpy()
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return returns


def keep_best(best: dict, returns: list[float], global_step: int, state: Callable[[], dict], writer: SummaryWriter,
              path: str | None) -> dict:
    """Log one periodic deterministic evaluation (eval/* tags, x = global_step) and return the best so far:
    {"best": state() (a checkpoint dict), "best_step", "best_periodic_mean"} if the mean of `returns` beats
    best["best_periodic_mean"] (then also saved to `path` unless it is None), else `best` unchanged."""
    mean = float(np.mean(returns))
    writer.add_scalar("eval/episodic_return", mean, global_step)
    writer.add_scalar("eval/episodic_return_std", np.std(returns), global_step)
    if mean <= best["best_periodic_mean"]:
        return best
    best = {"best": state(), "best_step": global_step, "best_periodic_mean": mean}
    if path:
        torch.save(best["best"], path)
    return best


def check_args(args: Args) -> tuple[gym.spaces.Box, gym.spaces.Box]:
    """Exit 2 on bad input before anything is written; returns the env's observation and action spaces."""
    check_range(args, ("seed",), lambda v: 0 <= v < 2**32, "in [0, 2**32)")
    check_range(args, ("learning_rate", "ou_theta"), lambda v: 0 < v < math.inf, "a finite number > 0")
    check_range(args, ("gamma",), lambda v: 0 <= v <= 1, "in [0, 1]")
    check_range(args, ("tau",), lambda v: 0 < v <= 1, "in (0, 1]")
    check_range(args, ("exploration_noise",), lambda v: 0 <= v < math.inf, "a finite number >= 0")
    check_range(args, ("total_timesteps", "buffer_size", "batch_size", "policy_frequency", "torch_threads",
                       "periodic_eval_episodes"),
                lambda v: v > 0, "a whole number > 0")
    check_range(args, ("learning_starts", "eval_episodes", "eval_freq"), lambda v: v >= 0, "a whole number >= 0")
    if args.noise not in NOISES:
        fail(f"unknown noise {args.noise!r} (choose one of {', '.join(NOISES)})")
    if args.cuda and not torch.cuda.is_available():
        fail("--cuda: torch sees no CUDA device (drop --cuda, or install a CUDA build of torch)")
    if args.checkpoint and args.init_checkpoint:
        fail("--checkpoint evaluates, --init-checkpoint trains on (give one of them)")
    for path in (args.checkpoint, args.init_checkpoint):
        if path and not os.path.isfile(path):
            fail(f"cannot load checkpoint {path}: no such file (pass a model.pt written by this script)")
    if os.path.exists(args.log_dir) and not os.path.isdir(args.log_dir):
        fail(f"--log-dir {args.log_dir} is a file (pass a directory)")
    with warnings.catch_warnings():  # a probe only; the training env warns about old versions itself
        warnings.simplefilter("ignore")
        try:  # gymnasium.make("my_module:MyEnv-v0") imports my_module first, which registers MyEnv-v0
            env = make_env(args.env_id)
        except (ImportError, gym.error.Error) as e:  # unknown id or module, a missing dependency of the env
            fail(f"cannot make --env-id {args.env_id}: {str(e).splitlines()[0]} (see gymnasium.registry for the "
                 "installed ids; the module of a my_module:MyEnv-v0 id must be on PYTHONPATH)")
    obs_space, act_space = env.observation_space, env.action_space
    env.close()
    if not isinstance(act_space, gym.spaces.Box) or len(act_space.shape) != 1:
        fail(f"{args.env_id} has a {type(act_space).__name__} action space (this script needs a continuous Box)")
    if not (np.isfinite(act_space.low).all() and np.isfinite(act_space.high).all()):
        fail(f"{args.env_id} has unbounded actions (the tanh actor needs finite bounds)")
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
        fail(f"{args.env_id} has observations {obs_space} (this script needs a flat Box)")
    if args.capture_video:
        if importlib.util.find_spec("moviepy") is None:
            fail("--capture-video needs moviepy (pip install -r requirements.txt)")
        os.environ.setdefault("MUJOCO_GL", "egl")  # off-screen rendering; works without a display
    return obs_space, act_space


NETWORKS = ("actor", "critic", "actor_target", "critic_target")


def make_networks(obs_space: gym.spaces.Box, act_space: gym.spaces.Box, device: torch.device) -> dict[str, nn.Module]:
    """Actor, critic and their target copies (which take no gradients) on `device`, keyed by NETWORKS."""
    obs_dim, act_dim = obs_space.shape[0], act_space.shape[0]
    actor = Actor(obs_dim, act_dim, act_space.low, act_space.high).to(device)
    critic = Critic(obs_dim, act_dim).to(device)
    actor_target, critic_target = copy.deepcopy(actor), copy.deepcopy(critic)
    for p in (*actor_target.parameters(), *critic_target.parameters()):
        p.requires_grad_(False)
    return dict(zip(NETWORKS, (actor, critic, actor_target, critic_target)))


def load_checkpoint(path: str, networks: dict[str, nn.Module], training: bool) -> dict:
    """Load a model.pt / best_model.pt of this script into `networks` (name -> module, see NETWORKS)
    and return it; exits 2 if unreadable, if a network's shapes differ, or if `training` and it
    lacks the optimizer state."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)  # a GPU run's file loads anywhere
        shapes = {name: {k: tuple(v.shape) for k, v in checkpoint[name].items()} for name in networks}
    except (OSError, RuntimeError, KeyError, TypeError, AttributeError, pickle.UnpicklingError) as e:
        fail(f"cannot load checkpoint {path}: {str(e).splitlines()[0]} (pass a model.pt written by this script)")
    if shapes != {name: {k: tuple(v.shape) for k, v in net.state_dict().items()} for name, net in networks.items()}:
        fail(f"checkpoint {path} does not match the env's observation/action sizes (pass a model.pt trained on "
             "an env with the same spaces)")
    if training and not {"actor_optimizer", "critic_optimizer", "global_step"} <= set(checkpoint):
        fail(f"checkpoint {path} has no optimizer state (continue from a model.pt written by this version)")
    for name, net in networks.items():
        net.load_state_dict(checkpoint[name])
    return checkpoint


def restore_training(checkpoint: dict, path: str, actor_optimizer: torch.optim.Optimizer,
                     critic_optimizer: torch.optim.Optimizer, replay_buffer: ReplayBuffer,
                     learning_starts: int) -> tuple[int, int]:
    """Continue from a model.pt at `path`: the optimizers' state, and replay_buffer.pt beside it if there.

    Returns (first_step, updates_after): the checkpoint's global step, and the step after which updates
    resume; without a saved buffer, the loaded policy (with noise, not uniform actions) first collects
    learning_starts transitions to replay.
    """
    actor_optimizer.load_state_dict(checkpoint["actor_optimizer"])
    critic_optimizer.load_state_dict(checkpoint["critic_optimizer"])
    first_step = int(checkpoint["global_step"])
    buffer_path = os.path.join(os.path.dirname(path), "replay_buffer.pt")
    if not os.path.isfile(buffer_path):
        return first_step, first_step + learning_starts
    replay_buffer.load(torch.load(buffer_path, map_location="cpu", weights_only=True))
    return first_step, first_step


def train(args: Args, networks: dict[str, nn.Module], writer: SummaryWriter, run_dir: str, resume: dict | None) -> dict:
    """DDPG's loop (Lillicrap et al. 2015, Algorithm 1) for args.total_timesteps steps, from `resume`
    (a checkpoint dict, its replay_buffer.pt too if given) if given. Updates the networks in place.

    Returns {"global_step", "train_returns" (the last 100), "replay_buffer", "best" (checkpoint dict of
    the best periodic evaluation, or None), "best_step", "best_periodic_mean"}.
    """
    actor, critic, actor_target, critic_target = (networks[k] for k in NETWORKS)
    env = gym.wrappers.RecordEpisodeStatistics(make_env(args.env_id))
    env.action_space.seed(args.seed)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    low, high = env.action_space.low, env.action_space.high
    device = actor.action_scale.device
    rng = np.random.default_rng(args.seed)
    replay_buffer = ReplayBuffer(args.buffer_size, obs_dim, act_dim, rng)
    actor_optimizer = torch.optim.Adam(actor.parameters(), lr=args.learning_rate, fused=True)
    critic_optimizer = torch.optim.Adam(critic.parameters(), lr=args.learning_rate, fused=True)
    first_step, updates_after = 0, args.learning_starts
    if resume:
        first_step, updates_after = restore_training(resume, args.init_checkpoint, actor_optimizer, critic_optimizer,
                                                     replay_buffer, args.learning_starts)
    half_range = (high - low) / 2
    ou = OUNoise(act_dim, args.ou_theta, args.exploration_noise, rng) if args.noise == "ou" else None
    final_step = first_step + args.total_timesteps
    train_returns: deque[float] = deque(maxlen=100)
    best = {"best": None, "best_step": None, "best_periodic_mean": -math.inf}
    periodic_seeds = range(args.seed + 2 * 10**6, args.seed + 2 * 10**6 + args.periodic_eval_episodes)

    def checkpoint_state(global_step: int) -> dict:
        """Tensors and plain values only: networks, optimizers, global step, args."""
        return copy.deepcopy({**{k: networks[k].state_dict() for k in NETWORKS}, "args": asdict(args),
                              "actor_optimizer": actor_optimizer.state_dict(), "global_step": global_step,
                              "critic_optimizer": critic_optimizer.state_dict()})

    start, qf_loss, actor_loss = time.time(), None, None
    obs, _ = env.reset(seed=args.seed)
    bar = tqdm(total=args.total_timesteps, disable=not (args.progress and sys.stderr.isatty()), unit="step")
    for global_step in range(first_step + 1, final_step + 1):
        if not resume and global_step <= args.learning_starts:
            action = env.action_space.sample()
        else:
            noise = ou() if ou else rng.normal(0.0, args.exploration_noise, act_dim)
            action = explore(actor, obs, noise * half_range, low, high)
        next_obs, reward, terminated, truncated, info = env.step(action)
        # next_obs is the true last observation even at a truncation (a single env does not autoreset).
        replay_buffer.add(obs, action, reward, next_obs, terminated)
        obs = next_obs
        if terminated or truncated:
            train_returns.append(float(info["episode"]["r"]))
            writer.add_scalar("charts/episodic_return", info["episode"]["r"], global_step)
            writer.add_scalar("charts/episodic_length", info["episode"]["l"], global_step)
            obs, _ = env.reset()
            if ou:
                ou.reset()

        if global_step > updates_after:
            batch = tuple(x.to(device) for x in replay_buffer.sample(args.batch_size))
            qf_loss, q, loss = update(batch, actor, critic, actor_target, critic_target,
                                      actor_optimizer, critic_optimizer, args.gamma, args.tau,
                                      update_actor=global_step % args.policy_frequency == 0)
            actor_loss = loss if loss is not None else actor_loss

        if global_step % 1000 == 0 or global_step == final_step:
            sps = int((global_step - first_step) / (time.time() - start))
            scalars = {"charts/SPS": sps, "charts/learning_rate": args.learning_rate}
            if qf_loss is not None:
                scalars |= {"losses/qf_loss": qf_loss.item(), "losses/qf_values": q.mean().item()}
            if actor_loss is not None:
                scalars["losses/actor_loss"] = actor_loss.item()
            for tag, value in scalars.items():
                writer.add_scalar(tag, value, global_step)
            bar.update(1000 if global_step % 1000 == 0 else global_step % 1000)
            bar.set_postfix(SPS=sps, ret=f"{train_returns[-1]:.0f}" if train_returns else "-")
        if args.eval_freq and (global_step % args.eval_freq == 0 or global_step == final_step):
            eval_returns = evaluate(actor, args.env_id, periodic_seeds)
            best = keep_best(best, eval_returns, global_step, partial(checkpoint_state, global_step), writer,
                             os.path.join(run_dir, "best_model.pt") if args.save_model else None)
    bar.close()
    env.close()
    if args.save_model:  # the buffer is data, not policy: it goes with the last model only
        torch.save(checkpoint_state(final_step), os.path.join(run_dir, "model.pt"))
        torch.save(replay_buffer.state(), os.path.join(run_dir, "replay_buffer.pt"))
    return {"global_step": final_step, "train_returns": list(train_returns), "replay_buffer": replay_buffer, **best}


def main(args: Args) -> dict:
    obs_space, act_space = check_args(args)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    if args.cuda and args.torch_deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # what deterministic cuBLAS requires
    torch.use_deterministic_algorithms(args.torch_deterministic)
    torch.set_num_threads(args.torch_threads)
    device = torch.device("cuda" if args.cuda else "cpu")
    networks = make_networks(obs_space, act_space, device)
    actor = networks["actor"]
    checkpoint = None
    if args.checkpoint:
        checkpoint = load_checkpoint(args.checkpoint, {"actor": actor}, training=False)
    elif args.init_checkpoint:
        checkpoint = load_checkpoint(args.init_checkpoint, networks, training=True)

    run_name = f"{args.env_id.rpartition(':')[2]}__{args.exp_name}__{args.seed}__{int(time.time())}"
    run_dir = os.path.join(args.log_dir, run_name)
    writer = SummaryWriter(run_dir)
    table = "\n".join(f"|{k}|{v}|" for k, v in asdict(args).items())
    writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + table)
    start = time.time()
    if args.checkpoint:
        trained = {"global_step": int(checkpoint.get("global_step", 0)), "train_returns": [], "best": None}
    else:
        trained = train(args, networks, writer, run_dir, checkpoint)

    final_seeds = range(args.seed + 10**6, args.seed + 10**6 + args.eval_episodes)  # the same for both models
    returns = evaluate(actor, args.env_id, final_seeds, os.path.join(run_dir, "videos") if args.capture_video else None)
    if args.checkpoint and returns:
        writer.add_scalar("eval/episodic_return", np.mean(returns), trained["global_step"])
        writer.add_scalar("eval/episodic_return_std", np.std(returns), trained["global_step"])
    result = {
        "env_id": args.env_id, "episodes": len(returns), "returns": returns,
        "mean": float(np.mean(returns)) if returns else None, "std": float(np.std(returns)) if returns else None,
        "train_return_last100": float(np.mean(trained["train_returns"])) if trained["train_returns"] else None,
        "global_step": trained["global_step"], "wall_seconds": time.time() - start,
        "checkpoint": args.checkpoint or args.init_checkpoint, "best_model": None,
    }
    if trained["best"]:
        best_actor = make_networks(obs_space, act_space, device)["actor"]
        best_actor.load_state_dict(trained["best"]["actor"])
        best_returns = evaluate(best_actor, args.env_id, final_seeds)
        result["best_model"] = {
            "global_step": trained["best_step"], "periodic_eval_mean": trained["best_periodic_mean"],
            "returns": best_returns, "mean": float(np.mean(best_returns)) if best_returns else None,
            "std": float(np.std(best_returns)) if best_returns else None}
    with open(os.path.join(run_dir, "eval.json"), "w") as f:
        json.dump(result, f, indent=2)
    writer.close()
    print(f"{run_dir}: eval return {result['mean']} +- {result['std']} over {len(returns)} episodes"
          + (f"; best model (step {trained['best_step']}): {result['best_model']['mean']}" if trained["best"] else ""))
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))
