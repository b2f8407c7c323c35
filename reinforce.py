"""REINFORCE: Monte-Carlo policy gradient, with an optional baseline, in one file.

The policy plays whole episodes; after every `episodes_per_update` of them it takes one gradient
step along sum_t grad log pi(a_t|s_t) Phi_t, where Phi_t is the discounted reward-to-go G_t, or G_t
minus a baseline: the batch mean of G, or a learned state value V(s_t) fitted by regression to G.
Box action spaces get a Gaussian policy, Discrete ones a Categorical. One environment: the batches
are whole episodes, so there is no vector env to keep in step.

Papers: Williams 1992, "Simple statistical gradient-following algorithms for connectionist
reinforcement learning", Machine Learning 8 (the REINFORCE estimator, Eq. 4 / Section 5);
Sutton & Barto 2018, "Reinforcement Learning: An Introduction", Section 13.3 (REINFORCE, Eq. 13.8)
and Section 13.4 (REINFORCE with baseline, Eq. 13.11); the reward-to-go form is Eq. 3.9's G_t.
As in most implementations (and unlike the pseudo-code of Section 13.3) the gamma^t factor in
front of each term is dropped: it would make steps late in an episode count for almost nothing.

    python reinforce.py --env-id CartPole-v1 --total-timesteps 100000
    python reinforce.py --env-id Hopper-v4 --baseline value
    python reinforce.py --env-id Hopper-v4 --checkpoint runs/<run>/best_model.pt
    python reinforce.py --env-id Hopper-v4 --init-checkpoint runs/<run>/model.pt --total-timesteps 500000
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
from typing import NamedTuple

import gymnasium as gym
import numpy as np
import torch
import tyro
from gymnasium.wrappers.utils import RunningMeanStd
from torch import nn
from torch.distributions import Categorical, Independent, Normal
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

import hopper_envs  # noqa: F401  (registers the CustomHopper-* ids)

BASELINES = ("none", "mean", "value")


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]  # name of this experiment, part of the run directory
    seed: int = 1  # seed of random, numpy, torch and the environment
    torch_deterministic: bool = True  # make torch use deterministic algorithms
    torch_threads: int = 1  # torch CPU threads; 1 is fastest for 64-unit networks
    env_id: str = "Hopper-v4"  # gymnasium id of an environment with a Box or Discrete action space
    total_timesteps: int = 1_000_000  # total environment steps of training
    learning_rate: float = 3e-3  # Adam learning rate of the policy (start value when annealed)
    anneal_lr: bool = True  # decay both learning rates linearly to 0 over training
    episodes_per_update: int = 5  # whole episodes per policy gradient step
    gamma: float = 0.99  # discount factor of the reward-to-go
    baseline: str = "value"  # subtracted from G_t: none, mean (of the batch), value (a learned V(s_t))
    vf_learning_rate: float = 1e-3  # Adam learning rate of the value function (baseline value)
    vf_epochs: int = 5  # epochs of value regression on each batch (baseline value)
    vf_minibatch_size: int = 256  # samples per value minibatch (baseline value)
    norm_adv: bool = True  # divide Phi_t by its batch std (scale only: the baseline decides what is subtracted)
    norm_obs: bool = True  # normalize observations with running statistics (frozen and saved for evaluation)
    norm_reward: bool = True  # scale rewards by the running std of the discounted return, then clip to +-10
    ent_coef: float = 0.0  # entropy bonus coefficient
    max_grad_norm: float = 0.5  # global gradient-norm clipping of each network's step
    log_dir: str = "runs"  # where run directories are created
    save_model: bool = True  # write model.pt into the run directory
    eval_episodes: int = 10  # deterministic evaluation episodes after training
    checkpoint: str | None = None  # load this model.pt and only evaluate it
    init_checkpoint: str | None = None
    """continue training from this model.pt: weights, normalization, optimizers, global step"""
    eval_freq: int = 50_000
    """environment steps between deterministic evaluations during training (0 = off); the best is kept"""
    periodic_eval_episodes: int = 10  # episodes of each evaluation during training
    capture_video: bool = False
    """record the evaluation episodes to <run>/videos (MP4; renders with MUJOCO_GL, default egl)"""
    progress: bool = True  # show a progress bar when stderr is a terminal
    cuda: bool = False  # networks and updates on the GPU (torch.cuda); the environments stay on the CPU


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


def layer_init(layer: nn.Linear, std: float = np.sqrt(2), bias_const: float = 0.0) -> nn.Linear:
    """Orthogonal weights with gain `std`, constant bias (Huang et al. 2022, detail 2)."""
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias_const)
    return layer


def normalize_obs(obs: np.ndarray, obs_rms: RunningMeanStd | None, clip: float = 10.0) -> torch.Tensor:
    """clip((obs - mean) / sqrt(var + 1e-8), -clip, clip) with the running statistics as they are.

    obs: (B, obs_dim) raw observations; returns a float32 tensor of the same shape (the raw
    observations if obs_rms is None). Never updates obs_rms.
    """
    if obs_rms is None:
        return torch.from_numpy(np.asarray(obs, dtype=np.float32))
    return torch.from_numpy(np.clip((obs - obs_rms.mean) / np.sqrt(obs_rms.var + 1e-8), -clip, clip).astype(np.float32))


def rms_to_tensors(obs_rms: RunningMeanStd) -> dict[str, torch.Tensor]:
    """The normalizer's mean (obs_dim,), var (obs_dim,) and count () as float64 tensors for model.pt."""
    return {k: torch.as_tensor(np.asarray(getattr(obs_rms, k), dtype=np.float64)) for k in ("mean", "var", "count")}


