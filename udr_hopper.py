"""Uniform Domain Randomization (UDR) on MuJoCo Hopper: train on a source simulator, test on a target.

The source Hopper's torso is 1 kg lighter than the target's (the stand-in for the real robot). A
policy trained on the source alone overfits its dynamics; UDR instead draws the thigh, leg and foot
masses uniformly at every reset, so the policy must work for a family of robots, which (we hope)
contains the target. After training, the policy is evaluated deterministically on BOTH domains.
The learner is PPO-Clip with GAE (a copy of ppo_continuous.py's, clip surrogate only).

Papers: Tobin et al. 2017, "Domain Randomization for Transferring Deep Neural Networks from
Simulation to the Real World", arXiv:1703.06907 (train on xi ~ U[low, high] per episode);
Peng et al. 2018, arXiv:1710.06537 (randomized dynamics, here the masses); Schulman et al. 2017,
arXiv:1707.06347, Eq. 7 (clipped surrogate) and Schulman et al. 2016, arXiv:1506.02438, Eq. 16 (GAE).

    python udr_hopper.py                                   # UDR, masses +-10% around the source's
    python udr_hopper.py --train-domain source             # the baseline that transfers worse
    python udr_hopper.py --mass-low thigh 3.0 leg 2.0 --mass-high thigh 5.0 leg 3.5   # foot fixed
    python udr_hopper.py --checkpoint runs/<run>/model.pt  # evaluate a saved policy on both domains

best_model.pt is chosen by evaluations on the training domain (the UDR distribution for udr), so
choosing it spends no target episodes unless the target is the training domain.
"""

from __future__ import annotations

import copy
import json
import math
import os
import pickle
import random
import sys
import time
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
from torch.distributions import Normal
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

import hopper_envs

DOMAINS = ("source", "target", "udr")


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]  # name of this experiment, part of the run directory
    seed: int = 1  # seed of random, numpy, torch and the environments
    torch_deterministic: bool = True  # make torch use deterministic algorithms
    torch_threads: int = 1  # torch CPU threads; 1 is fastest for 64-unit networks
    train_domain: str = "udr"  # source, target (the oracle), or udr (source with randomized thigh / leg / foot masses)
    mass_low: dict[str, float] | None = None
    """udr: lower mass bound in kg per body, e.g. thigh 3.0 leg 2.0 foot 4.5 (unnamed bodies stay fixed)"""
    mass_high: dict[str, float] | None = None
    """udr: upper mass bound in kg per body, naming the same bodies as --mass-low"""
    mass_scale: float | None = None
    """udr: bounds (1 -+ scale) x the source mass of thigh, leg and foot (default 0.1 when no bounds are given)"""
    total_timesteps: int = 500_000  # total environment steps of training (the same for every row of the transfer table)
    learning_rate: float = 3e-4  # Adam learning rate (start value, annealed linearly to 0)
    num_envs: int = 1  # parallel environments
    vector_env: Literal["sync", "async"] = "sync"
    """sync: the envs step one after another in this process; async: one worker process per env
    (gymnasium AsyncVectorEnv), so that --num-envs > 1 steps on several cores (same trajectories)"""
    num_steps: int = 2048  # steps per environment per rollout
    gamma: float = 0.99  # discount factor
    gae_lambda: float = 0.95  # GAE lambda
    num_minibatches: int = 32  # minibatches per epoch; must divide num_envs * num_steps
    update_epochs: int = 10  # epochs over each rollout
    clip_coef: float = 0.2  # epsilon of the clipped surrogate (also clips the value loss)
    ent_coef: float = 0.0  # entropy bonus coefficient
    vf_coef: float = 0.5  # value loss coefficient
    max_grad_norm: float = 0.5  # global gradient-norm clipping
    log_dir: str = "runs"  # where run directories are created
    save_model: bool = True  # write model.pt into the run directory
    eval_episodes: int = 50  # deterministic evaluation episodes after training, on each of source and target
    checkpoint: str | None = None  # load this model.pt and only evaluate it
    init_checkpoint: str | None = None
    """continue training from this model.pt: weights, normalization, optimizer, global step"""
    eval_freq: int = 25_000
    """env steps between deterministic evaluations on the TRAINING domain (0 = off); the best is kept"""
    periodic_eval_episodes: int = 10  # episodes of each evaluation during training
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


