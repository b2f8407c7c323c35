"""Synchronous Advantage Actor-Critic (A2C) for continuous (Box) or discrete actions, in one file.

A2C runs `num_envs` environments in lockstep, collects `num_steps` transitions from each with the
current policy, and takes ONE gradient step on the actor-critic loss of that small batch: the
policy gradient weighted by an n-step (or GAE) advantage, plus a value regression and an entropy
bonus. It is the synchronous, batched form of A3C: the same update, without the asynchrony.

Papers: Mnih et al. 2016, "Asynchronous Methods for Deep Reinforcement Learning", arXiv:1602.01783
(Section 4 and Algorithm S3: the n-step return R_t = sum_{i<k} gamma^i r_{t+i} + gamma^k V(s_{t+k}),
the gradient grad log pi(a_t|s_t) (R_t - V(s_t)) + beta grad H(pi(s_t)), the value loss
(R_t - V(s_t))^2, RMSProp); Schulman et al. 2016, arXiv:1506.02438, Eq. 16 (GAE, which with
lambda = 1 is exactly the n-step advantage above); Wu et al. 2017 / OpenAI Baselines for the
synchronous variant. Observation / reward normalization and orthogonal init follow Huang et al.
2022. A time-limit truncation bootstraps V(final observation); a termination does not.

    python a2c.py --env-id CartPole-v1 --total-timesteps 100000
    python a2c.py --env-id Hopper-v4
    python a2c.py --env-id Hopper-v4 --checkpoint runs/<run>/best_model.pt
    python a2c.py --env-id Hopper-v4 --init-checkpoint runs/<run>/model.pt --total-timesteps 500000
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
from torch.distributions import Categorical, Independent, Normal
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

import hopper_envs  # noqa: F401  (registers the CustomHopper-* ids)

OPTIMIZERS = ("rmsprop", "adam")


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]  # name of this experiment, part of the run directory
    seed: int = 1  # seed of random, numpy, torch and the environments
    torch_deterministic: bool = True  # make torch use deterministic algorithms
    torch_threads: int = 1  # torch CPU threads; 1 is fastest for 64-unit networks
    env_id: str = "Hopper-v4"  # gymnasium id of an environment with a Box or Discrete action space
    total_timesteps: int = 1_000_000  # total environment steps of training
    learning_rate: float = 7e-4  # optimizer learning rate (start value when annealed)
    num_envs: int = 8  # parallel environments
    vector_env: Literal["sync", "async"] = "sync"
    """sync: the envs step one after another in this process; async: one worker process per env
    (gymnasium AsyncVectorEnv), so that --num-envs > 1 steps on several cores (same trajectories)"""
    num_steps: int = 16  # steps per environment per update: the n of the n-step return
    anneal_lr: bool = True  # decay the learning rate linearly to 0 over training
    optimizer: str = "rmsprop"  # rmsprop (the paper's) or adam
    rmsprop_alpha: float = 0.99  # RMSProp smoothing constant (the paper's 0.99)
    optimizer_eps: float = 1e-5  # epsilon of RMSProp / Adam
    gamma: float = 0.99  # discount factor
    gae_lambda: float = 1.0  # GAE lambda; 1.0 gives the paper's n-step advantage
    norm_adv: bool = False  # normalize advantages over each batch
    norm_obs: bool = True  # normalize observations with running statistics (frozen and saved for evaluation)
    norm_reward: bool = True  # scale rewards by the running std of the discounted return, then clip to +-10
    ent_coef: float = 0.0  # entropy bonus coefficient (beta of the paper)
    vf_coef: float = 0.5  # value loss coefficient
    max_grad_norm: float = 0.5  # global gradient-norm clipping
    log_dir: str = "runs"  # where run directories are created
    save_model: bool = True  # write model.pt into the run directory
    eval_episodes: int = 10  # deterministic evaluation episodes after training
    checkpoint: str | None = None  # load this model.pt and only evaluate it
    init_checkpoint: str | None = None
    """continue training from this model.pt: weights, normalization, optimizer, global step"""
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
    observations if obs_rms is None). Never updates obs_rms: training updates it explicitly,
    evaluation leaves it frozen.
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
    """Separate 64-64 tanh actor and critic.

    Box actions (act_dim > 0 with discrete=False): a Gaussian with a state-independent log-std.
    Discrete actions: a Categorical over act_dim logits. `value`, `dist` and `act` take
    (normalized) observations of shape (B, obs_dim).
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