def rms_from_tensors(state: dict[str, torch.Tensor]) -> RunningMeanStd:
    """Inverse of rms_to_tensors."""
    obs_rms = RunningMeanStd(shape=tuple(state["mean"].shape))
    obs_rms.mean, obs_rms.var, obs_rms.count = state["mean"].numpy(), state["var"].numpy(), float(state["count"])
    return obs_rms


class Agent(nn.Module):
    """A 64-64 tanh policy (Gaussian with state-independent log-std, or Categorical) and a 64-64
    tanh value network, used only by --baseline value. Inputs: (normalized) obs of shape (B, obs_dim).
    """

    def __init__(self, obs_dim: int, act_dim: int, discrete: bool):
        super().__init__()
        self.discrete = discrete
        self.critic = nn.Sequential(
            layer_init(nn.Linear(obs_dim, 64)), nn.Tanh(),
            layer_init(nn.Linear(64, 64)), nn.Tanh(),
            layer_init(nn.Linear(64, 1), std=1.0),
        )
        self.actor = nn.Sequential(  # the Gaussian's mean, or the Categorical's logits
            layer_init(nn.Linear(obs_dim, 64)), nn.Tanh(),
            layer_init(nn.Linear(64, 64)), nn.Tanh(),
            layer_init(nn.Linear(64, act_dim), std=0.01),
        )
        self.actor_logstd = nn.Parameter(torch.zeros(0 if discrete else act_dim))

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        """V(s): (B, obs_dim) -> (B,)."""
        return self.critic(obs).squeeze(-1)

    def dist(self, obs: torch.Tensor) -> torch.distributions.Distribution:
        """pi(.|s) with batch shape (B,): log_prob(actions) and entropy() are (B,)."""
        out = self.actor(obs)
        if self.discrete:
            return Categorical(logits=out, validate_args=False)
        return Independent(Normal(out, self.actor_logstd.exp().expand_as(out), validate_args=False), 1)

    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """Actions for (B, obs_dim): (B,) int64 if discrete, else (B, act_dim) unclipped Gaussian samples.

        deterministic=True gives the mode: the mean action, or the most likely discrete action.
        """
        out = self.actor(obs)
        if self.discrete:
            return out.argmax(-1) if deterministic else torch.multinomial(out.softmax(-1), 1).squeeze(-1)
        return out if deterministic else torch.normal(out, self.actor_logstd.exp().expand_as(out))