def mass_bounds(args: Args) -> dict[str, tuple[float, float]] | None:
    """The UDR bounds {body: (low, high)} in kg for thigh, leg, foot; None unless training on udr.

    From --mass-low / --mass-high (bodies they do not name stay at the source mass), or else
    (1 -+ mass_scale) x source mass. Raises ValueError (with the body and values) for bad input.
    """
    if args.train_domain != "udr":
        if args.mass_low or args.mass_high or args.mass_scale is not None:
            raise ValueError(f"mass bounds only apply to --train-domain udr, not {args.train_domain}")
        return None
    source = hopper_envs.nominal_masses("source")
    if args.mass_low is not None or args.mass_high is not None:
        if args.mass_scale is not None:
            raise ValueError("give either --mass-low/--mass-high or --mass-scale, not both")
        low, high = args.mass_low or {}, args.mass_high or {}
        if set(low) != set(high):
            raise ValueError(f"--mass-low names {sorted(low)} but --mass-high names {sorted(high)} "
                             "(name the same bodies)")
        unknown = sorted(set(low) - set(hopper_envs.RANDOMIZED_BODIES))
        if unknown:
            raise ValueError(f"unknown bodies {unknown} in the mass bounds (randomizable: thigh, leg, foot)")
        bounds = {b: (low[b], high[b]) if b in low else (source[b], source[b]) for b in hopper_envs.RANDOMIZED_BODIES}
    else:  # hopper_envs.DEFAULT_MASS_SCALE (+-10%) says how it was chosen
        scale = hopper_envs.DEFAULT_MASS_SCALE if args.mass_scale is None else args.mass_scale
        if not 0 <= scale < 1:
            raise ValueError(f"--mass-scale must be in [0, 1), got {scale}")
        bounds = hopper_envs.scaled_mass_bounds(scale, source)
    return hopper_envs.validate_mass_bounds(bounds)


def make_env(domain: str, bounds: dict | None = None) -> gym.Env:
    """CustomHopper-<domain>-v0 (1000-step episodes); bounds only for "udr"."""
    return gym.make(f"CustomHopper-{domain}-v0", **({"mass_bounds": bounds} if bounds else {}))


def layer_init(layer: nn.Linear, std: float = np.sqrt(2), bias_const: float = 0.0) -> nn.Linear:
    """Orthogonal weights with gain `std`, constant bias (Huang et al. 2022, detail 2)."""
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias_const)
    return layer