def compute_gae(rewards, values, next_values, terminated, dones, gamma: float, gae_lambda: float):
    """Advantages and returns over a rollout; with gae_lambda = 1 these are the n-step ones of A3C.

    rewards, values, next_values, terminated, dones: tensors of shape (T, N). next_values[t] is
    V(s_{t+1}) of the true next state: V(final observation) when an episode ended at t, and the
    bootstrap V(s_T) at the end of the rollout. terminated marks true terminal states (no
    bootstrap); dones = terminated | truncated cuts the sum.
    delta_t = r_t + gamma (1 - terminated_t) V(s_{t+1}) - V(s_t)
    A_t = delta_t + gamma lambda (1 - done_t) A_{t+1}                (GAE paper Eq. 16)
    With lambda = 1, returns_t = A_t + V(s_t) = sum_{i<k} gamma^i r_{t+i} + gamma^k V(s_{t+k}), the
    n-step return of Mnih et al. 2016, Algorithm S3 (k = steps to the rollout's or episode's end).
    Returns (advantages, returns), both (T, N), in reward units.
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
    """T steps of N envs collected by the current policy (Mnih et al. 2016, Algorithm S3: "Perform a_t
    according to policy").

    obs, final_obs: (T, N, obs_dim), normalized if norm_obs; final_obs[t, i] is the last observation of
    an episode that ended at step t (zero elsewhere). actions: (T, N, act_dim), the unclipped Gaussian
    samples, or (T, N) int64 for a Discrete space. rewards: (T, N), normalized and clipped if
    norm_reward. terminated, dones = terminated | truncated: (T, N) bool. last_obs: (N, obs_dim)
    normalized observation after step T-1; next_obs: the same, raw, where the next rollout starts.
    episodes: (t, raw return, length) of each finished episode.
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


def make_vector_env(env_id: str, num_envs: int, gamma: float, norm_reward: bool, vector_env: str = "sync"):
    """Training envs with raw-return statistics and, if norm_reward, reward scaling and clipping
    (Huang et al. 2022, details 6-7); returns (envs, the reward normalizer's running statistics of
    the discounted return, or None)."""
    vector = gym.vector.AsyncVectorEnv if vector_env == "async" else gym.vector.SyncVectorEnv
    envs = vector([lambda: make_env(env_id)] * num_envs, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    envs = gym.wrappers.vector.RecordEpisodeStatistics(envs)  # raw returns, before any scaling
    if not norm_reward:
        return envs, None
    reward_normalizer = envs = gym.wrappers.vector.NormalizeReward(envs, gamma=gamma)
    return gym.wrappers.vector.TransformReward(envs, lambda r: np.clip(r, -10, 10)), reward_normalizer


@torch.no_grad()  # not inference_mode: the update back-propagates through ops on these tensors
def collect_rollout(envs: gym.vector.VectorEnv, agent: Agent, obs_rms: RunningMeanStd | None, next_obs: np.ndarray,
                    num_steps: int) -> Rollout:
    """Run the policy for num_steps steps of every env from raw observations next_obs (N, obs_dim);
    updates obs_rms (if any) with every observation it normalizes. envs autoreset in the same step.
    The rollout is gathered in CPU memory and returned on the agent's device."""
    N, obs_dim = next_obs.shape
    space = envs.single_action_space
    obs, final_obs = torch.zeros((num_steps, N, obs_dim)), torch.zeros((num_steps, N, obs_dim))
    actions = torch.zeros((num_steps, N, *space.shape), dtype=torch.long if agent.discrete else torch.float32)
    rewards = torch.zeros((num_steps, N))
    terminated, dones = torch.zeros((num_steps, N), dtype=torch.bool), torch.zeros((num_steps, N), dtype=torch.bool)
    # The loop writes through numpy views of the same memory (cheaper than torch indexing per item).
    obs_np, final_obs_np, actions_np, rewards_np, terminated_np, dones_np = (
        x.numpy() for x in (obs, final_obs, actions, rewards, terminated, dones))
    episodes, device = [], next(agent.parameters()).device
    for step in range(num_steps):
        if obs_rms is not None:
            obs_rms.update(next_obs)
        normalized = normalize_obs(next_obs, obs_rms)
        obs_np[step] = normalized.numpy()
        actions_np[step] = agent.act(normalized.to(device)).cpu().numpy()
        # The Gaussian sample is stored unclipped (its log-prob is exact); the env sees it clipped.
        env_action = actions_np[step] if agent.discrete else np.clip(actions_np[step], space.low, space.high)
        next_obs, reward, term, trunc, infos = envs.step(env_action)
        rewards_np[step], terminated_np[step], dones_np[step] = reward, term, term | trunc
        for i in np.flatnonzero(dones_np[step]):  # next_obs[i] already starts the next episode
            final_obs_np[step, i] = normalize_obs(infos["final_obs"][i][None], obs_rms)[0].numpy()
        for i in np.flatnonzero(infos.get("_episode", ())):
            episodes.append((step, float(infos["episode"]["r"][i]), int(infos["episode"]["l"][i])))
    tensors = (obs, actions, rewards, terminated, dones, final_obs, normalize_obs(next_obs, obs_rms))
    return Rollout(*(x.to(device) for x in tensors), next_obs, episodes)


@torch.no_grad()
def advantages_and_returns(agent: Agent, rollout: Rollout, gamma: float, gae_lambda: float):
    """GAE (n-step advantages when gae_lambda = 1) over a rollout, bootstrapping V(final observation)
    where a time limit truncated an episode.

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


def a2c_loss(agent: Agent, obs, actions, advantages, returns, ent_coef: float, vf_coef: float):
    """The A2C loss to minimize and its parts (Mnih et al. 2016, Algorithm S3).

    obs (B, obs_dim), actions (B, ...), advantages and returns (B,). The policy term's gradient is
    -E[grad log pi(a|s) A] (advantages are constants); value term 0.5 E[(R - V(s))^2]; the entropy
    bonus is subtracted. Returns (loss, policy_loss, value_loss, entropy), scalars.
    """
    dist = agent.dist(obs)
    pg_loss = -(dist.log_prob(actions) * advantages.detach()).mean()
    v_loss = 0.5 * ((agent.value(obs) - returns) ** 2).mean()
    entropy = dist.entropy().mean()
    return pg_loss - ent_coef * entropy + vf_coef * v_loss, pg_loss, v_loss, entropy


def a2c_update(agent: Agent, optimizer: torch.optim.Optimizer, rollout: Rollout, advantages: torch.Tensor,
               returns: torch.Tensor, values: torch.Tensor, ent_coef: float, vf_coef: float, max_grad_norm: float,
               norm_adv: bool, diagnostics: bool) -> dict[str, float]:
    """ONE gradient step on the A2C loss of the whole rollout, its global norm clipped to max_grad_norm
    (Algorithm S3's update of theta and theta_v, made synchronous). advantages, returns, values: (T, N).

    Returns the TensorBoard scalars when `diagnostics` (else {}): the losses, and approx_kl =
    E[(r - 1) - log r], how far this step moved the policy, and the critic's explained variance.
    """
    b_obs, b_actions = rollout.obs.flatten(0, 1), rollout.actions.flatten(0, 1)
    with torch.no_grad():  # pi_old(a|s), only when logged: the update does not need it
        old_logprob = agent.dist(b_obs).log_prob(b_actions) if diagnostics else None
    b_advantages, b_returns = advantages.flatten(), returns.flatten()
    if norm_adv:
        b_advantages = (b_advantages - b_advantages.mean()) / (b_advantages.std() + 1e-8)
    loss, pg_loss, v_loss, entropy = a2c_loss(agent, b_obs, b_actions, b_advantages, b_returns, ent_coef, vf_coef)
    optimizer.zero_grad()
    loss.backward()
    nn.utils.clip_grad_norm_(agent.parameters(), max_grad_norm)
    optimizer.step()
    if not diagnostics:
        return {}
    with torch.inference_mode():
        logratio = agent.dist(b_obs).log_prob(b_actions) - old_logprob
        var_returns = b_returns.var()
        explained_var = float(1 - (b_returns - values.flatten()).var() / var_returns) if var_returns > 0 else math.nan
    return {"losses/policy_loss": pg_loss.item(), "losses/value_loss": v_loss.item(),
            "losses/entropy": entropy.item(), "losses/approx_kl": float((logratio.exp() - 1 - logratio).mean()),
            "losses/explained_variance": explained_var}


@torch.inference_mode()
def evaluate(agent: Agent, obs_rms: RunningMeanStd | None, env_id: str, seeds: range,
             video_dir: str | None = None) -> list[float]:
    """Returns of one deterministic episode (mode of pi) per env seed, normalization frozen (obs_rms is
    read, never updated). Seeds: training uses seed .. seed + num_envs - 1, the evaluations during
    training seed + 2 * 10**6 + k, the final evaluation seed + 10**6 + k."""
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
    check_range(args, ("learning_rate", "optimizer_eps", "max_grad_norm"),
                lambda v: 0 < v < math.inf, "a finite number > 0")
    check_range(args, ("gamma", "gae_lambda", "rmsprop_alpha"), lambda v: 0 <= v <= 1, "in [0, 1]")
    check_range(args, ("ent_coef", "vf_coef"), lambda v: 0 <= v < math.inf, "a finite number >= 0")
    check_range(args, ("total_timesteps", "num_envs", "num_steps", "torch_threads", "periodic_eval_episodes"),
                lambda v: v > 0, "a whole number > 0")
    check_range(args, ("eval_episodes", "eval_freq"), lambda v: v >= 0, "a whole number >= 0")
    if args.optimizer not in OPTIMIZERS:
        fail(f"unknown optimizer {args.optimizer!r} (choose one of {', '.join(OPTIMIZERS)})")
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
                     optimizer: torch.optim.Optimizer, global_step: int, args: Args) -> dict:
    """What model.pt and best_model.pt hold (tensors and plain values only; an absent normalizer is
    {}): enough to evaluate the policy, or to continue training with --init-checkpoint."""
    return copy.deepcopy({"agent": agent.state_dict(), "obs_rms": rms_to_tensors(obs_rms) if obs_rms else {},
                          "reward_rms": rms_to_tensors(reward_rms) if reward_rms else {},
                          "optimizer": optimizer.state_dict(), "global_step": global_step, "args": asdict(args)})


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
    if training and not {"optimizer", "reward_rms", "global_step"} <= set(checkpoint):
        fail(f"checkpoint {path} has no optimizer state (continue from a model.pt written by this version)")
    return checkpoint


def train(args: Args, agent: Agent, obs_rms: RunningMeanStd | None, writer: SummaryWriter, run_dir: str,
          resume: dict | None) -> dict:
    """A2C (Algorithm S3 of Mnih et al., synchronous) for args.total_timesteps env steps, from
    `resume` (a checkpoint dict) if given; updates agent and obs_rms in place, keeps the best
    evaluated policy.

    Returns {"global_step", "train_returns" (the last 100 raw training returns), "best" (the
    checkpoint dict of the best periodic evaluation, or None), "best_step", "best_periodic_mean"}.
    """
    envs, reward_normalizer = make_vector_env(args.env_id, args.num_envs, args.gamma, args.norm_reward, args.vector_env)
    if args.optimizer == "rmsprop":
        optimizer = torch.optim.RMSprop(agent.parameters(), lr=args.learning_rate, alpha=args.rmsprop_alpha,
                                        eps=args.optimizer_eps)
    else:
        optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=args.optimizer_eps, fused=True)
    global_step = 0
    if resume:
        optimizer.load_state_dict(resume["optimizer"])
        if reward_normalizer and resume["reward_rms"]:
            reward_normalizer.return_rms = rms_from_tensors(resume["reward_rms"])
        global_step = int(resume["global_step"])
    first_step, final_step = global_step, global_step + args.total_timesteps
    # log about every 2048 steps: logging costs more than one small update
    log_every = max(1, 2048 // (args.num_envs * args.num_steps))
    train_returns: deque[float] = deque(maxlen=100)
    best = {"best": None, "best_step": None, "best_periodic_mean": -math.inf}
    periodic_seeds = range(args.seed + 2 * 10**6, args.seed + 2 * 10**6 + args.periodic_eval_episodes)

    def state() -> dict:
        return checkpoint_state(agent, obs_rms, reward_normalizer.return_rms if reward_normalizer else None,
                                optimizer, global_step, args)

    start = time.time()
    next_obs, _ = envs.reset(seed=args.seed)
    bar = tqdm(total=args.total_timesteps, disable=not (args.progress and sys.stderr.isatty()), unit="step")
    iteration = 0
    while global_step < final_step:
        # lr anneals linearly to 0 at final_step; a continued run goes on from where its step is.
        lr = args.learning_rate * (1.0 - global_step / final_step if args.anneal_lr else 1.0)
        optimizer.param_groups[0]["lr"] = lr
        # The last rollout is shorter if needed, so training takes exactly total_timesteps steps.
        num_steps = min(args.num_steps, (final_step - global_step) // args.num_envs)
        rollout = collect_rollout(envs, agent, obs_rms, next_obs, num_steps)
        next_obs = rollout.next_obs
        for t, episodic_return, length in rollout.episodes:
            train_returns.append(episodic_return)
            writer.add_scalar("charts/episodic_return", episodic_return, global_step + (t + 1) * args.num_envs)
            writer.add_scalar("charts/episodic_length", length, global_step + (t + 1) * args.num_envs)
        global_step += num_steps * args.num_envs
        iteration += 1
        advantages, returns, values = advantages_and_returns(agent, rollout, args.gamma, args.gae_lambda)
        log_now = iteration % log_every == 0 or global_step == final_step
        stats = a2c_update(agent, optimizer, rollout, advantages, returns, values, args.ent_coef, args.vf_coef,
                           args.max_grad_norm, args.norm_adv, diagnostics=log_now)
        if log_now:
            sps = int((global_step - first_step) / (time.time() - start))
            for tag, value in {"charts/learning_rate": lr, "charts/SPS": sps, **stats}.items():
                writer.add_scalar(tag, value, global_step)
            bar.update(global_step - first_step - bar.n)
            bar.set_postfix(SPS=sps, ret=f"{train_returns[-1]:.0f}" if train_returns else "-")
        steps_taken = num_steps * args.num_envs
        if args.eval_freq and (global_step // args.eval_freq > (global_step - steps_taken) // args.eval_freq
                               or global_step == final_step):
            best = keep_best(best, evaluate(agent, obs_rms, args.env_id, periodic_seeds), global_step, state, writer,
                             os.path.join(run_dir, "best_model.pt") if args.save_model else None)
    bar.close()
    envs.close()
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