def reward_to_go(rewards: torch.Tensor, gamma: float, bootstrap: float = 0.0) -> torch.Tensor:
    """Discounted reward-to-go of one episode: G_t = r_t + gamma G_{t+1}, with G_T = bootstrap.

    rewards: shape (T,), float32. bootstrap is 0 after a termination; after a time-limit
    truncation (or the end of the training budget) it is V(s_T) of the final observation when a
    value function is learned, 0 otherwise. Returns shape (T,), float32, in the rewards' units.
    Source: Sutton & Barto 2018, Eq. 3.9.
    """
    returns = torch.empty_like(rewards)
    running = float(bootstrap)
    for t in reversed(range(rewards.shape[0])):
        running = float(rewards[t]) + gamma * running
        returns[t] = running
    return returns


def policy_weights(returns: torch.Tensor, values: torch.Tensor | None, baseline: str, norm_adv: bool) -> torch.Tensor:
    """Phi_t, the weight of grad log pi(a_t|s_t) in the REINFORCE estimator.

    returns: G_t of a batch, shape (B,); values: V(s_t), shape (B,), needed for baseline "value".
    none: Phi = G (Williams 1992); mean: Phi = G - mean(G); value: Phi = G - V(s) (Sutton & Barto
    2018, Eq. 13.11). With norm_adv, Phi is then divided by its std (a step-size choice; the mean
    is left alone so that the three options stay different estimators). Raises ValueError for an
    unknown baseline or a missing value.
    """
    if baseline == "none":
        weights = returns
    elif baseline == "mean":
        weights = returns - returns.mean()
    elif baseline == "value":
        if values is None:
            raise ValueError("baseline 'value' needs the values V(s_t)")
        weights = returns - values
    else:
        raise ValueError(f"unknown baseline {baseline!r}, expected one of {BASELINES}")
    if norm_adv and weights.numel() > 1:
        weights = weights / (weights.std() + 1e-8)
    return weights


def reinforce_loss(dist: torch.distributions.Distribution, actions: torch.Tensor,
                   weights: torch.Tensor) -> torch.Tensor:
    """-mean_t[log pi(a_t|s_t) Phi_t], whose gradient is minus the REINFORCE estimate (per step).

    dist: pi(.|s_t) with batch shape (B,) (Agent.dist of the batch's observations), actions (B, ...)
    and weights Phi (B,), a constant. Williams 1992, Eq. 4.
    """
    return -(dist.log_prob(actions) * weights.detach()).mean()


class Batch(NamedTuple):
    """Whole episodes played by the current policy (Sutton & Barto 2018, Section 13.4: "Generate an
    episode"), B steps in all. obs: (B, obs_dim) normalized with the statistics as they were before
    the batch; raw_obs: the same, raw (numpy); actions: (B, act_dim) unclipped Gaussian samples or
    (B,) int64; returns: (B,) reward-to-go G_t (bootstrapped at a truncation, see reward_to_go);
    next_obs: the raw observation to go on from; episodes: (steps into the batch at its end, raw
    return, length) of each finished episode."""
    obs: torch.Tensor
    raw_obs: np.ndarray
    actions: torch.Tensor
    returns: torch.Tensor
    next_obs: np.ndarray
    episodes: list[tuple[int, float, int]]