def normalize_obs(obs: np.ndarray, obs_rms: RunningMeanStd, clip: float = 10.0) -> torch.Tensor:
    """clip((obs - mean) / sqrt(var + 1e-8), -clip, clip); obs (B, obs_dim) -> float32 tensor (B, obs_dim).

    Never updates obs_rms: the rollout updates it explicitly, evaluation leaves it frozen.
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
    """Separate 64-64 tanh actor and critic; Gaussian policy with a state-independent log-std."""

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
    """GAE advantages and lambda-returns, all tensors (T, N) (GAE paper Eq. 16; PPO paper Eq. 11-12).

    next_values[t] = V(s_{t+1}) of the true next state (V(final observation) when an episode ended
    at t); terminated stops the bootstrap, dones = terminated | truncated cuts the sum.
    """
    not_terminated, not_done = 1.0 - terminated.float(), 1.0 - dones.float()
    deltas = rewards + gamma * not_terminated * next_values - values
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        last = deltas[t] + gamma * gae_lambda * not_done[t] * last
        advantages[t] = last
    return advantages, advantages + values


class Rollout(NamedTuple):
    """T steps of N envs collected by the current policy (PPO paper, Algorithm 1, line 3).

    obs, final_obs: (T, N, obs_dim) normalized; final_obs[t, i] is the last observation of an
    episode that ended at step t (zero elsewhere). actions: (T, N, act_dim), the unclipped Gaussian
    samples. rewards: (T, N), normalized and clipped. terminated, dones = terminated | truncated:
    (T, N) bool. last_obs: (N, obs_dim) normalized observation after step T-1; next_obs: the same,
    raw, where the next rollout starts. episodes: (t, raw return, length) of each finished episode;
    resets: (t, env index, {body: mass in kg}) for each env reset after step t, with its new masses.
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
    resets: list[tuple[int, int, dict[str, float]]]


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
    episodes, resets, device = [], [], agent.actor_logstd.device
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
        ended = np.flatnonzero(dones_np[step])
        for i in ended:  # next_obs[i] already starts the next episode, with new masses
            final_obs_np[step, i] = normalize_obs(infos["final_obs"][i][None], obs_rms)[0].numpy()
        if len(ended):
            masses = envs.unwrapped.call("masses")
            resets.extend((step, i, masses[i]) for i in ended)
        for i in np.flatnonzero(infos.get("_episode", ())):
            episodes.append((step, float(infos["episode"]["r"][i]), int(infos["episode"]["l"][i])))
    tensors = (obs, actions, rewards, terminated, dones, final_obs, normalize_obs(next_obs, obs_rms))
    return Rollout(*(x.to(device) for x in tensors), next_obs, episodes, resets)


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
               clip_coef: float, ent_coef: float, vf_coef: float, max_grad_norm: float) -> list[float]:
    """Epochs of minibatch Adam steps on the loss of Eq. 9 of the PPO paper with the clipped surrogate
    (Eq. 7). advantages, returns, values: (T, N). Returns the update's mean [policy loss, value loss,
    entropy, approx KL, clip fraction]."""
    batch_size = advantages.numel()
    b_obs, b_actions = rollout.obs.reshape(batch_size, -1), rollout.actions.reshape(batch_size, -1)
    b_advantages, b_returns, b_values = advantages.reshape(-1), returns.reshape(-1), values.reshape(-1)
    with torch.no_grad():
        b_logprobs = agent.dist(b_obs).log_prob(b_actions).sum(-1)
    stats = []
    for _ in range(update_epochs):
        for mb in torch.randperm(batch_size, device=b_obs.device).split(minibatch_size):
            dist = agent.dist(b_obs[mb])
            logratio = dist.log_prob(b_actions[mb]).sum(-1) - b_logprobs[mb]
            ratio = logratio.exp()
            mb_adv = b_advantages[mb]
            mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
            # Eq. 7 of the PPO paper: -E[min(r A, clip(r, 1 - eps, 1 + eps) A)]
            pg_loss = -torch.min(ratio * mb_adv, ratio.clamp(1 - clip_coef, 1 + clip_coef) * mb_adv).mean()
            new_value = agent.value(b_obs[mb])
            v_clipped = b_values[mb] + (new_value - b_values[mb]).clamp(-clip_coef, clip_coef)
            v_loss = 0.5 * torch.max((new_value - b_returns[mb]) ** 2, (v_clipped - b_returns[mb]) ** 2).mean()
            entropy = dist.entropy().sum(-1).mean()
            loss = pg_loss - ent_coef * entropy + vf_coef * v_loss  # Eq. 9
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(agent.parameters(), max_grad_norm)
            optimizer.step()
            approx_kl = ((ratio - 1) - logratio).mean()
            clipfrac = ((ratio - 1.0).abs() > clip_coef).float().mean()
            stats.append(torch.stack([pg_loss, v_loss, entropy, approx_kl, clipfrac]).detach())
    return torch.stack(stats).mean(0).tolist()


