"""Trust Region Policy Optimization (TRPO) with GAE for continuous actions, in one file.

TRPO collects a batch with the current Gaussian policy, then takes the largest step on the
importance-sampled surrogate that keeps the mean KL divergence to the old policy under `max_kl`:
the natural-gradient direction F^-1 g comes from conjugate gradient on Fisher-vector products
(double back-propagation of the mean KL, no explicit Fisher matrix), is scaled to the KL bound,
and a backtracking line search accepts the first step that improves the surrogate and satisfies
the bound on the exact KL. The value function is fitted separately by minibatch Adam regression.

Papers: Schulman et al. 2015, "Trust Region Policy Optimization", arXiv:1502.05477 (Eq. 14 the
constrained problem; Appendix C: conjugate gradient on Fisher-vector products, step length
beta = sqrt(2 delta / s^T A s), line search); Schulman et al. 2016, arXiv:1506.02438 (GAE, Eq. 16).
Observation / reward normalization and a time-limit truncation that bootstraps V(final
observation) are as in ppo_continuous.py.

Defaults max_kl 0.03 and cg_damping 0.3 are the step that sb3-contrib's TRPO takes on Hopper with its
target_kl 0.01 and damping 0.1 (the setting behind rl-zoo's Hopper results): it averages the KL
over the 3 action dimensions instead of summing it, which scales both by 3. The two updates agree
to 1e-6 on a shared batch (tests/test_trpo_vs_sb3.py). On Hopper-v4, seed 1, 1M steps, mean
deterministic return: 0.01 / 0.1 gave 1382 (50 episodes), 0.03 / 0.1 gave 1547, 0.03 / 0.3 gave 3521 (20 each).

    python trpo.py --env-id Hopper-v4
    python trpo.py --env-id InvertedPendulum-v4 --total-timesteps 50000
    python trpo.py --env-id Hopper-v4 --checkpoint runs/<run>/best_model.pt
    python trpo.py --env-id Hopper-v4 --init-checkpoint runs/<run>/model.pt --total-timesteps 500000
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
from torch.nn.utils import parameters_to_vector, vector_to_parameters
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

import hopper_envs  # noqa: F401  (registers the CustomHopper-* ids)


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]  # name of this experiment, part of the run directory
    seed: int = 1  # seed of random, numpy, torch and the environments
    torch_deterministic: bool = True  # make torch use deterministic algorithms
    torch_threads: int = 1  # torch CPU threads; 1 is fastest for 64-unit networks
    env_id: str = "Hopper-v4"  # gymnasium id of an environment with a Box action space
    total_timesteps: int = 1_000_000  # total environment steps of training
    num_envs: int = 2  # parallel environments
    vector_env: Literal["sync", "async"] = "sync"
    """sync: the envs step one after another in this process; async: one worker process per env
    (gymnasium AsyncVectorEnv), so that --num-envs > 1 steps on several cores (same trajectories)"""
    num_steps: int = 1024  # steps per environment per policy update
    gamma: float = 0.99  # discount factor
    gae_lambda: float = 0.95  # GAE lambda
    max_kl: float = 0.03
    """trust region: bound delta on the mean over states of KL(pi_old || pi), summed over action dims"""
    cg_iters: int = 10  # conjugate-gradient iterations for F^-1 g
    cg_damping: float = 0.3  # added to the Fisher: (F + damping I) v, keeps CG well conditioned
    line_search_steps: int = 10  # backtracking steps before the update is rejected
    backtrack_coef: float = 0.8  # step shrink factor per backtracking step
    norm_adv: bool = True  # normalize advantages over the batch
    vf_lr: float = 1e-3  # Adam learning rate of the value function (the policy step has no learning rate)
    vf_iters: int = 20  # epochs of value-function regression per batch (20: rl-zoo's TRPO Hopper setting)
    vf_minibatches: int = 16  # minibatches per value-function epoch; must divide num_envs * num_steps
    log_dir: str = "runs"  # where run directories are created
    save_model: bool = True  # write model.pt into the run directory
    eval_episodes: int = 10  # deterministic evaluation episodes after training
    checkpoint: str | None = None  # load this model.pt and only evaluate it
    init_checkpoint: str | None = None
    """continue training from this model.pt: weights, normalization, value optimizer, global step"""
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


def flat_grad(output: torch.Tensor, params: list[nn.Parameter], **kwargs) -> torch.Tensor:
    """d output / d params as one flat vector of shape (P,), P = total parameter count."""
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(output, params, **kwargs)])


def conjugate_gradient(Avp: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, iters: int,
                       residual_tol: float = 1e-10) -> torch.Tensor:
    """Approximately solve A x = b for symmetric positive-definite A given only v -> A v.

    b: (P,). Returns x: (P,). Stops early once the squared residual is below residual_tol.
    Source: Nocedal & Wright (2006), Algorithm 5.2; TRPO paper Appendix C uses it with A = F.
    """
    x = torch.zeros_like(b)
    r, p = b.clone(), b.clone()  # residual b - A x and search direction, with x = 0
    rr = r @ r
    for _ in range(iters):
        if rr < residual_tol:
            break
        Ap = Avp(p)
        alpha = rr / (p @ Ap)
        x += alpha * p
        r -= alpha * Ap
        rr_new = r @ r
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


def fisher_vector_product(kl_grad: torch.Tensor, params: list[nn.Parameter], v: torch.Tensor,
                          damping: float) -> torch.Tensor:
    """(F + damping I) v by double back-propagation, F = Hessian of the mean KL at theta_old.

    kl_grad: (P,) gradient of mean KL(pi_old || pi_theta) w.r.t. params, built with
    create_graph=True at theta = theta_old (its value is 0; its derivative is F). v: (P,).
    Returns (P,). Source: TRPO paper Appendix C ("analytically computing the Hessian of KL").
    """
    return flat_grad(kl_grad @ v, params, retain_graph=True) + damping * v


def line_search(params: list[nn.Parameter], full_step: torch.Tensor,
                evaluate_step: Callable[[], tuple[float, float]], max_kl: float, max_steps: int,
                backtrack_coef: float) -> tuple[bool, int, float, float]:
    """Backtracking line search on theta_old + backtrack_coef^k * full_step, k = 0, 1, ...

    evaluate_step() -> (surrogate, mean KL(pi_old || pi)) at the parameters as currently set.
    Accepts the first step with KL <= max_kl and a surrogate above theta_old's; if none, the
    parameters are restored bit-identical. Returns (accepted, steps tried, KL, improvement).
    Source: TRPO paper Appendix C (line search on the nonlinear constraint and objective).
    """
    theta_old = parameters_to_vector(params).clone()
    surrogate_old, _ = evaluate_step()
    for k in range(max_steps):
        vector_to_parameters(theta_old + backtrack_coef**k * full_step, params)
        surrogate, kl = evaluate_step()
        if kl <= max_kl and surrogate > surrogate_old:
            return True, k + 1, kl, surrogate - surrogate_old
    vector_to_parameters(theta_old, params)
    return False, max_steps, 0.0, 0.0


def trpo_step(agent: Agent, obs: torch.Tensor, actions: torch.Tensor, advantages: torch.Tensor, *, max_kl: float,
              cg_iters: int, cg_damping: float, line_search_steps: int, backtrack_coef: float) -> dict[str, float]:
    """One TRPO policy update on a batch (Eq. 14 approximately solved as in Appendix C).

    obs (B, obs_dim) normalized, actions (B, act_dim), advantages (B,). Maximizes the surrogate
    L(theta) = E[pi_theta(a|s) / pi_old(a|s) A] subject to mean KL(pi_old || pi_theta) <= max_kl, with
    cg_iters conjugate-gradient steps on F + cg_damping I and a line search of line_search_steps steps
    shrinking by backtrack_coef. Returns the statistics logged to TensorBoard.
    """
    params = list(agent.actor_mean.parameters()) + [agent.actor_logstd]
    with torch.no_grad():
        old = agent.dist(obs)
        old = Normal(old.loc.clone(), old.scale.clone(), validate_args=False)  # pi_old, fixed
        old_logprob = old.log_prob(actions).sum(-1)

    def surrogate_and_kl() -> tuple[torch.Tensor, torch.Tensor]:
        dist = agent.dist(obs)
        ratio = (dist.log_prob(actions).sum(-1) - old_logprob).exp()
        return (ratio * advantages).mean(), kl_divergence(old, dist).sum(-1).mean()

    surrogate, kl = surrogate_and_kl()
    g = flat_grad(surrogate, params, retain_graph=True)
    kl_grad = flat_grad(kl, params, create_graph=True)
    step_dir = conjugate_gradient(lambda v: fisher_vector_product(kl_grad, params, v, cg_damping), g,
                                  cg_iters)  # s ~ F^-1 g
    shs = step_dir @ fisher_vector_product(kl_grad, params, step_dir, cg_damping)  # s^T F s
    full_step = torch.sqrt(2 * max_kl / (shs + 1e-12)) * step_dir  # beta s, Appendix C

    with torch.no_grad():
        accepted, steps, kl_after, improvement = line_search(
            params, full_step, lambda: tuple(x.item() for x in surrogate_and_kl()), max_kl, line_search_steps,
            backtrack_coef)
        dist = agent.dist(obs)
        logratio = dist.log_prob(actions).sum(-1) - old_logprob
    return {"losses/policy_loss": -(surrogate.item() + improvement), "losses/kl": kl_after,
            "losses/approx_kl": ((logratio.exp() - 1) - logratio).mean().item(),  # sampled k3 estimate
            "losses/surrogate_improvement": improvement, "charts/line_search_steps": steps,
            "charts/step_accepted": float(accepted), "losses/entropy": dist.entropy().sum(-1).mean().item()}


def update_value_function(agent: Agent, vf_optimizer: torch.optim.Optimizer, obs: torch.Tensor,
                          returns: torch.Tensor, vf_iters: int, minibatch_size: int) -> float:
    """Regress V on the lambda-returns, separately from the policy step: vf_iters epochs of minibatch
    Adam on 0.5 (V(s) - R)^2. obs (B, obs_dim) normalized, returns (B,). Returns the mean loss."""
    v_losses = []
    for epoch in range(vf_iters):
        for mb in torch.randperm(len(returns), device=returns.device).split(minibatch_size):
            v_loss = 0.5 * ((agent.value(obs[mb]) - returns[mb]) ** 2).mean()
            vf_optimizer.zero_grad()
            v_loss.backward()
            vf_optimizer.step()
            v_losses.append(v_loss.detach())
    return torch.stack(v_losses).mean().item()


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


def check_args(args: Args) -> tuple[int, int]:
    """Exit 2 on bad input before anything is written; returns (obs_dim, act_dim) of the env."""
    check_range(args, ("seed",), lambda v: 0 <= v < 2**32, "in [0, 2**32)")
    check_range(args, ("max_kl", "vf_lr"), lambda v: 0 < v < math.inf, "a finite number > 0")
    check_range(args, ("gamma", "gae_lambda"), lambda v: 0 <= v <= 1, "in [0, 1]")
    check_range(args, ("backtrack_coef",), lambda v: 0 < v < 1, "in (0, 1)")
    check_range(args, ("cg_damping",), lambda v: 0 <= v < math.inf, "a finite number >= 0")
    check_range(args, ("total_timesteps", "num_envs", "num_steps", "cg_iters", "line_search_steps", "vf_iters",
                       "vf_minibatches", "torch_threads", "periodic_eval_episodes"),
                lambda v: v > 0, "a whole number > 0")
    check_range(args, ("eval_episodes", "eval_freq"), lambda v: v >= 0, "a whole number >= 0")
    if (args.num_envs * args.num_steps) % args.vf_minibatches:
        fail(f"--vf-minibatches {args.vf_minibatches} does not divide the batch of "
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
                     vf_optimizer: torch.optim.Optimizer, global_step: int, args: Args) -> dict:
    """What model.pt and best_model.pt hold (tensors and plain values only): enough to evaluate the
    policy, or to continue training with --init-checkpoint."""
    return copy.deepcopy({"agent": agent.state_dict(), "obs_rms": rms_to_tensors(obs_rms),
                          "reward_rms": rms_to_tensors(reward_rms), "vf_optimizer": vf_optimizer.state_dict(),
                          "global_step": global_step, "args": asdict(args)})


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
    if training and not {"vf_optimizer", "reward_rms", "global_step"} <= set(checkpoint):
        fail(f"checkpoint {path} has no optimizer state (continue from a model.pt written by this version)")
    return checkpoint


def train(args: Args, agent: Agent, obs_rms: RunningMeanStd, writer: SummaryWriter, run_dir: str,
          resume: dict | None) -> dict:
    """TRPO (Algorithm 1 of the TRPO paper, single-path) for args.total_timesteps env steps, from
    `resume` (a checkpoint dict) if given; updates agent and obs_rms in place, keeps the best
    evaluated policy.

    Returns {"global_step", "train_returns" (the last 100 raw training returns), "best" (the
    checkpoint dict of the best periodic evaluation, or None), "best_step", "best_periodic_mean"}.
    """
    envs, reward_rms = make_vector_env(args.env_id, args.num_envs, args.gamma, args.vector_env)
    vf_optimizer = torch.optim.Adam(agent.critic.parameters(), lr=args.vf_lr, eps=1e-5, fused=True)
    global_step = 0
    if resume:
        vf_optimizer.load_state_dict(resume["vf_optimizer"])
        reward_rms.return_rms = rms_from_tensors(resume["reward_rms"])
        global_step = int(resume["global_step"])
    first_step, final_step = global_step, global_step + args.total_timesteps
    minibatch_size = args.num_envs * args.num_steps // args.vf_minibatches
    train_returns: deque[float] = deque(maxlen=100)
    best = {"best": None, "best_step": None, "best_periodic_mean": -math.inf}
    periodic_seeds = range(args.seed + 2 * 10**6, args.seed + 2 * 10**6 + args.periodic_eval_episodes)

    def state() -> dict:
        return checkpoint_state(agent, obs_rms, reward_rms.return_rms, vf_optimizer, global_step, args)

    start = time.time()
    next_obs, _ = envs.reset(seed=args.seed)
    bar = tqdm(total=args.total_timesteps, disable=not (args.progress and sys.stderr.isatty()), unit="step")
    while global_step < final_step:
        # The last batch is shorter if needed, so training takes exactly total_timesteps steps.
        num_steps = min(args.num_steps, (final_step - global_step) // args.num_envs)
        rollout = collect_rollout(envs, agent, obs_rms, next_obs, num_steps)  # Algorithm 1: run the policy
        next_obs = rollout.next_obs
        for t, episodic_return, length in rollout.episodes:
            train_returns.append(episodic_return)
            writer.add_scalar("charts/episodic_return", episodic_return, global_step + (t + 1) * args.num_envs)
            writer.add_scalar("charts/episodic_length", length, global_step + (t + 1) * args.num_envs)
        global_step += num_steps * args.num_envs
        advantages, returns, values = advantages_and_returns(agent, rollout, args.gamma, args.gae_lambda)
        b_obs, b_actions = rollout.obs.reshape(advantages.numel(), -1), rollout.actions.reshape(advantages.numel(), -1)
        b_advantages, b_returns, b_values = advantages.reshape(-1), returns.reshape(-1), values.reshape(-1)
        if args.norm_adv:
            b_advantages = (b_advantages - b_advantages.mean()) / (b_advantages.std() + 1e-8)
        stats = trpo_step(agent, b_obs, b_actions, b_advantages, max_kl=args.max_kl, cg_iters=args.cg_iters,
                          cg_damping=args.cg_damping, line_search_steps=args.line_search_steps,
                          backtrack_coef=args.backtrack_coef)  # Eq. 14, Appendix C
        v_loss = update_value_function(agent, vf_optimizer, b_obs, b_returns, args.vf_iters, minibatch_size)

        var_returns = b_returns.var()
        explained_var = float("nan") if var_returns == 0 else float(1 - (b_returns - b_values).var() / var_returns)
        sps = int((global_step - first_step) / (time.time() - start))
        stats.update({"charts/learning_rate": args.vf_lr, "charts/SPS": sps, "losses/explained_variance": explained_var,
                      "losses/value_loss": v_loss})
        for tag, value in stats.items():
            writer.add_scalar(tag, value, global_step)
        steps_taken = num_steps * args.num_envs
        if args.eval_freq and (global_step // args.eval_freq > (global_step - steps_taken) // args.eval_freq
                               or global_step == final_step):
            best = keep_best(best, evaluate(agent, obs_rms, args.env_id, periodic_seeds), global_step, state, writer,
                             os.path.join(run_dir, "best_model.pt") if args.save_model else None)
        bar.update(steps_taken)
        bar.set_postfix(SPS=sps, ret=f"{train_returns[-1]:.0f}" if train_returns else "-")
    bar.close()
    envs.close()
    if args.save_model:
        torch.save(state(), os.path.join(run_dir, "model.pt"))
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