@torch.no_grad()
def collect_episodes(env: gym.Env, agent: Agent, obs_rms: RunningMeanStd | None, obs: np.ndarray, episodes: int,
                     max_steps: int, gamma: float, use_value: bool) -> Batch:
    """Play `episodes` episodes from raw observation obs (or stop after max_steps steps); the
    normalization statistics stay fixed within the batch, so the stored observations are exactly
    the ones the policy saw (the caller updates obs_rms with raw_obs afterwards)."""
    raw_obs, batch_obs, batch_actions, batch_returns, finished, steps = [], [], [], [], [], 0
    device = next(agent.parameters()).device  # the batch is returned on the agent's device
    for _ in range(episodes):
        ep_obs, ep_actions, ep_rewards, done = [], [], [], False
        while not done and steps < max_steps:
            raw_obs.append(obs)
            normalized = normalize_obs(obs[None], obs_rms).to(device)
            action = agent.act(normalized)[0]
            ep_obs.append(normalized[0])
            ep_actions.append(action)
            action = action.cpu().numpy()
            obs, reward, terminated, truncated, info = env.step(
                action if agent.discrete else np.clip(action, env.action_space.low, env.action_space.high))
            ep_rewards.append(float(reward))
            steps += 1
            done = terminated or truncated
            if "episode" in info:
                finished.append((steps, float(info["episode"]["r"]), int(info["episode"]["l"])))
        # A termination ends the return; a truncation (time limit, or the budget running out)
        # only stops observing it: with a learned value the rest is estimated by V(s_T).
        bootstrap = 0.0
        if use_value and not terminated:
            bootstrap = float(agent.value(normalize_obs(obs[None], obs_rms).to(device))[0])
        batch_returns.append(reward_to_go(torch.tensor(ep_rewards), gamma, bootstrap).to(device))
        batch_obs.append(torch.stack(ep_obs))
        batch_actions.append(torch.stack(ep_actions))
        if done:
            obs, _ = env.reset()
        if steps >= max_steps:
            break
    return Batch(torch.cat(batch_obs), np.asarray(raw_obs), torch.cat(batch_actions), torch.cat(batch_returns),
                 obs, finished)


def reinforce_update(agent: Agent, optimizer: torch.optim.Optimizer, vf_optimizer: torch.optim.Optimizer,
                     batch: Batch, *, baseline: str, norm_adv: bool, ent_coef: float, max_grad_norm: float,
                     vf_epochs: int, vf_minibatch_size: int) -> dict[str, float]:
    """One policy-gradient step on Eq. 13.11 (Sutton & Barto 2018) with Phi from policy_weights, then,
    for baseline "value", vf_epochs of minibatch regression of V on G. Returns the logged statistics."""
    b_obs, b_actions, b_returns = batch.obs, batch.actions, batch.returns
    use_value = baseline == "value"
    with torch.no_grad():
        values = agent.value(b_obs) if use_value else None
        weights = policy_weights(b_returns, values, baseline, norm_adv)
    dist = agent.dist(b_obs)
    pg_loss = reinforce_loss(dist, b_actions, weights)
    old_logprob = dist.log_prob(b_actions).detach()
    entropy = dist.entropy().mean()
    optimizer.zero_grad()
    (pg_loss - ent_coef * entropy).backward()
    nn.utils.clip_grad_norm_(optimizer.param_groups[0]["params"], max_grad_norm)
    optimizer.step()

    v_losses = []
    if use_value:  # fit V to the Monte-Carlo returns by regression (Sutton & Barto, Section 13.4)
        for _ in range(vf_epochs):
            for mb in torch.randperm(len(b_returns), device=b_returns.device).split(vf_minibatch_size):
                v_loss = 0.5 * ((agent.value(b_obs[mb]) - b_returns[mb]) ** 2).mean()
                vf_optimizer.zero_grad()
                v_loss.backward()
                nn.utils.clip_grad_norm_(agent.critic.parameters(), max_grad_norm)
                vf_optimizer.step()
                v_losses.append(v_loss.item())
    with torch.no_grad():
        logratio = agent.dist(b_obs).log_prob(b_actions) - old_logprob
        approx_kl = float((logratio.exp() - 1 - logratio).mean())
    var_returns = float(b_returns.var()) if len(b_returns) > 1 else 0.0
    explained_var = (1 - float((b_returns - values).var()) / var_returns
                     if use_value and var_returns > 0 else float("nan"))
    return {"losses/policy_loss": pg_loss.item(), "losses/entropy": entropy.item(),
            "losses/value_loss": float(np.mean(v_losses)) if v_losses else float("nan"),
            "losses/approx_kl": approx_kl, "losses/explained_variance": explained_var}