@torch.inference_mode()
def evaluate(agent: Agent, obs_rms: RunningMeanStd, domain: str, seeds: range, bounds: dict | None = None) -> dict:
    """Deterministic (mean-action) episodes on CustomHopper-<domain>-v0 (with UDR bounds for "udr"),
    one per env seed, normalization frozen (obs_rms is read, never updated). Seeds: training uses
    seed .. seed + num_envs - 1, the evaluations during training seed + 2 * 10**6 + k, the final
    ones seed + 10**6 + k. Returns {"mean", "std", "episodes", "returns", "masses"}; masses (kg)
    are those of the last episode, read back from the env."""
    env = make_env(domain, bounds)
    low, high = env.action_space.low, env.action_space.high
    returns, masses = [], None
    for seed in seeds:
        obs, _ = env.reset(seed=seed)
        masses = hopper_envs.get_masses(env)
        done, total = False, 0.0
        while not done:
            mean = agent.actor_mean(normalize_obs(obs[None], obs_rms).to(agent.actor_logstd.device))
            obs, reward, terminated, truncated, _ = env.step(np.clip(mean[0].cpu().numpy(), low, high))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return {"mean": float(np.mean(returns)) if returns else None, "std": float(np.std(returns)) if returns else None,
            "episodes": len(returns), "returns": returns, "masses": masses}


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


def check_args(args: Args) -> tuple[dict | None, int, int]:
    """Exit 2 on bad input before anything is written; returns (the UDR mass bounds or None, obs_dim,
    act_dim) of the Hopper."""
    check_range(args, ("seed",), lambda v: 0 <= v < 2**32, "in [0, 2**32)")
    if args.train_domain not in DOMAINS:
        fail(f"unknown --train-domain {args.train_domain!r} (choose one of {', '.join(DOMAINS)})")
    try:
        bounds = mass_bounds(args)
    except ValueError as e:
        fail(f"{e} (see --help for the mass flags)")
    check_range(args, ("learning_rate", "clip_coef", "max_grad_norm"),
                lambda v: 0 < v < math.inf, "a finite number > 0")
    check_range(args, ("gamma", "gae_lambda"), lambda v: 0 <= v <= 1, "in [0, 1]")
    check_range(args, ("ent_coef", "vf_coef"), lambda v: 0 <= v < math.inf, "a finite number >= 0")
    check_range(args, ("total_timesteps", "num_envs", "num_steps", "num_minibatches", "update_epochs",
                       "torch_threads", "periodic_eval_episodes"),
                lambda v: v > 0, "a whole number > 0")
    check_range(args, ("eval_episodes", "eval_freq"), lambda v: v >= 0, "a whole number >= 0")
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
    env = make_env("source")
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    env.close()
    return bounds, obs_dim, act_dim


def checkpoint_state(agent: Agent, obs_rms: RunningMeanStd, reward_rms: RunningMeanStd,
                     optimizer: torch.optim.Optimizer, global_step: int, args: Args) -> dict:
    """What model.pt and best_model.pt hold (tensors and plain values only): enough to evaluate the
    policy, or to continue training with --init-checkpoint."""
    return copy.deepcopy({"agent": agent.state_dict(), "obs_rms": rms_to_tensors(obs_rms),
                          "reward_rms": rms_to_tensors(reward_rms), "optimizer": optimizer.state_dict(),
                          "global_step": global_step, "args": asdict(args)})


