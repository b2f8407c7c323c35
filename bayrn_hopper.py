"""Bayesian Domain Randomization (BayRn) on MuJoCo Hopper: choose the randomization by Bayesian optimization.

UDR needs a hand-picked distribution of masses. BayRn searches for it: phi = (low, high) of the
uniform mass distribution of thigh, leg and foot (6 numbers, kg). Each candidate phi trains a
policy on the source Hopper randomized by U(phi) and is scored by the mean return of a few
deterministic episodes on the target (the "real" robot). A Gaussian process over phi -> return and
an acquisition function (UCB or EI) choose the next phi. At the end phi* is the evaluated candidate
with the highest posterior mean, and its policy is evaluated on target and source.

Paper: Muratore et al. 2021, "Data-efficient Domain Randomization with Bayesian Optimization",
IEEE RA-L, arXiv:2003.02471: the bi-level problem phi* = argmax_phi J_real(theta*(phi)) with
theta*(phi) = argmax_theta E_{xi ~ nu(xi; phi)}[J(theta, xi)] (Eq. 6-7), Algorithm 1 (the loop),
UCB a(phi) = mu(phi) + sqrt(beta) sigma(phi) and expected improvement (Jones et al. 1998, Eq. 15).
GP: Matern-5/2 ARD kernel (Rasmussen & Williams 2006, Eq. 4.17), exact marginal likelihood (Eq. 5.8).
The inner learner is PPO-Clip with GAE, a copy of udr_hopper.py's.

    python bayrn_hopper.py --num-init 5 --iterations 5 --inner-timesteps 500000
    python bayrn_hopper.py --resume runs/<run>          # continue an interrupted search
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields

import gpytorch
import gymnasium as gym
import numpy as np
import torch
import tyro
from gymnasium.wrappers.utils import RunningMeanStd
from torch import nn
from torch.distributions import Normal
from torch.quasirandom import SobolEngine
from torch.utils.tensorboard import SummaryWriter

import hopper_envs

BODIES = hopper_envs.RANDOMIZED_BODIES
PHI_NAMES = [f"{body}_{end}" for body in BODIES for end in ("low", "high")]
ACQUISITIONS = ("ucb", "ei")
HISTORY = "bayrn_history.jsonl"


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """name of this experiment, part of the run directory"""
    seed: int = 1
    """seed of the search; candidate i trains with seed + i"""
    torch_deterministic: bool = True
    """make torch use deterministic algorithms"""
    phi_low: list[float] | None = None
    """lower corner of the search box, 6 numbers in kg: thigh_low thigh_high leg_low leg_high foot_low foot_high (default: low ends 0.2 x source mass, high ends 1.0 x)"""
    phi_high: list[float] | None = None
    """upper corner of the search box, same order (default: low ends 1.0 x source mass, high ends 1.8 x)"""
    num_init: int = 5
    """initial candidates from a scrambled Sobol sequence over the box"""
    iterations: int = 5
    """Bayesian optimization steps after the initial candidates"""
    inner_timesteps: int = 500_000
    """PPO steps to train each candidate's policy (udr_hopper.py's table uses the same)"""
    target_episodes: int = 5
    """deterministic target episodes per candidate: its J_real estimate"""
    source_episodes: int = 5
    """deterministic source episodes per candidate (logged, free: the source is a simulator)"""
    acquisition: str = "ucb"
    """ucb or ei (expected improvement)"""
    ucb_beta: float = 0.1
    """beta of UCB = mu + sqrt(beta) sigma (0.1 as in the paper's code)"""
    acq_samples: int = 4096
    """Sobol points on which the acquisition is evaluated"""
    acq_restarts: int = 5
    """the best points, refined by gradient ascent on the acquisition"""
    acq_steps: int = 50
    """Adam steps of each refinement"""
    gp_iters: int = 200
    """Adam steps maximizing the GP's exact marginal log likelihood"""
    warm_start: bool = False
    """train each candidate from the previous candidate's policy (cheaper; the paper trains from scratch)"""
    final_timesteps: int = 0
    """if > 0: retrain a fresh policy on phi* for this many steps before the final evaluation"""
    eval_episodes: int = 50
    """final deterministic episodes on target and on source"""
    resume: str | None = None
    """continue this run directory from its bayrn_history.jsonl (with its saved settings)"""
    log_dir: str = "runs"
    """where run directories are created"""
    learning_rate: float = 3e-4
    """PPO: Adam learning rate, annealed linearly to 0"""
    num_envs: int = 1
    """PPO: parallel environments"""
    num_steps: int = 2048
    """PPO: steps per environment per rollout"""
    gamma: float = 0.99
    """PPO: discount factor"""
    gae_lambda: float = 0.95
    """PPO: GAE lambda"""
    num_minibatches: int = 32
    """PPO: minibatches per epoch"""
    update_epochs: int = 10
    """PPO: epochs per rollout"""
    clip_coef: float = 0.2
    """PPO: clip epsilon (policy and value)"""
    ent_coef: float = 0.0
    """PPO: entropy bonus coefficient"""
    vf_coef: float = 0.5
    """PPO: value loss coefficient"""
    max_grad_norm: float = 0.5
    """PPO: global gradient-norm clipping"""


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


def default_box() -> tuple[torch.Tensor, torch.Tensor]:
    """The seed study's Table III style box around the source masses: low ends in [0.2, 1.0] x m,
    high ends in [1.0, 1.8] x m. Returns (lower corner, upper corner), each (6,) float64 in kg."""
    source = hopper_envs.nominal_masses("source")
    m = torch.tensor([source[b] for b in BODIES for _ in (0, 1)], dtype=torch.float64)
    is_low = torch.tensor([1.0, 0.0] * len(BODIES), dtype=torch.float64)
    return m * (0.2 * is_low + 1.0 * (1 - is_low)), m * (1.0 * is_low + 1.8 * (1 - is_low))


def to_unit(phi: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Scale phi (..., 6) from the box [low, high] to the unit cube [0, 1]^6."""
    return (phi - low) / (high - low)


def from_unit(u: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Inverse of to_unit: unit cube (..., 6) -> kg."""
    return low + u * (high - low)


def repair(phi: torch.Tensor) -> torch.Tensor:
    """Make every body's (low, high) pair ordered: a pair with low > high becomes its midpoint twice.

    phi: (..., 2k) in kg, pairs (low, high) per body; returns a new tensor of the same shape.
    """
    pairs = phi.reshape(*phi.shape[:-1], -1, 2)
    mid = pairs.mean(-1, keepdim=True).expand_as(pairs)
    bad = (pairs[..., :1] > pairs[..., 1:]).expand_as(pairs)
    return torch.where(bad, mid, pairs).reshape(phi.shape)


def phi_to_bounds(phi) -> dict[str, tuple[float, float]]:
    """(6,) kg -> {body: (low, high)}, the mass_bounds of hopper_envs."""
    values = [float(v) for v in phi]
    return {body: (values[2 * k], values[2 * k + 1]) for k, body in enumerate(BODIES)}


class GP(gpytorch.models.ExactGP):
    """ExactGP: constant mean, outputscale x Matern-5/2 with one lengthscale per input (ARD)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, likelihood: gpytorch.likelihoods.GaussianLikelihood):
        super().__init__(x, y, likelihood)
        self.mean_module = gpytorch.means.ConstantMean()
        # Gamma priors keep the lengthscales near the scale of the unit cube (mean 0.5): with a handful
        # of points in 6-D, maximizing the likelihood alone collapses a lengthscale and the posterior
        # becomes spikes through the data (seen in a 6-candidate probe run).
        self.covar_module = gpytorch.kernels.ScaleKernel(
            gpytorch.kernels.MaternKernel(nu=2.5, ard_num_dims=x.shape[-1],
                                          lengthscale_prior=gpytorch.priors.GammaPrior(3.0, 6.0),
                                          lengthscale_constraint=gpytorch.constraints.Interval(0.05, 10.0)),
            outputscale_prior=gpytorch.priors.GammaPrior(2.0, 0.5),
            outputscale_constraint=gpytorch.constraints.Interval(0.01, 20.0))
        self.covar_module.base_kernel.lengthscale = 0.5
        self.covar_module.outputscale = 1.0

    def forward(self, x):
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


def fit_gp(x: torch.Tensor, y: torch.Tensor, iters: int) -> GP:
    """Fit a GP to unit-cube inputs x (n, d) and standardized returns y (n,) by maximizing the exact
    marginal log likelihood plus the log priors (MAP) with Adam (lr 0.05); returns it in eval mode
    (float64 throughout)."""
    likelihood = gpytorch.likelihoods.GaussianLikelihood(noise_constraint=gpytorch.constraints.Interval(1e-4, 1.0))
    likelihood.noise = 0.1
    model = GP(x, y, likelihood).double()
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, model)
    for _ in range(iters):
        optimizer.zero_grad()
        loss = -mll(model(x), y)
        loss.backward()
        optimizer.step()
    model.eval()
    return model


def posterior(model: GP, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and standard deviation of the latent function at x (m, d): two (m,) tensors."""
    with gpytorch.settings.fast_pred_var(False):
        f = model(x)
    return f.mean, f.variance.clamp_min(1e-12).sqrt()


def ucb(mean: torch.Tensor, std: torch.Tensor, beta: float) -> torch.Tensor:
    """Upper confidence bound mu + sqrt(beta) sigma (Srinivas et al. 2010; BayRn's default)."""
    return mean + beta**0.5 * std


def expected_improvement(mean: torch.Tensor, std: torch.Tensor, best: float) -> torch.Tensor:
    """Closed-form E[max(f - best, 0)] for f ~ N(mean, std^2): (mu - best) Phi(z) + sigma phi(z),
    z = (mu - best) / sigma (Jones et al. 1998, Eq. 15). Shapes (m,) -> (m,)."""
    z = (mean - best) / std
    unit = Normal(torch.zeros_like(z), torch.ones_like(z))
    return (mean - best) * unit.cdf(z) + std * unit.log_prob(z).exp()


def propose(model: GP, y_best: float, low: torch.Tensor, high: torch.Tensor, args: Args,
            seed: int) -> tuple[torch.Tensor, float]:
    """argmax of the acquisition over the box: Sobol points, then Adam from the best few.

    Works in the unit cube; every point is clamped to it and repaired (low <= high per body) in kg.
    Returns (phi (6,) in kg, acquisition value there).
    """
    def acquisition(u):
        mean, std = posterior(model, u)
        return ucb(mean, std, args.ucb_beta) if args.acquisition == "ucb" else expected_improvement(mean, std, y_best)

    def feasible(u):
        return to_unit(repair(from_unit(u.clamp(0, 1), low, high)), low, high)

    u = feasible(SobolEngine(len(low), scramble=True, seed=seed).draw(args.acq_samples, dtype=torch.float64))
    with torch.no_grad():
        values = acquisition(u)
    u = u[values.topk(min(args.acq_restarts, len(u))).indices].clone().requires_grad_(True)
    optimizer = torch.optim.Adam([u], lr=0.02)
    for _ in range(args.acq_steps):
        optimizer.zero_grad()
        (-acquisition(u).sum()).backward()
        optimizer.step()
        with torch.no_grad():
            u.copy_(feasible(u))
    with torch.no_grad():
        values = acquisition(u)
    best = int(values.argmax())
    return from_unit(u[best].detach(), low, high), float(values[best])


# ---- the inner learner: PPO-Clip with GAE, copied from udr_hopper.py (same defaults, same RNG use) ----
def layer_init(layer: nn.Linear, std: float = np.sqrt(2), bias_const: float = 0.0) -> nn.Linear:
    """Orthogonal weights with gain `std`, constant bias (Huang et al. 2022, detail 2)."""
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias_const)
    return layer


def normalize_obs(obs: np.ndarray, obs_rms: RunningMeanStd, clip: float = 10.0) -> torch.Tensor:
    """clip((obs - mean) / sqrt(var + 1e-8), -clip, clip); obs (B, 11) -> float32 tensor; never updates obs_rms."""
    return torch.from_numpy(np.clip((obs - obs_rms.mean) / np.sqrt(obs_rms.var + 1e-8), -clip, clip).astype(np.float32))


class Agent(nn.Module):
    """Separate 64-64 tanh actor and critic; Gaussian policy with a state-independent log-std."""

    def __init__(self, obs_dim: int = 11, act_dim: int = 3):
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


def train_ppo(args: Args, bounds: dict, agent: Agent, obs_rms: RunningMeanStd, timesteps: int, seed: int,
              writer: SummaryWriter, step_offset: int) -> list[float]:
    """PPO's loop (Algorithm 1 of the PPO paper) on CustomHopper-udr-v0 randomized by `bounds`
    ({body: (low, high)} kg); updates agent and obs_rms in place. Training returns are logged at
    x = step_offset + step; returns the raw returns of the last 100 training episodes."""
    envs = gym.vector.SyncVectorEnv([lambda: gym.make("CustomHopper-udr-v0", mass_bounds=bounds)] * args.num_envs,
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    envs = gym.wrappers.vector.RecordEpisodeStatistics(envs)  # raw returns, before any scaling
    envs = gym.wrappers.vector.NormalizeReward(envs, gamma=args.gamma)  # divide by std of discounted return
    envs = gym.wrappers.vector.TransformReward(envs, lambda r: np.clip(r, -10, 10))
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5, fused=True)

    T, N = args.num_steps, args.num_envs
    batch_size, minibatch_size = T * N, T * N // args.num_minibatches
    num_iterations = max(1, timesteps // batch_size)
    obs, actions = torch.zeros((T, N, 11)), torch.zeros((T, N, 3))
    final_obs, rewards = torch.zeros_like(obs), torch.zeros((T, N))
    terminated, dones = torch.zeros((T, N), dtype=torch.bool), torch.zeros((T, N), dtype=torch.bool)
    obs_np, final_obs_np, actions_np, rewards_np, terminated_np, dones_np = (
        x.numpy() for x in (obs, final_obs, actions, rewards, terminated, dones))
    train_returns, global_step = [], 0
    next_obs, _ = envs.reset(seed=seed)
    for iteration in range(num_iterations):
        optimizer.param_groups[0]["lr"] = args.learning_rate * (1.0 - iteration / num_iterations)
        with torch.inference_mode():
            for step in range(T):
                obs_rms.update(next_obs)
                normalized = normalize_obs(next_obs, obs_rms)
                mean = agent.actor_mean(normalized)
                actions_np[step] = torch.normal(mean, agent.actor_logstd.exp().expand_as(mean)).numpy()
                obs_np[step] = normalized.numpy()
                next_obs, reward, term, trunc, infos = envs.step(np.clip(actions_np[step], -1.0, 1.0))
                global_step += N
                rewards_np[step], terminated_np[step], dones_np[step] = reward, term, term | trunc
                for i in np.flatnonzero(dones_np[step]):  # next_obs[i] already starts the next episode
                    final_obs_np[step, i] = normalize_obs(infos["final_obs"][i][None], obs_rms)[0].numpy()
                for i in np.flatnonzero(infos.get("_episode", ())):
                    train_returns.append(float(infos["episode"]["r"][i]))
                    writer.add_scalar("charts/episodic_return", train_returns[-1], step_offset + global_step)
            dist = agent.dist(obs)
            logprobs, values = dist.log_prob(actions).sum(-1), agent.value(obs)
            last_value = agent.value(normalize_obs(next_obs, obs_rms))
            next_values = torch.where(dones, agent.value(final_obs), torch.cat([values[1:], last_value[None]]))
            advantages, returns = compute_gae(rewards, values, next_values, terminated, dones,
                                              args.gamma, args.gae_lambda)

        b_obs, b_actions = obs.reshape(batch_size, -1), actions.reshape(batch_size, -1)
        b_logprobs, b_advantages = logprobs.reshape(-1), advantages.reshape(-1)
        b_returns, b_values = returns.reshape(-1), values.reshape(-1)
        for _ in range(args.update_epochs):
            for mb in torch.randperm(batch_size).split(minibatch_size):
                dist = agent.dist(b_obs[mb])
                ratio = (dist.log_prob(b_actions[mb]).sum(-1) - b_logprobs[mb]).exp()
                mb_adv = b_advantages[mb]
                mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
                # Eq. 7 of the PPO paper: -E[min(r A, clip(r, 1 - eps, 1 + eps) A)]
                pg_loss = -torch.min(ratio * mb_adv, ratio.clamp(1 - args.clip_coef, 1 + args.clip_coef) * mb_adv).mean()
                new_value = agent.value(b_obs[mb])
                v_clipped = b_values[mb] + (new_value - b_values[mb]).clamp(-args.clip_coef, args.clip_coef)
                v_loss = 0.5 * torch.max((new_value - b_returns[mb]) ** 2, (v_clipped - b_returns[mb]) ** 2).mean()
                entropy = dist.entropy().sum(-1).mean()
                loss = pg_loss - args.ent_coef * entropy + args.vf_coef * v_loss  # Eq. 9
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                optimizer.step()
    envs.close()
    return train_returns[-100:]


@torch.inference_mode()
def evaluate(agent: Agent, obs_rms: RunningMeanStd, domain: str, episodes: int, seed: int) -> list[float]:
    """Returns of deterministic (mean-action) episodes on CustomHopper-<domain>-v0, env seeds seed + k."""
    env, returns = gym.make(f"CustomHopper-{domain}-v0"), []
    for k in range(episodes):
        obs, _ = env.reset(seed=seed + k)
        done, total = False, 0.0
        while not done:
            mean = agent.actor_mean(normalize_obs(obs[None], obs_rms))
            obs, reward, terminated, truncated, _ = env.step(np.clip(mean[0].numpy(), -1.0, 1.0))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return returns


# ---- the outer loop: Bayesian optimization over phi (Muratore et al. 2021, Algorithm 1) ----
def check_args(args: Args) -> tuple[torch.Tensor, torch.Tensor]:
    """Exit 2 on bad input before anything is written; returns the search box (low, high), (6,) kg each."""
    check_range(args, ("seed",), lambda v: 0 <= v < 2**32, "in [0, 2**32)")
    low, high = default_box()
    for name, given in (("--phi-low", args.phi_low), ("--phi-high", args.phi_high)):
        if given is not None and len(given) != len(PHI_NAMES):
            fail(f"{name} needs {len(PHI_NAMES)} numbers, got {len(given)} (in kg, in the order {' '.join(PHI_NAMES)})")
    low = low if args.phi_low is None else torch.tensor(args.phi_low, dtype=torch.float64)
    high = high if args.phi_high is None else torch.tensor(args.phi_high, dtype=torch.float64)
    if not (low > 0).all() or not torch.isfinite(high).all():  # (low > 0) is False for nan
        fail(f"the search box must hold finite positive masses, got low {low.tolist()}, high {high.tolist()} "
             "(give masses in kg)")
    for k, name in enumerate(PHI_NAMES):
        if low[k] >= high[k]:
            fail(f"search box has low >= high for {name}: {low[k]:.3f} >= {high[k]:.3f} (give --phi-low below --phi-high)")
    pairs_low, pairs_high = low.reshape(-1, 2), high.reshape(-1, 2)
    if (pairs_low[:, 0] > pairs_high[:, 1]).any():
        fail("the box allows no (low <= high) distribution for some body (its low end's range lies above its high end's)")
    if args.acquisition not in ACQUISITIONS:
        fail(f"unknown acquisition {args.acquisition!r} (choose one of {', '.join(ACQUISITIONS)})")
    check_range(args, ("learning_rate", "clip_coef", "max_grad_norm"),
                lambda v: 0 < v < math.inf, "a finite number > 0")
    check_range(args, ("gamma", "gae_lambda"), lambda v: 0 <= v <= 1, "in [0, 1]")
    check_range(args, ("ucb_beta", "ent_coef", "vf_coef"), lambda v: 0 <= v < math.inf, "a finite number >= 0")
    check_range(args, ("num_init", "iterations", "inner_timesteps", "target_episodes", "acq_samples", "acq_restarts",
                       "acq_steps", "gp_iters", "num_envs", "num_steps", "num_minibatches", "update_epochs"),
                lambda v: v > 0, "a whole number > 0")
    check_range(args, ("final_timesteps", "eval_episodes", "source_episodes"), lambda v: v >= 0, "a whole number >= 0")
    if (args.num_envs * args.num_steps) % args.num_minibatches:
        fail(f"--num-minibatches {args.num_minibatches} does not divide num_envs * num_steps "
             f"= {args.num_envs * args.num_steps} (pick a divisor)")
    if os.path.exists(args.log_dir) and not os.path.isdir(args.log_dir):
        fail(f"--log-dir {args.log_dir} is a file (pass a directory)")
    return low, high


def load_history(run_dir: str) -> list[dict]:
    """The candidates recorded so far, in order (empty if there is no history yet)."""
    path = os.path.join(run_dir, HISTORY)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def append_history(run_dir: str, history: list[dict], record: dict) -> None:
    """Add one candidate: write the whole history to a temporary file, then rename it over the old
    one (os.replace is atomic), so an interruption leaves either the old or the new file, never half."""
    history.append(record)
    path = os.path.join(run_dir, HISTORY)
    with open(path + ".tmp", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in history)
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + ".tmp", path)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run_candidate(args: Args, index: int, phi: torch.Tensor, history: list[dict], run_dir: str,
                  writer: SummaryWriter) -> dict:
    """Train a policy on U(phi) (from scratch, or from the previous candidate's with --warm-start) with
    seed + index, measure it on the target and the source; returns the history record."""
    start = time.time()
    seed_everything(args.seed + index)
    agent, obs_rms = Agent(), RunningMeanStd(shape=(11,))
    if args.warm_start and history:
        state = torch.load(os.path.join(run_dir, history[-1]["policy"]), weights_only=True)
        agent.load_state_dict(state["agent"])
        obs_rms.mean, obs_rms.var, obs_rms.count = (state["obs_rms"][k].numpy() for k in ("mean", "var", "count"))
    last100 = train_ppo(args, phi_to_bounds(phi), agent, obs_rms, args.inner_timesteps, args.seed + index, writer,
                        step_offset=index * args.inner_timesteps)
    # Target episodes of candidate i use seeds disjoint from every other candidate's and the final evaluation's.
    target = evaluate(agent, obs_rms, "target", args.target_episodes, args.seed + 10**6 + 1000 * index)
    source = evaluate(agent, obs_rms, "source", args.source_episodes, args.seed + 10**6 + 1000 * index)
    policy = os.path.join("policies", f"candidate{index}.pt")  # relative to run_dir: the directory can move
    os.makedirs(os.path.join(run_dir, "policies"), exist_ok=True)
    torch.save({"agent": agent.state_dict(), "obs_rms": {k: torch.as_tensor(np.asarray(getattr(obs_rms, k)))
                                                           for k in ("mean", "var", "count")}},
               os.path.join(run_dir, policy))
    used = (history[-1]["target_episodes_used"] if history else 0) + len(target)
    return {"index": index, "phi": [float(v) for v in phi], "bounds": phi_to_bounds(phi),
            "target_return": float(np.mean(target)), "target_returns": target,
            "source_return": float(np.mean(source)) if source else None,
            "train_return_last100": float(np.mean(last100)) if last100 else None,
            "target_episodes_used": used, "seconds": time.time() - start, "policy": policy}


def surrogate(history: list[dict], low: torch.Tensor, high: torch.Tensor, args: Args, seed: int):
    """GP on the history: unit-cube inputs (n, 6), standardized target returns. Returns (gp, x, y)."""
    x = to_unit(torch.tensor([r["phi"] for r in history], dtype=torch.float64), low, high)
    returns = torch.tensor([r["target_return"] for r in history], dtype=torch.float64)
    y = (returns - returns.mean()) / (returns.std() + 1e-9) if len(returns) > 1 else returns - returns.mean()
    torch.manual_seed(seed)
    return fit_gp(x, y, args.gp_iters), x, y


def log_candidate(writer: SummaryWriter, record: dict, acquisition: float | None, gp: GP | None) -> None:
    i = record["index"]
    writer.add_scalar("bayrn/target_return", record["target_return"], i)
    writer.add_scalar("bayrn/source_return", record["source_return"] or 0.0, i)
    writer.add_scalar("bayrn/target_episodes_used", record["target_episodes_used"], i)
    for name, value in zip(PHI_NAMES, record["phi"]):
        writer.add_scalar(f"bayrn/phi_{name}", value, i)
    if acquisition is not None:
        writer.add_scalar("bayrn/acquisition", acquisition, i)
    if gp is not None:
        kernel = gp.covar_module
        for name, value in zip(PHI_NAMES, kernel.base_kernel.lengthscale.detach().flatten().tolist()):
            writer.add_scalar(f"gp/lengthscale_{name}", value, i)
        writer.add_scalar("gp/outputscale", kernel.outputscale.item(), i)
        writer.add_scalar("gp/noise", gp.likelihood.noise.item(), i)


def plot(history: list[dict], gp: GP, x: torch.Tensor, y: torch.Tensor, best: int, low, high, args: Args,
         path: str) -> None:
    """bayrn.png: J_real per candidate with the running best; the GP posterior mean +- 2 sigma (in
    return units) along the phi coordinate with the shortest lengthscale, through phi*. Skipped, with a
    note, where matplotlib is not installed (requirements.txt leaves it to benchmark/requirements.txt)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"{path} not drawn: matplotlib is not installed (pip install -r benchmark/requirements.txt)")
        return

    returns = np.array([r["target_return"] for r in history])
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(range(len(returns)), returns, "o", label="J_real (mean of target episodes)")
    left.plot(range(len(returns)), np.maximum.accumulate(returns), "-", label="running best")
    left.axvline(args.num_init - 0.5, color="gray", ls=":", label="Sobol init | BO")
    left.set(xlabel="candidate", ylabel="target return", title="BayRn on Hopper")
    left.legend(fontsize=8)
    k = int(gp.covar_module.base_kernel.lengthscale.detach().flatten().argmin())
    grid = x[best].repeat(200, 1)
    grid[:, k] = torch.linspace(0, 1, 200, dtype=torch.float64)
    with torch.no_grad():
        mean, std = posterior(gp, grid)
    scale, shift = returns.std(ddof=1) if len(returns) > 1 else 1.0, returns.mean()
    kg = from_unit(grid, low, high)[:, k].numpy()
    right.plot(kg, mean.numpy() * scale + shift, label="GP posterior mean")
    right.fill_between(kg, (mean - 2 * std).numpy() * scale + shift, (mean + 2 * std).numpy() * scale + shift,
                       alpha=0.3, label="± 2 sigma")
    right.plot(from_unit(x, low, high)[:, k].numpy(), y.numpy() * scale + shift, "k.", label="candidates (all coordinates)")
    right.axvline(float(from_unit(x[best], low, high)[k]), color="red", ls="--", label="phi*")
    right.set(xlabel=f"{PHI_NAMES[k]} (kg), others at phi*", ylabel="target return", title="GP slice through phi*")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(args: Args) -> dict:
    if args.resume:
        saved = os.path.join(args.resume, "args.json")
        if not os.path.exists(saved):
            fail(f"cannot resume {args.resume}: no args.json there (pass a run directory of this script)")
        with open(saved) as f:
            args = Args(**{**json.load(f), "resume": args.resume})
        run_dir = args.resume
    low, high = check_args(args)
    torch.use_deterministic_algorithms(args.torch_deterministic)
    torch.set_num_threads(1)
    if not args.resume:
        run_dir = os.path.join(args.log_dir, f"CustomHopper-udr__{args.exp_name}__{args.seed}__{int(time.time())}")
        os.makedirs(run_dir)
        with open(os.path.join(run_dir, "args.json"), "w") as f:
            json.dump({f.name: getattr(args, f.name) for f in fields(args) if f.name != "resume"}, f, indent=2)
    writer = SummaryWriter(run_dir)
    writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|" for k, v in asdict(args).items()))
    history = load_history(run_dir)
    init = repair(from_unit(SobolEngine(len(low), scramble=True, seed=args.seed).draw(args.num_init, dtype=torch.float64),
                            low, high))
    for index in range(len(history), args.num_init + args.iterations):
        gp, acquisition = None, None
        if index < args.num_init:
            phi = init[index]
        else:  # fit the GP to everything measured so far and maximize the acquisition
            gp, _, y = surrogate(history, low, high, args, seed=args.seed + index)
            phi, acquisition = propose(gp, float(y.max()), low, high, args, seed=args.seed + index)
        record = run_candidate(args, index, phi, history, run_dir, writer)
        append_history(run_dir, history, record)
        log_candidate(writer, record, acquisition, gp)
        print(f"candidate {index}: target return {record['target_return']:.0f}, source {record['source_return']}, "
              f"target episodes used {record['target_episodes_used']}", flush=True)

    # phi* = the evaluated candidate with the highest posterior mean (robust to one lucky estimate)
    gp, x, y = surrogate(history, low, high, args, seed=args.seed)
    with torch.no_grad(), warnings.catch_warnings():  # asking for the posterior at the data is the point here
        warnings.simplefilter("ignore", gpytorch.utils.warnings.GPInputWarning)
        best = int(posterior(gp, x)[0].argmax())
    star = history[best]
    state = torch.load(os.path.join(run_dir, star["policy"]), weights_only=True)
    agent, obs_rms = Agent(), RunningMeanStd(shape=(11,))
    agent.load_state_dict(state["agent"])
    obs_rms.mean, obs_rms.var, obs_rms.count = (state["obs_rms"][k].numpy() for k in ("mean", "var", "count"))
    if args.final_timesteps:
        seed_everything(args.seed + 10**5)
        agent, obs_rms = Agent(), RunningMeanStd(shape=(11,))
        train_ppo(args, star["bounds"], agent, obs_rms, args.final_timesteps, args.seed + 10**5, writer,
                  step_offset=len(history) * args.inner_timesteps)
    result = {"phi_star": star["bounds"], "candidate": best, "candidates": len(history),
              "target_episodes_used": history[-1]["target_episodes_used"], "final_timesteps": args.final_timesteps,
              "train_return_last100": star["train_return_last100"], "loop_seconds": sum(r["seconds"] for r in history)}
    for domain in ("target", "source"):  # final measurement: seeds seed + 2 * 10**6 + k, used by no candidate
        returns = evaluate(agent, obs_rms, domain, args.eval_episodes, args.seed + 2 * 10**6)
        result[domain] = {"mean": float(np.mean(returns)) if returns else None,
                          "std": float(np.std(returns)) if returns else None, "episodes": len(returns), "returns": returns}
        for k, r in enumerate(returns):
            writer.add_scalar(f"eval/{domain}_return", r, k)
            if domain == "target":
                writer.add_scalar("eval/episodic_return", r, k)
    with open(os.path.join(run_dir, "eval.json"), "w") as f:
        json.dump(result, f, indent=2)
    plot(history, gp, x, y, best, low, high, args, os.path.join(run_dir, "bayrn.png"))
    writer.close()
    print(f"{run_dir}: phi* = candidate {best}, target {result['target']['mean']} +- {result['target']['std']}, "
          f"source {result['source']['mean']}; {result['target_episodes_used']} target episodes in the loop")
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))