@torch.inference_mode()
def evaluate(agent: Agent, obs_rms: RunningMeanStd | None, env_id: str, seeds: range,
             video_dir: str | None = None) -> list[float]:
    """Returns of one deterministic episode (mode of pi) per env seed, normalization frozen (obs_rms is
    read, never updated). Seeds: training uses seed, the evaluations during training
    seed + 2 * 10**6 + k, the final evaluation seed + 10**6 + k."""
    env = make_env(env_id, render_mode="rgb_array" if video_dir else None)
    if video_dir:
        env = gym.wrappers.RecordVideo(env, video_dir, episode_trigger=lambda k: True, disable_logger=True)
    returns = []
    for seed in seeds:
        obs, _ = env.reset(seed=seed)
        done, total = False, 0.0
        while not done:
            normalized = normalize_obs(obs[None], obs_rms).to(next(agent.parameters()).device)
            action = agent.act(normalized, deterministic=True)[0].cpu().numpy()
            if not agent.discrete:
                action = np.clip(action, env.action_space.low, env.action_space.high)
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


def check_args(args: Args) -> tuple[int, int, bool]:
    """Exit 2 on bad input before anything is written; returns (obs_dim, act_dim, discrete).

    act_dim is the number of actions of a Discrete space.
    """
    check_range(args, ("seed",), lambda v: 0 <= v < 2**32, "in [0, 2**32)")
    check_range(args, ("learning_rate", "vf_learning_rate", "max_grad_norm"),
                lambda v: 0 < v < math.inf, "a finite number > 0")
    check_range(args, ("gamma",), lambda v: 0 <= v <= 1, "in [0, 1]")
    check_range(args, ("ent_coef",), lambda v: 0 <= v < math.inf, "a finite number >= 0")
    check_range(args, ("total_timesteps", "episodes_per_update", "vf_epochs", "vf_minibatch_size", "torch_threads",
                       "periodic_eval_episodes"),
                lambda v: v > 0, "a whole number > 0")
    check_range(args, ("eval_episodes", "eval_freq"), lambda v: v >= 0, "a whole number >= 0")
    if args.baseline not in BASELINES:
        fail(f"unknown baseline {args.baseline!r} (choose one of {', '.join(BASELINES)})")
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
    if not isinstance(act_space, (gym.spaces.Box, gym.spaces.Discrete)) or (
            isinstance(act_space, gym.spaces.Box) and len(act_space.shape) != 1):
        fail(f"{args.env_id} has actions {act_space} (this script needs a flat Box or a Discrete space)")
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
        fail(f"{args.env_id} has observations {obs_space} (this script needs a flat Box)")
    if args.capture_video:
        if importlib.util.find_spec("moviepy") is None:
            fail("--capture-video needs moviepy (pip install -r requirements.txt)")
        os.environ.setdefault("MUJOCO_GL", "egl")  # off-screen rendering; works without a display
    discrete = isinstance(act_space, gym.spaces.Discrete)
    return obs_space.shape[0], int(act_space.n) if discrete else act_space.shape[0], discrete


def checkpoint_state(agent: Agent, obs_rms: RunningMeanStd | None, reward_rms: RunningMeanStd | None,
                     optimizers: tuple[torch.optim.Optimizer, torch.optim.Optimizer], global_step: int,
                     args: Args) -> dict:
    """What model.pt and best_model.pt hold (tensors and plain values only; an absent normalizer is
    {}): enough to evaluate the policy, or to continue training with --init-checkpoint."""
    return copy.deepcopy({"agent": agent.state_dict(), "obs_rms": rms_to_tensors(obs_rms) if obs_rms else {},
                          "reward_rms": rms_to_tensors(reward_rms) if reward_rms else {},
                          "optimizer": optimizers[0].state_dict(), "vf_optimizer": optimizers[1].state_dict(),
                          "global_step": global_step, "args": asdict(args)})