def load_checkpoint(path: str, obs_dim: int, act_dim: int, training: bool) -> dict:
    """A model.pt / best_model.pt of this script as a dict; exits 2 if unreadable, if its networks are
    not the Hopper's, or if `training` and it lacks the state to continue training."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)  # a GPU run's file loads anywhere
        shapes = {k: tuple(v.shape) for k, v in checkpoint["agent"].items()}
        obs_shape = tuple(checkpoint["obs_rms"]["mean"].shape)
    except (OSError, RuntimeError, KeyError, TypeError, AttributeError, pickle.UnpicklingError) as e:
        fail(f"cannot load checkpoint {path}: {str(e).splitlines()[0]} (pass a model.pt written by this script)")
    expected = {k: tuple(v.shape) for k, v in Agent(obs_dim, act_dim).state_dict().items()}
    if shapes != expected or obs_shape != (obs_dim,):
        fail(f"checkpoint {path} does not match the Hopper's observation/action sizes {obs_dim}, {act_dim} "
             "(pass a model.pt of udr_hopper.py)")
    if training and not {"optimizer", "reward_rms", "global_step"} <= set(checkpoint):
        fail(f"checkpoint {path} has no optimizer state (continue from a model.pt written by this version)")
    return checkpoint


def train(args: Args, bounds: dict | None, agent: Agent, obs_rms: RunningMeanStd, writer: SummaryWriter,
          run_dir: str, resume: dict | None) -> dict:
    """PPO (Algorithm 1 of the PPO paper) on the training domain for args.total_timesteps env steps,
    from `resume` (a checkpoint dict) if given; updates agent and obs_rms in place, keeps the best
    policy of the evaluations on the training domain. Logs the masses of every training episode
    (domain/<body>_mass, x = the step it starts at).

    Returns {"global_step", "train_returns" (the last 100 raw training returns), "best" (the
    checkpoint dict of the best periodic evaluation, or None), "best_step", "best_periodic_mean"}.
    """
    vector = gym.vector.AsyncVectorEnv if args.vector_env == "async" else gym.vector.SyncVectorEnv
    envs = vector([lambda: make_env(args.train_domain, bounds)] * args.num_envs,
                  autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    envs = gym.wrappers.vector.RecordEpisodeStatistics(envs)  # raw returns, before any scaling
    reward_normalizer = envs = gym.wrappers.vector.NormalizeReward(envs, gamma=args.gamma)
    envs = gym.wrappers.vector.TransformReward(envs, lambda r: np.clip(r, -10, 10))
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5, fused=True)
    global_step = 0
    if resume:
        optimizer.load_state_dict(resume["optimizer"])
        reward_normalizer.return_rms = rms_from_tensors(resume["reward_rms"])
        global_step = int(resume["global_step"])
    first_step, final_step = global_step, global_step + args.total_timesteps
    minibatch_size = args.num_envs * args.num_steps // args.num_minibatches
    train_returns: deque[float] = deque(maxlen=100)
    best = {"best": None, "best_step": None, "best_periodic_mean": -math.inf}
    periodic_seeds = range(args.seed + 2 * 10**6, args.seed + 2 * 10**6 + args.periodic_eval_episodes)

    def state() -> dict:
        return checkpoint_state(agent, obs_rms, reward_normalizer.return_rms, optimizer, global_step, args)

    start = time.time()
    next_obs, _ = envs.reset(seed=args.seed)
    for masses in envs.unwrapped.call("masses"):
        for body, mass in masses.items():
            writer.add_scalar(f"domain/{body}_mass", mass, global_step)
    bar = tqdm(total=args.total_timesteps, disable=not (args.progress and sys.stderr.isatty()), unit="step")
    while global_step < final_step:
        lr = args.learning_rate * (1.0 - global_step / final_step)  # linear to 0 at final_step
        optimizer.param_groups[0]["lr"] = lr
        num_steps = min(args.num_steps, (final_step - global_step) // args.num_envs)  # exactly total_timesteps
        rollout = collect_rollout(envs, agent, obs_rms, next_obs, num_steps)
        next_obs = rollout.next_obs
        for t, episodic_return, length in rollout.episodes:
            train_returns.append(episodic_return)
            writer.add_scalar("charts/episodic_return", episodic_return, global_step + (t + 1) * args.num_envs)
            writer.add_scalar("charts/episodic_length", length, global_step + (t + 1) * args.num_envs)
        for t, _, masses in rollout.resets:
            for body, mass in masses.items():
                writer.add_scalar(f"domain/{body}_mass", mass, global_step + (t + 1) * args.num_envs)
        global_step += num_steps * args.num_envs
        advantages, returns, values = advantages_and_returns(agent, rollout, args.gamma, args.gae_lambda)
        losses = ppo_update(agent, optimizer, rollout, advantages, returns, values, update_epochs=args.update_epochs,
                            minibatch_size=minibatch_size, clip_coef=args.clip_coef, ent_coef=args.ent_coef,
                            vf_coef=args.vf_coef, max_grad_norm=args.max_grad_norm)

        var_returns = returns.var()
        explained_var = float("nan") if var_returns == 0 else float(1 - (returns - values).var() / var_returns)
        sps = int((global_step - first_step) / (time.time() - start))
        for tag, value in (("charts/learning_rate", lr), ("charts/SPS", sps), ("losses/policy_loss", losses[0]),
                           ("losses/value_loss", losses[1]), ("losses/entropy", losses[2]),
                           ("losses/approx_kl", losses[3]), ("losses/clipfrac", losses[4]),
                           ("losses/explained_variance", explained_var)):
            writer.add_scalar(tag, value, global_step)
        steps_taken = num_steps * args.num_envs
        if args.eval_freq and (global_step // args.eval_freq > (global_step - steps_taken) // args.eval_freq
                               or global_step == final_step):
            eval_returns = evaluate(agent, obs_rms, args.train_domain, periodic_seeds, bounds)["returns"]
            best = keep_best(best, eval_returns, global_step, state, writer,
                             os.path.join(run_dir, "best_model.pt") if args.save_model else None)
        bar.update(steps_taken)
        bar.set_postfix(SPS=sps, ret=f"{train_returns[-1]:.0f}" if train_returns else "-")
    bar.close()
    envs.close()
    if args.save_model:
        torch.save(state(), os.path.join(run_dir, "model.pt"))
    return {"global_step": global_step, "train_returns": list(train_returns), **best}


def main(args: Args) -> dict:
    bounds, obs_dim, act_dim = check_args(args)
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

    run_name = f"CustomHopper-{args.train_domain}__{args.exp_name}__{args.seed}__{int(time.time())}"
    run_dir = os.path.join(args.log_dir, run_name)
    writer = SummaryWriter(run_dir)
    table = "\n".join(f"|{k}|{v}|" for k, v in asdict(args).items())
    writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + table)
    start = time.time()
    if args.checkpoint:
        trained = {"global_step": int(checkpoint.get("global_step", 0)), "train_returns": [], "best": None}
    else:
        trained = train(args, bounds, agent, obs_rms, writer, run_dir, checkpoint)

    result = {"train_domain": args.train_domain, "mass_bounds": bounds, "global_step": trained["global_step"],
              "train_return_last100": float(np.mean(trained["train_returns"])) if trained["train_returns"] else None,
              "checkpoint": path, "best_model": None}
    final_seeds = range(args.seed + 10**6, args.seed + 10**6 + args.eval_episodes)  # the same for both models
    for domain in ("source", "target"):
        result[domain] = evaluate(agent, obs_rms, domain, final_seeds)
        if result[domain]["episodes"]:
            writer.add_scalar(f"eval/{domain}_return", result[domain]["mean"], trained["global_step"])
    if trained["best"]:
        best_agent = Agent(obs_dim, act_dim).to(device)
        best_agent.load_state_dict(trained["best"]["agent"])
        best_rms = rms_from_tensors(trained["best"]["obs_rms"])
        result["best_model"] = {"global_step": trained["best_step"],
                                "periodic_eval_mean": trained["best_periodic_mean"]}
        for domain in ("source", "target"):
            result["best_model"][domain] = evaluate(best_agent, best_rms, domain, final_seeds)
    result["wall_seconds"] = time.time() - start
    with open(os.path.join(run_dir, "eval.json"), "w") as f:
        json.dump(result, f, indent=2)
    writer.close()
    print(f"{run_dir}: source {result['source']['mean']} +- {result['source']['std']}, "
          f"target {result['target']['mean']} +- {result['target']['std']} "
          f"({result['target']['episodes']} episodes each)"
          + (f"; best model (step {trained['best_step']}): target {result['best_model']['target']['mean']}"
             if trained["best"] else ""))
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))
