"""Proximal Policy Optimization (PPO-Clip) with GAE for continuous actions, in one file.

PPO alternates between collecting `num_steps` transitions per env with the current Gaussian policy
and taking several epochs of minibatch gradient steps on a surrogate objective that keeps the new
policy close to the one that collected the data. Advantages come from Generalized Advantage
Estimation.

Papers: Schulman et al. 2017, "Proximal Policy Optimization Algorithms", arXiv:1707.06347
(Eq. 6 plain surrogate, Eq. 7 clipped surrogate, Eq. 8 KL penalty, Eq. 9 combined loss, Eq. 11-12
truncated GAE, Section 4 adaptive KL coefficient); Schulman et al. 2016, "High-Dimensional
Continuous Control Using Generalized Advantage Estimation", arXiv:1506.02438 (Eq. 16). The
continuous-control details (orthogonal init, observation / reward normalization, per-minibatch
advantage normalization, value clipping, annealed lr, grad clipping) follow Huang et al. 2022,
"The 37 Implementation Details of PPO" (ICLR blog track). Unlike most references, a time-limit
truncation bootstraps V(final observation) instead of being treated as a termination.

    python ppo_continuous.py --env-id Hopper-v4
    python ppo_continuous.py --env-id InvertedPendulum-v4 --total-timesteps 50000 --surrogate adaptive-kl
    python ppo_continuous.py --env-id Hopper-v4 --checkpoint runs/<run>/best_model.pt
    python ppo_continuous.py --env-id Hopper-v4 --init-checkpoint runs/<run>/model.pt --total-timesteps 500000
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
from typing import Literal, NamedTuple

import gymnasium as gym
import numpy as np
import torch
import tyro
from gymnasium.wrappers.utils import RunningMeanStd
from torch import nn
from torch.distributions import Normal, kl_divergence
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

import hopper_envs  # noqa: F401  (registers the CustomHopper-* ids)

SURROGATES = ("clip", "adaptive-kl", "fixed-kl", "none")


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]  # name of this experiment, part of the run directory
    seed: int = 1  # seed of random, numpy, torch and the environments
    torch_deterministic: bool = True  # make torch use deterministic algorithms
    torch_threads: int = 1  # torch CPU threads; 1 is fastest for 64-unit networks (measured: 2 threads gain nothing)
    env_id: str = "Hopper-v4"  # gymnasium id of an environment with a Box action space
    total_timesteps: int = 1_000_000  # total environment steps of training
    learning_rate: float = 3e-4  # Adam learning rate (start value when annealed)
    num_envs: int = 1  # parallel environments
    vector_env: Literal["sync", "async"] = "sync"
    """sync: the envs step one after another in this process; async: one worker process per env
    (gymnasium AsyncVectorEnv), so that --num-envs > 1 steps on several cores (same trajectories)"""
    num_steps: int = 2048  # steps per environment per rollout
    anneal_lr: bool = True  # decay the learning rate linearly to 0 over training
    gamma: float = 0.99  # discount factor
    gae_lambda: float = 0.95  # GAE lambda
    num_minibatches: int = 32  # minibatches per epoch; must divide num_envs * num_steps
    update_epochs: int = 10  # epochs over each rollout
    surrogate: str = "clip"  # policy objective: clip (Eq. 7), adaptive-kl or fixed-kl (Eq. 8), none (Eq. 6)
    clip_coef: float = 0.2  # epsilon of the clipped surrogate
    kl_beta: float = 1.0  # KL penalty coefficient beta (initial value for adaptive-kl)
    kl_target: float = 0.01  # d_targ of the adaptive KL penalty
    norm_adv: bool = True  # normalize advantages per minibatch
    clip_vloss: bool = True  # clip the value loss around the rollout's values, with clip_coef
    ent_coef: float = 0.0  # entropy bonus coefficient
    vf_coef: float = 0.5  # value loss coefficient
    max_grad_norm: float = 0.5  # global gradient-norm clipping
    target_kl: float | None = None  # stop the epochs of an update early once an epoch's mean KL exceeds this
    log_dir: str = "runs"  # where run directories are created
    save_model: bool = True  # write model.pt into the run directory
    eval_episodes: int = 10  # deterministic evaluation episodes after training
    checkpoint: str | None = None  # load this model.pt and only evaluate it
    init_checkpoint: str | None = None
    """continue training from this model.pt: weights, normalization, optimizer, global step, kl_beta"""
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


def normalize_obs(obs: np.ndarray, obs_rms: RunningMeanStd, clip: float = 10.0) -> torch.Tensor:
    """clip((obs - mean) / sqrt(var + 1e-8), -clip, clip) with the running statistics as they are.

    obs: (B, obs_dim) raw observations; returns a float32 tensor of the same shape. Never updates
    obs_rms: the rollout updates it explicitly, evaluation leaves it frozen (Huang et al. 2022,
    details 4-5 of the continuous-control list).
    """
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
    """Separate 64-64 tanh actor and critic; Gaussian policy with a state-independent log-std.

    `value` and `dist` take normalized observations (see normalize_obs).
    """

    def __init__(self, obs_dim: int, act_dim: int):
        super().__init__()
        self.critic = nn.Sequential(
            layer_init(nn.Linear(obs_dim, 64)), nn.Tanh(),
            layer_init(nn.Linear(64, 64)), nn.Tanh(),
            layer_init(nn.Linear(64, 1), std=1.0),
        )
        self.actor_mean = nn.Sequential(
            layer_init(nn.Linear(obs_dim, 64)), nn.Tanh(),
            layer_init(nn.Linear(64, 64)), nn.Tanh(),
            layer_init(nn.Linear(64, act_dim), std=0.01),
        )
        self.actor_logstd = nn.Parameter(torch.zeros(act_dim))

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        """V(s) for normalized obs (B, obs_dim) -> (B,)."""
        return self.critic(obs).squeeze(-1)

    def dist(self, obs: torch.Tensor) -> Normal:
        """pi(.|s) for normalized obs (B, obs_dim): a Normal with batch shape (B, act_dim)."""
        mean = self.actor_mean(obs)
        return Normal(mean, self.actor_logstd.exp().expand_as(mean), validate_args=False)


def compute_gae(rewards, values, next_values, terminated, dones, gamma: float, gae_lambda: float):
    """Generalized advantage estimates and lambda-returns over a rollout.

    rewards, values, next_values, terminated, dones: tensors of shape (T, N). next_values[t] is
    V(s_{t+1}) of the true next state: V(final observation) when an episode ended at t. terminated
    marks true terminal states (no bootstrap); dones = terminated | truncated cuts the sum.
    delta_t = r_t + gamma (1 - terminated_t) V(s_{t+1}) - V(s_t)     (PPO paper Eq. 12)
    A_t = delta_t + gamma lambda (1 - done_t) A_{t+1}                (Eq. 11; GAE paper Eq. 16)
    Returns (advantages, returns = advantages + values), both (T, N), in reward units.
    """
    not_terminated, not_done = 1.0 - terminated.float(), 1.0 - dones.float()
    deltas = rewards + gamma * not_terminated * next_values - values
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        last = deltas[t] + gamma * gae_lambda * not_done[t] * last
        advantages[t] = last
    return advantages, advantages + values


def policy_loss(surrogate: str, ratio, advantages, kl, clip_coef: float, kl_beta: float) -> torch.Tensor:
    """Negative surrogate objective to minimize (scalar).

    ratio = pi(a|s) / pi_old(a|s), advantages and kl = KL[pi_old(.|s), pi(.|s)]: shape (B,).
    clip: -E[min(r A, clip(r, 1-eps, 1+eps) A)] (Eq. 7); fixed-kl / adaptive-kl:
    -E[r A - beta KL] (Eq. 8); none: -E[r A] (Eq. 6). Raises ValueError for another name.
    """
    if surrogate == "clip":
        return -torch.min(ratio * advantages, ratio.clamp(1 - clip_coef, 1 + clip_coef) * advantages).mean()
    if surrogate in ("fixed-kl", "adaptive-kl"):
        return -(ratio * advantages - kl_beta * kl).mean()
    if surrogate == "none":
        return -(ratio * advantages).mean()
    raise ValueError(f"unknown surrogate {surrogate!r}, expected one of {SURROGATES}")


def adapt_kl_beta(kl_beta: float, kl: float, kl_target: float) -> float:
    """PPO paper Section 4: halve beta if KL < d_targ / 1.5, double it if KL > d_targ * 1.5."""
    if kl < kl_target / 1.5:
        return kl_beta / 2
    if kl > kl_target * 1.5:
        return kl_beta * 2
    return kl_beta


class Rollout(NamedTuple):
    """T steps of N envs collected by the current policy (PPO paper, Algorithm 1, line 3).

    obs, final_obs: (T, N, obs_dim) normalized; final_obs[t, i] is the last observation of an
    episode that ended at step t (zero elsewhere). actions: (T, N, act_dim), the unclipped Gaussian
    samples. rewards: (T, N), normalized and clipped. terminated, dones = terminated | truncated:
    (T, N) bool. last_obs: (N, obs_dim) normalized observation after step T-1; next_obs: the same,
    raw, where the next rollout starts. episodes: (t, raw return, length) of each finished episode.
    """
    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    terminated: torch.Tensor
    dones: torch.Tensor
    final_obs: torch.Tensor
    last_obs: torch.Tensor
    next_obs: np.ndarray
    episodes: list[tuple[int, float, int]]


def make_vector_env(env_id: str, num_envs: int, gamma: float,
                    vector_env: str = "sync") -> tuple[gym.vector.VectorEnv, RunningMeanStd]:
    """Training envs with raw-return statistics, reward scaling and clipping (Huang et al. 2022,
    details 6-7); returns (envs, the reward normalizer's running statistics of the discounted return)."""
    vector = gym.vector.AsyncVectorEnv if vector_env == "async" else gym.vector.SyncVectorEnv
    envs = vector([lambda: make_env(env_id)] * num_envs, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    envs = gym.wrappers.vector.RecordEpisodeStatistics(envs)  # raw returns, before any scaling
    reward_normalizer = envs = gym.wrappers.vector.NormalizeReward(envs, gamma=gamma)
    envs = gym.wrappers.vector.TransformReward(envs, lambda r: np.clip(r, -10, 10))
    return envs, reward_normalizer


@torch.no_grad()  # not inference_mode: the update back-propagates through ops on these tensors
def collect_rollout(envs: gym.vector.VectorEnv, agent: Agent, obs_rms: RunningMeanStd, next_obs: np.ndarray,
                    num_steps: int) -> Rollout:
    """Run the Gaussian policy for num_steps steps of every env from raw observations next_obs
    (N, obs_dim); updates obs_rms with every observation it normalizes. envs autoreset in the same step.
    The rollout is gathered in CPU memory and returned on the agent's device."""
    N, obs_dim = next_obs.shape
    obs, final_obs = torch.zeros((num_steps, N, obs_dim)), torch.zeros((num_steps, N, obs_dim))
    actions = torch.zeros((num_steps, N, envs.single_action_space.shape[0]))
    rewards = torch.zeros((num_steps, N))
    terminated, dones = torch.zeros((num_steps, N), dtype=torch.bool), torch.zeros((num_steps, N), dtype=torch.bool)
    # The loop writes through numpy views of the same memory: ~1 us per item instead of ~10 us.
    obs_np, final_obs_np, actions_np, rewards_np, terminated_np, dones_np = (
        x.numpy() for x in (obs, final_obs, actions, rewards, terminated, dones))
    low, high = envs.single_action_space.low, envs.single_action_space.high
    episodes, device = [], agent.actor_logstd.device
    for step in range(num_steps):
        obs_rms.update(next_obs)
        normalized = normalize_obs(next_obs, obs_rms)
        # a ~ N(mean, std): what agent.dist(normalized).sample() draws, without building a Normal
        mean = agent.actor_mean(normalized.to(device))
        actions_np[step] = torch.normal(mean, agent.actor_logstd.exp().expand_as(mean)).cpu().numpy()
        obs_np[step] = normalized.numpy()
        # The sample is stored unclipped (its log-prob is exact); only the env sees it clipped.
        next_obs, reward, term, trunc, infos = envs.step(np.clip(actions_np[step], low, high))
        rewards_np[step], terminated_np[step], dones_np[step] = reward, term, term | trunc
        for i in np.flatnonzero(dones_np[step]):  # next_obs[i] already starts the next episode
            final_obs_np[step, i] = normalize_obs(infos["final_obs"][i][None], obs_rms)[0].numpy()
        for i in np.flatnonzero(infos.get("_episode", ())):
            episodes.append((step, float(infos["episode"]["r"][i]), int(infos["episode"]["l"][i])))
    tensors = (obs, actions, rewards, terminated, dones, final_obs, normalize_obs(next_obs, obs_rms))
    return Rollout(*(x.to(device) for x in tensors), next_obs, episodes)


@torch.no_grad()
def advantages_and_returns(agent: Agent, rollout: Rollout, gamma: float, gae_lambda: float):
    """GAE over a rollout, bootstrapping V(final observation) where a time limit truncated an episode.

    Returns (advantages, returns, values), each (T, N): values = V(s_t) of the rollout's policy.
    """
    values = agent.value(rollout.obs)  # one batched forward: the networks did not change during the rollout
    # V(s_{t+1}): the next step's value, or V(final observation) where an episode ended at t
    # (used at a truncation; compute_gae ignores it after a termination).
    following = torch.cat([values[1:], agent.value(rollout.last_obs)[None]])
    next_values = torch.where(rollout.dones, agent.value(rollout.final_obs), following)
    advantages, returns = compute_gae(rollout.rewards, values, next_values, rollout.terminated, rollout.dones,
                                      gamma, gae_lambda)
    return advantages, returns, values


def ppo_update(agent: Agent, optimizer: torch.optim.Optimizer, rollout: Rollout, advantages: torch.Tensor,
               returns: torch.Tensor, values: torch.Tensor, *, update_epochs: int, minibatch_size: int,
               surrogate: str, clip_coef: float, kl_beta: float, kl_target: float, norm_adv: bool,
               clip_vloss: bool, ent_coef: float, vf_coef: float, max_grad_norm: float,
               target_kl: float | None) -> tuple[list[float], int, float]:
    """Epochs of minibatch Adam steps on the loss of Eq. 9 (PPO paper, Algorithm 1, line 6).

    advantages, returns, values: (T, N) from advantages_and_returns. Returns the update's mean
    [policy loss, value loss, entropy, approx KL, clip fraction], the epochs run (fewer with
    target_kl) and the KL coefficient for the next update (adapted, Section 4, for adaptive-kl).
    """
    batch_size = advantages.numel()
    b_obs, b_actions = rollout.obs.reshape(batch_size, -1), rollout.actions.reshape(batch_size, -1)
    b_advantages, b_returns, b_values = advantages.reshape(-1), returns.reshape(-1), values.reshape(-1)
    with torch.inference_mode():
        dist = agent.dist(b_obs)
        b_logprobs, b_means = dist.log_prob(b_actions).sum(-1), dist.loc
    old_std = agent.actor_logstd.detach().exp().expand(batch_size, -1).clone()
    stats = []
    for epoch in range(update_epochs):
        epoch_kl = []
        for mb in torch.randperm(batch_size, device=b_obs.device).split(minibatch_size):
            mb_obs = b_obs[mb]
            dist = agent.dist(mb_obs)
            logratio = dist.log_prob(b_actions[mb]).sum(-1) - b_logprobs[mb]
            ratio = logratio.exp()
            if surrogate in ("fixed-kl", "adaptive-kl"):  # the penalty needs the exact KL[pi_old, pi]
                kl = kl_divergence(Normal(b_means[mb], old_std[mb]), dist).sum(-1)
            else:  # only logged: the unbiased estimate E[(r - 1) - log r] of the same KL, much cheaper
                kl = (ratio - 1) - logratio
            mb_adv = b_advantages[mb]
            if norm_adv:
                mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
            pg_loss = policy_loss(surrogate, ratio, mb_adv, kl, clip_coef, kl_beta)
            new_value = agent.value(mb_obs)
            v_loss = (new_value - b_returns[mb]) ** 2
            if clip_vloss:  # Huang et al. 2022, detail 9
                v_clipped = b_values[mb] + (new_value - b_values[mb]).clamp(-clip_coef, clip_coef)
                v_loss = torch.max(v_loss, (v_clipped - b_returns[mb]) ** 2)
            v_loss = 0.5 * v_loss.mean()
            entropy = dist.entropy().sum(-1).mean()
            loss = pg_loss - ent_coef * entropy + vf_coef * v_loss  # Eq. 9 (signs for descent)
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(agent.parameters(), max_grad_norm)
            optimizer.step()
            clipfrac = ((ratio - 1.0).abs() > clip_coef).float().mean()
            stats.append(torch.stack([pg_loss, v_loss, entropy, kl.mean(), clipfrac]).detach())
            epoch_kl.append(stats[-1][3])
        if target_kl is not None and torch.stack(epoch_kl).mean() > target_kl:
            break
    if surrogate == "adaptive-kl":
        with torch.inference_mode():
            kl_full = kl_divergence(Normal(b_means, old_std), agent.dist(b_obs)).sum(-1).mean()
        kl_beta = adapt_kl_beta(kl_beta, float(kl_full), kl_target)
    return torch.stack(stats).mean(0).tolist(), epoch + 1, kl_beta


@torch.inference_mode()
def evaluate(agent: Agent, obs_rms: RunningMeanStd, env_id: str, seeds: range,
             video_dir: str | None = None) -> list[float]:
    """Returns of one deterministic (mean-action) episode per env seed, normalization frozen (obs_rms
    is read, never updated). Seeds: training uses seed .. seed + num_envs - 1, the evaluations
    during training seed + 2 * 10**6 + k, the final evaluation seed + 10**6 + k."""
    env = make_env(env_id, render_mode="rgb_array" if video_dir else None)
    if video_dir:
        env = gym.wrappers.RecordVideo(env, video_dir, episode_trigger=lambda k: True, disable_logger=True)
    low, high = env.action_space.low, env.action_space.high
    returns = []
    for seed in seeds:
        obs, _ = env.reset(seed=seed)
        done, total = False, 0.0
        while not done:
            mean = agent.actor_mean(normalize_obs(obs[None], obs_rms).to(agent.actor_logstd.device))
            obs, reward, terminated, truncated, _ = env.step(np.clip(mean[0].cpu().numpy(), low, high))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return returns


def check_args(args: Args) -> tuple[int, int]:
    """Exit 2 on bad input before anything is written; returns (obs_dim, act_dim) of the env."""
    check_range(args, ("seed",), lambda v: 0 <= v < 2**32, "in [0, 2**32)")
    check_range(args, ("learning_rate", "clip_coef", "kl_beta", "kl_target", "max_grad_norm"),
                lambda v: 0 < v < math.inf, "a finite number > 0")
    check_range(args, ("gamma", "gae_lambda"), lambda v: 0 <= v <= 1, "in [0, 1]")
    check_range(args, ("ent_coef", "vf_coef"), lambda v: 0 <= v < math.inf, "a finite number >= 0")
    check_range(args, ("target_kl",), lambda v: v is None or 0 < v < math.inf, "None or a finite number > 0")
    check_range(args, ("total_timesteps", "num_envs", "num_steps", "num_minibatches", "update_epochs",
                       "torch_threads", "periodic_eval_episodes"),
                lambda v: v > 0, "a whole number > 0")
    check_range(args, ("eval_episodes", "eval_freq"), lambda v: v >= 0, "a whole number >= 0")
    if args.surrogate not in SURROGATES:
        fail(f"unknown surrogate {args.surrogate!r} (choose one of {', '.join(SURROGATES)})")
    if (args.num_envs * args.num_steps) % args.num_minibatches:
        fail(f"--num-minibatches {args.num_minibatches} does not divide the batch of "
             f"{args.num_envs * args.num_steps} steps (pick a divisor of num_envs * num_steps)")
    if args.total_timesteps % args.num_envs:
        fail(f"--total-timesteps {args.total_timesteps} is not a multiple of --num-envs {args.num_envs} "
             "(give a multiple: every env steps the same number of times)")
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
    if not isinstance(act_space, gym.spaces.Box):
        fail(f"{args.env_id} has a {type(act_space).__name__} action space (this script needs a continuous Box)")
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
        fail(f"{args.env_id} has observations {obs_space} (this script needs a flat Box)")
    if args.capture_video:
        if importlib.util.find_spec("moviepy") is None:
            fail("--capture-video needs moviepy (pip install -r requirements.txt)")
        os.environ.setdefault("MUJOCO_GL", "egl")  # off-screen rendering; works without a display
    return obs_space.shape[0], act_space.shape[0]


def checkpoint_state(agent: Agent, obs_rms: RunningMeanStd, reward_rms: RunningMeanStd,
                     optimizer: torch.optim.Optimizer, global_step: int, kl_beta: float, args: Args) -> dict:
    """What model.pt and best_model.pt hold (tensors and plain values only): enough to evaluate the
    policy, or to continue training with --init-checkpoint."""
    return copy.deepcopy({"agent": agent.state_dict(), "obs_rms": rms_to_tensors(obs_rms),
                          "reward_rms": rms_to_tensors(reward_rms), "optimizer": optimizer.state_dict(),
                          "global_step": global_step, "kl_beta": kl_beta, "args": asdict(args)})


def load_checkpoint(path: str, obs_dim: int, act_dim: int, training: bool) -> dict:
    """A model.pt / best_model.pt of this script as a dict; exits 2 if unreadable, if its networks do
    not fit (obs_dim, act_dim), or if `training` and it lacks the state to continue training."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)  # a GPU run's file loads anywhere
        shapes = {k: tuple(v.shape) for k, v in checkpoint["agent"].items()}
        obs_shape = tuple(checkpoint["obs_rms"]["mean"].shape)
    except (OSError, RuntimeError, KeyError, TypeError, AttributeError, pickle.UnpicklingError) as e:
        fail(f"cannot load checkpoint {path}: {str(e).splitlines()[0]} (pass a model.pt written by this script)")
    expected = {k: tuple(v.shape) for k, v in Agent(obs_dim, act_dim).state_dict().items()}
    if shapes != expected or obs_shape != (obs_dim,):
        fail(f"checkpoint {path} does not match the env's observation/action sizes {obs_dim}, {act_dim} "
             "(pass a model.pt trained on an env with the same spaces)")
    if training and not {"optimizer", "reward_rms", "global_step", "kl_beta"} <= set(checkpoint):
        fail(f"checkpoint {path} has no optimizer state (continue from a model.pt written by this version)")
    return checkpoint


def train(args: Args, agent: Agent, obs_rms: RunningMeanStd, writer: SummaryWriter, run_dir: str,
          resume: dict | None) -> dict:
    """PPO (Algorithm 1 of the PPO paper) for args.total_timesteps env steps, from `resume` (a
    checkpoint dict) if given; updates agent and obs_rms in place, keeps the best evaluated policy.

    Returns {"global_step", "train_returns" (the last 100 raw training returns), "best" (the
    checkpoint dict of the best periodic evaluation, or None), "best_step", "best_periodic_mean"}.
    """
    envs, reward_rms = make_vector_env(args.env_id, args.num_envs, args.gamma, args.vector_env)
    # fused=True: one kernel for all parameters, ~20% faster updates on CPU (same math as Adam).
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5, fused=True)
    global_step, kl_beta = 0, args.kl_beta
    if resume:
        optimizer.load_state_dict(resume["optimizer"])
        reward_rms.return_rms = rms_from_tensors(resume["reward_rms"])
        global_step, kl_beta = int(resume["global_step"]), float(resume["kl_beta"])
    first_step, final_step = global_step, global_step + args.total_timesteps
    minibatch_size = args.num_envs * args.num_steps // args.num_minibatches
    train_returns: deque[float] = deque(maxlen=100)
    best = {"best": None, "best_step": None, "best_periodic_mean": -math.inf}
    periodic_seeds = range(args.seed + 2 * 10**6, args.seed + 2 * 10**6 + args.periodic_eval_episodes)

    start = time.time()
    next_obs, _ = envs.reset(seed=args.seed)
    bar = tqdm(total=args.total_timesteps, disable=not (args.progress and sys.stderr.isatty()), unit="step")
    while global_step < final_step:
        # lr anneals linearly to 0 at final_step; a continued run goes on from where its step is.
        lr = args.learning_rate * (1.0 - global_step / final_step if args.anneal_lr else 1.0)
        optimizer.param_groups[0]["lr"] = lr
        # The last rollout is shorter if needed, so training takes exactly total_timesteps steps.
        num_steps = min(args.num_steps, (final_step - global_step) // args.num_envs)
        rollout = collect_rollout(envs, agent, obs_rms, next_obs, num_steps)  # Algorithm 1, line 3
        next_obs = rollout.next_obs
        for t, episodic_return, length in rollout.episodes:
            train_returns.append(episodic_return)
            writer.add_scalar("charts/episodic_return", episodic_return, global_step + (t + 1) * args.num_envs)
            writer.add_scalar("charts/episodic_length", length, global_step + (t + 1) * args.num_envs)
        global_step += num_steps * args.num_envs
        advantages, returns, values = advantages_and_returns(agent, rollout, args.gamma, args.gae_lambda)  # line 4
        losses, epochs, kl_beta = ppo_update(                                                            # line 6
            agent, optimizer, rollout, advantages, returns, values, update_epochs=args.update_epochs,
            minibatch_size=minibatch_size, surrogate=args.surrogate, clip_coef=args.clip_coef, kl_beta=kl_beta,
            kl_target=args.kl_target, norm_adv=args.norm_adv, clip_vloss=args.clip_vloss, ent_coef=args.ent_coef,
            vf_coef=args.vf_coef, max_grad_norm=args.max_grad_norm, target_kl=args.target_kl)

        var_returns = returns.var()
        explained_var = float("nan") if var_returns == 0 else float(1 - (returns - values).var() / var_returns)
        sps = int((global_step - first_step) / (time.time() - start))
        for tag, value in (("charts/learning_rate", lr), ("charts/SPS", sps), ("losses/policy_loss", losses[0]),
                           ("losses/value_loss", losses[1]), ("losses/entropy", losses[2]),
                           ("losses/approx_kl", losses[3]), ("losses/clipfrac", losses[4]),
                           ("losses/explained_variance", explained_var), ("charts/update_epochs", epochs),
                           ("charts/kl_beta", kl_beta)):
            writer.add_scalar(tag, value, global_step)
        steps_taken = num_steps * args.num_envs
        if args.eval_freq and (global_step // args.eval_freq > (global_step - steps_taken) // args.eval_freq
                               or global_step == final_step):
            eval_returns = evaluate(agent, obs_rms, args.env_id, periodic_seeds)
            writer.add_scalar("eval/episodic_return", np.mean(eval_returns), global_step)
            writer.add_scalar("eval/episodic_return_std", np.std(eval_returns), global_step)
            if np.mean(eval_returns) > best["best_periodic_mean"]:
                state = checkpoint_state(agent, obs_rms, reward_rms.return_rms, optimizer, global_step, kl_beta, args)
                best = {"best": state, "best_step": global_step, "best_periodic_mean": float(np.mean(eval_returns))}
                if args.save_model:
                    torch.save(state, os.path.join(run_dir, "best_model.pt"))
        bar.update(steps_taken)
        bar.set_postfix(SPS=sps, ret=f"{train_returns[-1]:.0f}" if train_returns else "-")
    bar.close()
    envs.close()
    if args.save_model:
        torch.save(checkpoint_state(agent, obs_rms, reward_rms.return_rms, optimizer, global_step, kl_beta, args),
                   os.path.join(run_dir, "model.pt"))
    return {"global_step": global_step, "train_returns": list(train_returns), **best}


def main(args: Args) -> dict:
    obs_dim, act_dim = check_args(args)
    path = args.checkpoint or args.init_checkpoint
    checkpoint = load_checkpoint(path, obs_dim, act_dim, training=bool(args.init_checkpoint)) if path else None
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    if args.cuda and args.torch_deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # what deterministic cuBLAS requires
    torch.use_deterministic_algorithms(args.torch_deterministic)
    torch.set_num_threads(args.torch_threads)
    device = torch.device("cuda" if args.cuda else "cpu")
    agent, obs_rms = Agent(obs_dim, act_dim).to(device), RunningMeanStd(shape=(obs_dim,))
    if checkpoint:
        agent.load_state_dict(checkpoint["agent"])
        obs_rms = rms_from_tensors(checkpoint["obs_rms"])

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
        best_agent = Agent(obs_dim, act_dim).to(device)
        best_agent.load_state_dict(trained["best"]["agent"])
        best_returns = evaluate(best_agent, rms_from_tensors(trained["best"]["obs_rms"]), args.env_id, final_seeds)
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