def load_checkpoint(path: str, obs_dim: int, act_dim: int, discrete: bool, training: bool) -> dict:
    """A model.pt / best_model.pt of this script as a dict; exits 2 if unreadable, if its networks do
    not fit (obs_dim, act_dim, discrete), or if `training` and it lacks the state to continue training."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)  # a GPU run's file loads anywhere
        shapes = {k: tuple(v.shape) for k, v in checkpoint["agent"].items()}
        obs_shape = tuple(checkpoint["obs_rms"]["mean"].shape) if checkpoint["obs_rms"] else (obs_dim,)
    except (OSError, RuntimeError, KeyError, TypeError, AttributeError, pickle.UnpicklingError) as e:
        fail(f"cannot load checkpoint {path}: {str(e).splitlines()[0]} (pass a model.pt written by this script)")
    expected = {k: tuple(v.shape) for k, v in Agent(obs_dim, act_dim, discrete).state_dict().items()}
    if shapes != expected or obs_shape != (obs_dim,):
        fail(f"checkpoint {path} does not match the env's observation/action sizes {obs_dim}, {act_dim} "
             "(pass a model.pt trained on an env with the same spaces)")
    if training and not {"optimizer", "vf_optimizer", "reward_rms", "global_step"} <= set(checkpoint):
        fail(f"checkpoint {path} has no optimizer state (continue from a model.pt written by this version)")
    return checkpoint


def train(args: Args, agent: Agent, obs_rms: RunningMeanStd | None, writer: SummaryWriter, run_dir: str,
          resume: dict | None) -> dict:
    """REINFORCE (Sutton & Barto 2018, Section 13.4 pseudo-code, batched over episodes) for
    args.total_timesteps env steps, from `resume` (a checkpoint dict) if given; updates agent and
    obs_rms in place, keeps the best evaluated policy.

    Returns {"global_step", "train_returns" (the last 100 raw training returns), "best" (the
    checkpoint dict of the best periodic evaluation, or None), "best_step", "best_periodic_mean"}.
    """
    env = gym.wrappers.RecordEpisodeStatistics(make_env(args.env_id))  # raw returns, before any scaling
    reward_normalizer = None
    if args.norm_reward:
        # divide by the running std of the discounted return
        reward_normalizer = env = gym.wrappers.NormalizeReward(env, gamma=args.gamma)
        env = gym.wrappers.TransformReward(env, lambda r: np.clip(r, -10, 10))
    optimizer = torch.optim.Adam([*agent.actor.parameters(), agent.actor_logstd], lr=args.learning_rate, eps=1e-5)
    vf_optimizer = torch.optim.Adam(agent.critic.parameters(), lr=args.vf_learning_rate, eps=1e-5)
    global_step = 0
    if resume:
        optimizer.load_state_dict(resume["optimizer"])
        vf_optimizer.load_state_dict(resume["vf_optimizer"])
        if reward_normalizer and resume["reward_rms"]:
            reward_normalizer.return_rms = rms_from_tensors(resume["reward_rms"])
        global_step = int(resume["global_step"])
    first_step, final_step = global_step, global_step + args.total_timesteps
    train_returns: deque[float] = deque(maxlen=100)
    best = {"best": None, "best_step": None, "best_periodic_mean": -math.inf}
    periodic_seeds = range(args.seed + 2 * 10**6, args.seed + 2 * 10**6 + args.periodic_eval_episodes)

    def state() -> dict:
        return checkpoint_state(agent, obs_rms, reward_normalizer.return_rms if reward_normalizer else None,
                                (optimizer, vf_optimizer), global_step, args)

    start = time.time()
    obs, _ = env.reset(seed=args.seed)
    bar = tqdm(total=args.total_timesteps, disable=not (args.progress and sys.stderr.isatty()), unit="step")
    while global_step < final_step:
        # Both learning rates anneal linearly to 0 at final_step; a continued run goes on from its step.
        frac = 1.0 - global_step / final_step if args.anneal_lr else 1.0
        optimizer.param_groups[0]["lr"] = frac * args.learning_rate
        vf_optimizer.param_groups[0]["lr"] = frac * args.vf_learning_rate
        batch = collect_episodes(env, agent, obs_rms, obs, args.episodes_per_update, final_step - global_step,
                                 args.gamma, args.baseline == "value")
        obs = batch.next_obs
        for steps, episodic_return, length in batch.episodes:
            train_returns.append(episodic_return)
            writer.add_scalar("charts/episodic_return", episodic_return, global_step + steps)
            writer.add_scalar("charts/episodic_length", length, global_step + steps)
        global_step += len(batch.returns)
        if obs_rms is not None:
            obs_rms.update(batch.raw_obs)
        stats = reinforce_update(agent, optimizer, vf_optimizer, batch, baseline=args.baseline, norm_adv=args.norm_adv,
                                 ent_coef=args.ent_coef, max_grad_norm=args.max_grad_norm, vf_epochs=args.vf_epochs,
                                 vf_minibatch_size=args.vf_minibatch_size)

        sps = int((global_step - first_step) / (time.time() - start))
        stats.update({"charts/learning_rate": optimizer.param_groups[0]["lr"], "charts/SPS": sps,
                      "charts/batch_steps": len(batch.returns)})
        for tag, value in stats.items():
            writer.add_scalar(tag, value, global_step)
        steps_taken = len(batch.returns)
        if args.eval_freq and (global_step // args.eval_freq > (global_step - steps_taken) // args.eval_freq
                               or global_step == final_step):
            best = keep_best(best, evaluate(agent, obs_rms, args.env_id, periodic_seeds), global_step, state, writer,
                             os.path.join(run_dir, "best_model.pt") if args.save_model else None)
        bar.update(steps_taken)
        bar.set_postfix(SPS=sps, ret=f"{train_returns[-1]:.0f}" if train_returns else "-")
    bar.close()
    env.close()
    if args.save_model:
        torch.save(state(), os.path.join(run_dir, "model.pt"))
    return {"global_step": global_step, "train_returns": list(train_returns), **best}


def main(args: Args) -> dict:
    obs_dim, act_dim, discrete = check_args(args)
    path = args.checkpoint or args.init_checkpoint
    checkpoint = load_checkpoint(path, obs_dim, act_dim, discrete, bool(args.init_checkpoint)) if path else None
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    if args.cuda and args.torch_deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # what deterministic cuBLAS requires
    torch.use_deterministic_algorithms(args.torch_deterministic)
    torch.set_num_threads(args.torch_threads)
    device = torch.device("cuda" if args.cuda else "cpu")
    agent = Agent(obs_dim, act_dim, discrete).to(device)
    obs_rms = RunningMeanStd(shape=(obs_dim,)) if args.norm_obs else None
    if checkpoint:  # the checkpoint's normalization, whatever --norm-obs says
        agent.load_state_dict(checkpoint["agent"])
        obs_rms = rms_from_tensors(checkpoint["obs_rms"]) if checkpoint["obs_rms"] else None

    run_name = f"{args.env_id.rpartition(':')[2]}__{args.exp_name}__{args.seed}__{int(time.time())}"
    run_dir = os.path.join(args.log_dir, run_name)
    writer = SummaryWriter(run_dir)
    table = "\n".join(f"|{k}|{v}|" for k, v in asdict(args).items())
    writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + table)
    start = time.time()
    if args.checkpoint:
        trained = {"global_step": int(checkpoint.get("global_step", 0)), "train_returns": [], "best": None}
    else:
        trained = train(args, agent, obs_rms, writer, run_dir, checkpoint)

    final_seeds = range(args.seed + 10**6, args.seed + 10**6 + args.eval_episodes)  # the same for both models
    video_dir = os.path.join(run_dir, "videos") if args.capture_video else None
    returns = evaluate(agent, obs_rms, args.env_id, final_seeds, video_dir)
    if args.checkpoint and returns:
        writer.add_scalar("eval/episodic_return", np.mean(returns), trained["global_step"])
        writer.add_scalar("eval/episodic_return_std", np.std(returns), trained["global_step"])
    result = {
        "env_id": args.env_id, "episodes": len(returns), "returns": returns,
        "mean": float(np.mean(returns)) if returns else None, "std": float(np.std(returns)) if returns else None,
        "train_return_last100": float(np.mean(trained["train_returns"])) if trained["train_returns"] else None,
        "global_step": trained["global_step"], "wall_seconds": time.time() - start, "checkpoint": path,
        "best_model": None,
    }
    if trained["best"]:
        best_agent = Agent(obs_dim, act_dim, discrete).to(device)
        best_agent.load_state_dict(trained["best"]["agent"])
        best_rms = rms_from_tensors(trained["best"]["obs_rms"]) if trained["best"]["obs_rms"] else None
        best_returns = evaluate(best_agent, best_rms, args.env_id, final_seeds)
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
