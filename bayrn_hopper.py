"""Bayesian Domain Randomization (BayRn) on MuJoCo Hopper: choose the randomization by Bayesian optimization.

UDR needs a hand-picked distribution of masses. BayRn searches for it: phi = (low, high) of the
uniform mass distribution of thigh, leg and foot (6 numbers, kg). Each candidate phi trains a
policy on the source Hopper randomized by U(phi) and is scored by the mean return of a few
deterministic episodes on the target (the "real" robot). A Gaussian process over phi -> return and
an acquisition function (UCB or EI) choose the next phi. At the end phi* is the maximizer of the GP
posterior mean over the whole box, a final policy is trained on U(phi*), saved as model.pt and
evaluated on fresh target and source episodes.

Paper: Muratore et al. 2021, "Data-efficient Domain Randomization with Bayesian Optimization",
IEEE RA-L, arXiv:2003.02471: the bi-level problem phi* = argmax_phi J_real(theta*(phi)) with
theta*(phi) = argmax_theta E_{xi ~ nu(xi; phi)}[J(theta, xi)] (Eq. 6-7), Algorithm 1 (the loop and
its last step, phi* = argmax of the posterior mean), UCB a(phi) = mu(phi) + sqrt(beta) sigma(phi)
and expected improvement (Jones et al. 1998, Eq. 15).
GP: Matern-5/2 ARD kernel (Rasmussen & Williams 2006, Eq. 4.17), exact marginal likelihood (Eq. 5.8).
The inner learner is PPO-Clip with GAE, the same as udr_hopper.py's. --parallel-candidates q trains q
candidates at once in worker processes, proposing each round's q by the kriging believer (Ginsbourger
et al. 2010); a search interrupted in a round trains only that round's unfinished candidates on --resume.

Seeds: every training and episode seed is drawn from numpy's SeedSequence(seed) (candidate i from
spawn key (0, i), the final policy from (1,)), so no two candidates, searches or udr_hopper.py runs
share a training seed. --common-seed gives every candidate the same seeds (common random numbers).

    python bayrn_hopper.py                              # 5 Sobol + 5 BO candidates, then the final policy
    python bayrn_hopper.py --parallel-candidates 2      # two candidates at a time, one per core
    python bayrn_hopper.py --resume runs/<run>          # continue an interrupted search
    python bayrn_hopper.py --search-from runs/<run> --final-init scratch   # the same search, another final policy
    python udr_hopper.py --checkpoint runs/<run>/model.pt --eval-episodes 100   # evaluate phi*'s policy again
"""

from __future__ import annotations

import importlib
import json
import math
import multiprocessing
import os
import random
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field, fields
from functools import partial
from typing import Literal

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
from tqdm import tqdm

import hopper_envs

BODIES = hopper_envs.RANDOMIZED_BODIES
PHI_NAMES = [f"{body}_{end}" for body in BODIES for end in ("low", "high")]
ACQUISITIONS = ("ucb", "ei")
HISTORY = "bayrn_history.jsonl"
ROUND = "bayrn_round.json"  # the candidates of the round in progress, so that a resumed search trains the same ones


@dataclass
class PPOArgs:
    """The inner learner's settings: udr_hopper.py's defaults."""

    learning_rate: float = 3e-4  # Adam learning rate, annealed linearly to 0 over each training
    num_envs: int = 1  # parallel environments
    vector_env: Literal["sync", "async"] = "sync"
    """step the environments in this process (sync) or in worker processes (async, gymnasium's
    AsyncVectorEnv): the same trajectories either way"""
    num_steps: int = 2048  # steps per environment per rollout
    gamma: float = 0.99  # discount factor
    gae_lambda: float = 0.95  # GAE lambda
    num_minibatches: int = 32  # minibatches per epoch
    update_epochs: int = 10  # epochs per rollout
    clip_coef: float = 0.2  # clip epsilon (policy and value)
    ent_coef: float = 0.0  # entropy bonus coefficient
    vf_coef: float = 0.5  # value loss coefficient
    max_grad_norm: float = 0.5  # global gradient-norm clipping
    cuda: bool = False  # networks and updates on the GPU (torch.cuda); the environments stay on the CPU


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]  # name of this experiment, part of the run directory
    seed: int = 1  # seed of the search; every training and episode seed is drawn from numpy's SeedSequence(seed)
    torch_deterministic: bool = True  # make torch use deterministic algorithms
    progress: bool = True  # show a progress bar over the search's simulator steps (only when stderr is a terminal)
    phi_low: list[float] | None = None
    """lower corner of the search box, 6 numbers in kg: thigh_low thigh_high leg_low leg_high foot_low foot_high
    (default: low ends 0.2 x source mass, high ends 1.0 x)"""
    phi_high: list[float] | None = None
    """upper corner of the search box, same order (default: low ends 1.0 x source mass, high ends 1.8 x)"""
    num_init: int = 5  # initial candidates from a scrambled Sobol sequence over the box
    iterations: int = 5  # Bayesian optimization steps after the initial candidates
    inner_timesteps: int = 500_000  # PPO steps to train each candidate's policy (udr_hopper.py's table uses the same)
    target_episodes: int = 5  # deterministic target episodes per candidate: its J_real estimate
    source_episodes: int = 5  # deterministic source episodes per candidate (logged, free: the source is a simulator)
    common_seed: bool = False
    """every candidate trains and is scored with the same seeds (common random numbers), so that their
    differences come from phi"""
    warm_start: bool = False
    """train each candidate from the previous candidate's policy, normalizer and optimizer (the paper trains
    from scratch)"""
    parallel_candidates: int = 1
    """candidates trained at once, each in a worker process: the Sobol candidates in rounds of this many,
    then as many proposals per Bayesian-optimization round (kriging believer); not with --warm-start"""
    ray_address: str | None = None
    """train the candidates as Ray tasks on this cluster ("auto", "host:port", "ray://host:port") instead of in local
    worker processes; needs Ray (pip install -r benchmark/requirements.txt)"""
    acquisition: str = "ucb"  # ucb or ei (expected improvement)
    ucb_beta: float = 0.1  # beta of UCB = mu + sqrt(beta) sigma (0.1 as in the paper's code)
    acq_samples: int = 4096  # Sobol points on which the acquisition (and at the end the posterior mean) is evaluated
    acq_restarts: int = 5  # the best points, refined by gradient ascent on the acquisition
    acq_steps: int = 50  # Adam steps of each refinement
    gp_iters: int = 200  # Adam steps maximizing the GP's exact marginal log likelihood
    final_timesteps: int = 500_000
    """PPO steps of the final policy on U(phi*) (0: the final policy is the best candidate's, untouched)"""
    final_init: Literal["best", "scratch"] = "best"
    """start the final policy from the candidate with the highest posterior mean (best) or from a fresh
    network (scratch)"""
    eval_episodes: int = 100  # final deterministic episodes on target and on source
    resume: str | None = None  # continue this run directory from its bayrn_history.jsonl (with its saved settings)
    search_from: str | None = None
    """a finished search's run directory: reuse its candidates (same search settings required) and only make
    the final policy (--final-* flags)"""
    log_dir: str = "runs"  # where run directories are created
    ppo: tyro.conf.OmitArgPrefixes[PPOArgs] = field(default_factory=PPOArgs)
    """the inner learner, PPO-Clip with GAE (flags without a prefix: --learning-rate, ...)"""

def fail(message: str) -> None:
    """Print a one-line error and exit with status 2 (bad input)."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def check_range(args: Args | PPOArgs, names: tuple[str, ...], ok: Callable[[float], bool], must: str) -> None:
    """Exit 2 unless ok(value) holds for each of these flags (nan fails every comparison, so it is refused)."""
    for name in names:
        if not ok(getattr(args, name)):
            fail(f"--{name.replace('_', '-')} must be {must}, got {getattr(args, name)} "
                 f"(the default is {type(args).__dataclass_fields__[name].default})")


def flat_args(args: Args) -> dict:
    """args as one flat dict of flag values (args.json, the TensorBoard table); `resume` left out."""
    values = {f.name: getattr(args, f.name) for f in fields(args) if f.name not in ("resume", "ppo")}
    return values | asdict(args.ppo)


def args_from_flat(values: dict) -> Args:
    """Inverse of flat_args (flags that an older args.json lacks take their defaults)."""
    ppo = {f.name for f in fields(PPOArgs)}
    return Args(**{k: v for k, v in values.items() if k not in ppo},
                ppo=PPOArgs(**{k: v for k, v in values.items() if k in ppo}))


def episode_seeds(seed: int, key: tuple[int, ...]) -> tuple[int, int, int]:
    """(training seed, first target-episode seed, first source-episode seed) of one stream of the
    search: numpy's SeedSequence(seed) child with this spawn key, three independent 32-bit words."""
    return tuple(int(s) for s in np.random.SeedSequence(seed, spawn_key=key).generate_state(3))


# ---- the search space: phi in kg, scaled to the unit cube for the GP ----
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
    with gpytorch.settings.fast_pred_var(False), warnings.catch_warnings():
        warnings.simplefilter("ignore", gpytorch.utils.warnings.GPInputWarning)  # x may hold training points
        f = model(x)
    return f.mean, f.variance.clamp_min(1e-12).sqrt()


def ucb(mean: torch.Tensor, std: torch.Tensor, beta: float) -> torch.Tensor:
    """Upper confidence bound mu + sqrt(beta) sigma (Srinivas et al. 2010; BayRn's default)."""
    return mean + beta**0.5 * std


def expected_improvement(mean: torch.Tensor, std: torch.Tensor, best: float) -> torch.Tensor:
    """Closed-form E[max(f - best, 0)] for f ~ N(mean, std^2): (mu - best) Phi(z) + sigma phi(z),
    z = (mean - best) / sigma (Jones et al. 1998, Eq. 15). Shapes (m,) -> (m,)."""
    z = (mean - best) / std
    unit = Normal(torch.zeros_like(z), torch.ones_like(z))
    return (mean - best) * unit.cdf(z) + std * unit.log_prob(z).exp()


def maximize(score: Callable[[torch.Tensor], torch.Tensor], seed: int, low: torch.Tensor, high: torch.Tensor,
             samples: int, restarts: int, steps: int) -> tuple[torch.Tensor, float]:
    """argmax over the box of score(u), u in the unit cube (m, d) -> (m,): `samples` scrambled Sobol
    points, then Adam (lr 0.02, `steps` steps) from the best `restarts` of them. Every point is
    clamped to the cube and repaired (low <= high per body, in kg). Returns (phi (d,) kg, score there)."""
    def feasible(u):
        return to_unit(repair(from_unit(u.clamp(0, 1), low, high)), low, high)

    u = feasible(SobolEngine(len(low), scramble=True, seed=seed).draw(samples, dtype=torch.float64))
    with torch.no_grad():
        values = score(u)
    u = u[values.topk(min(restarts, len(u))).indices].clone().requires_grad_(True)
    optimizer = torch.optim.Adam([u], lr=0.02)
    for _ in range(steps):
        optimizer.zero_grad()
        (-score(u).sum()).backward()
        optimizer.step()
        with torch.no_grad():
            u.copy_(feasible(u))
    with torch.no_grad():
        values = score(u)
    best = int(values.argmax())
    return from_unit(u[best].detach(), low, high), float(values[best])


def surrogate(history: list[dict], low: torch.Tensor, high: torch.Tensor, gp_iters: int, seed: int):
    """GP on the history: unit-cube inputs (n, 6), target returns standardized to mean 0, std 1.
    Returns (gp, x, y, (mean, std) of the returns: y * std + mean is in return units)."""
    x = to_unit(torch.tensor([r["phi"] for r in history], dtype=torch.float64), low, high)
    returns = torch.tensor([r["target_return"] for r in history], dtype=torch.float64)
    scale = float(returns.std()) + 1e-9 if len(returns) > 1 else 1.0
    y = (returns - returns.mean()) / scale
    torch.manual_seed(seed)
    return fit_gp(x, y, gp_iters), x, y, (float(returns.mean()), scale)


Argmax = Callable[[Callable[[torch.Tensor], torch.Tensor], int], tuple[torch.Tensor, float]]
"""(score, seed) -> (phi (6,) kg, score there): maximize() bound to the search box and its settings."""


def box_argmax(low: torch.Tensor, high: torch.Tensor, args: Args) -> Argmax:
    """maximize() over the box [low, high] with the search's --acq-samples, --acq-restarts, --acq-steps."""
    return partial(maximize, low=low, high=high, samples=args.acq_samples, restarts=args.acq_restarts,
                   steps=args.acq_steps)


def propose(model: GP, y_best: float, acquisition: str, ucb_beta: float, argmax: Argmax,
            seed: int) -> tuple[torch.Tensor, float]:
    """The next candidate: argmax of the acquisition ("ucb" with ucb_beta, or "ei" over the best
    standardized return y_best) over the box. Returns (phi (6,) in kg, acquisition value there)."""
    def score(u):
        mean, std = posterior(model, u)
        return ucb(mean, std, ucb_beta) if acquisition == "ucb" else expected_improvement(mean, std, y_best)
    return argmax(score, seed)


def propose_round(history: list[dict], q: int, low: torch.Tensor, high: torch.Tensor, acquisition: str,
                  ucb_beta: float, argmax: Argmax, gp_iters: int,
                  seed: int) -> tuple[GP, list[tuple[torch.Tensor, float]]]:
    """q candidates to train at once. The first maximizes the acquisition of the GP on the history; each
    next one that of the GP refitted as if the previous proposals had returned their posterior mean (the
    kriging believer, Ginsbourger et al. 2010, "Kriging is well-suited to parallelize optimization",
    Sec. 3.2), which lowers the variance there and so moves the next proposal away. q = 1 is propose().
    Returns (the GP on the history, [(phi (6,) kg, acquisition value)] * q)."""
    gp, x, y, _ = surrogate(history, low, high, gp_iters, seed)
    believer, proposals = gp, []
    for j in range(q):
        phi, value = propose(believer, float(y.max()), acquisition, ucb_beta, argmax, seed)
        proposals.append((phi, value))
        if j + 1 < q:
            u = to_unit(phi, low, high)[None]
            with torch.no_grad():
                x, y = torch.cat([x, u]), torch.cat([y, posterior(believer, u)[0]])
            believer = fit_gp(x, y, gp_iters)
    return gp, proposals


def phi_star(model: GP, argmax: Argmax, seed: int) -> tuple[torch.Tensor, float]:
    """BayRn's last step: phi* = argmax over the whole box of the posterior mean (not only over the
    evaluated candidates). Returns (phi* (6,) in kg, standardized posterior mean there)."""
    return argmax(lambda u: posterior(model, u)[0], seed)


# ---- the inner learner: PPO-Clip with GAE (same defaults and RNG use as udr_hopper.py) ----
def layer_init(layer: nn.Linear, std: float = np.sqrt(2), bias_const: float = 0.0) -> nn.Linear:
    """Orthogonal weights with gain `std`, constant bias (Huang et al. 2022, detail 2)."""
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias_const)
    return layer


def normalize_obs(obs: np.ndarray, obs_rms: RunningMeanStd, clip: float = 10.0) -> torch.Tensor:
    """clip((obs - mean) / sqrt(var + 1e-8), -clip, clip); obs (B, obs_dim) -> float32 tensor; never updates obs_rms."""
    return torch.from_numpy(np.clip((obs - obs_rms.mean) / np.sqrt(obs_rms.var + 1e-8), -clip, clip).astype(np.float32))


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


def policy_state(agent: Agent, obs_rms: RunningMeanStd, optimizer_state: dict | None) -> dict:
    """What a candidate's file and model.pt hold (tensors and plain values): udr_hopper.py's format,
    so `udr_hopper.py --checkpoint` evaluates it."""
    state = {"agent": agent.state_dict(),
             "obs_rms": {k: torch.as_tensor(np.asarray(getattr(obs_rms, k))) for k in ("mean", "var", "count")}}
    return state | ({"optimizer": optimizer_state} if optimizer_state else {})


def new_policy(device: torch.device | str = "cpu") -> tuple[Agent, RunningMeanStd]:
    """A fresh agent on `device` and an observation normalizer, sized by the Hopper's spaces."""
    env = gym.make("CustomHopper-source-v0")
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    env.close()
    return Agent(obs_dim, act_dim).to(device), RunningMeanStd(shape=(obs_dim,))


def load_policy(path: str, device: torch.device | str = "cpu") -> tuple[Agent, RunningMeanStd, dict | None]:
    """Inverse of policy_state: (agent on `device`, obs_rms, optimizer state or None)."""
    state = torch.load(path, map_location="cpu", weights_only=True)  # a GPU run's file loads anywhere
    obs_dim, act_dim = len(state["obs_rms"]["mean"]), len(state["agent"]["actor_logstd"])
    agent, obs_rms = Agent(obs_dim, act_dim).to(device), RunningMeanStd(shape=(obs_dim,))
    agent.load_state_dict(state["agent"])
    obs_rms.mean, obs_rms.var = state["obs_rms"]["mean"].numpy(), state["obs_rms"]["var"].numpy()
    obs_rms.count = float(state["obs_rms"]["count"])
    return agent, obs_rms, state.get("optimizer")


def train_ppo(ppo: PPOArgs, bounds: dict, agent: Agent, obs_rms: RunningMeanStd, timesteps: int, seed: int,
              writer: SummaryWriter, step_offset: int, optimizer_state: dict | None = None,
              bar: tqdm | None = None) -> tuple[list[float], dict]:
    """PPO's loop (Algorithm 1 of the PPO paper) for exactly `timesteps` env steps on
    CustomHopper-udr-v0 randomized by `bounds` ({body: (low, high)} kg); updates agent and obs_rms in
    place; lr anneals linearly from ppo.learning_rate to 0. Training returns are logged at
    x = step_offset + step. Returns (raw returns of the last 100 training episodes, optimizer state)."""
    vector = gym.vector.AsyncVectorEnv if ppo.vector_env == "async" else gym.vector.SyncVectorEnv
    envs = vector([lambda: gym.make("CustomHopper-udr-v0", mass_bounds=bounds)] * ppo.num_envs,
                  autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    envs = gym.wrappers.vector.RecordEpisodeStatistics(envs)  # raw returns, before any scaling
    envs = gym.wrappers.vector.NormalizeReward(envs, gamma=ppo.gamma)  # divide by std of discounted return
    envs = gym.wrappers.vector.TransformReward(envs, lambda r: np.clip(r, -10, 10))
    optimizer = torch.optim.Adam(agent.parameters(), lr=ppo.learning_rate, eps=1e-5, fused=True)
    if optimizer_state:
        optimizer.load_state_dict(optimizer_state)
    N, minibatch_size = ppo.num_envs, ppo.num_envs * ppo.num_steps // ppo.num_minibatches
    obs_dim, device = envs.single_observation_space.shape[0], agent.actor_logstd.device
    act_low, act_high = envs.single_action_space.low, envs.single_action_space.high
    train_returns, global_step = [], 0
    next_obs, _ = envs.reset(seed=seed)
    while global_step < timesteps:
        optimizer.param_groups[0]["lr"] = ppo.learning_rate * (1.0 - global_step / timesteps)
        T = min(ppo.num_steps, (timesteps - global_step) // N)  # the last rollout may be shorter: exact budget
        obs, actions = torch.zeros((T, N, obs_dim)), torch.zeros((T, N, len(act_low)))
        final_obs, rewards = torch.zeros_like(obs), torch.zeros((T, N))
        terminated, dones = torch.zeros((T, N), dtype=torch.bool), torch.zeros((T, N), dtype=torch.bool)
        obs_np, final_obs_np, actions_np, rewards_np, terminated_np, dones_np = (
            x.numpy() for x in (obs, final_obs, actions, rewards, terminated, dones))
        with torch.inference_mode():
            for step in range(T):
                obs_rms.update(next_obs)
                normalized = normalize_obs(next_obs, obs_rms)
                mean = agent.actor_mean(normalized.to(device))
                actions_np[step] = torch.normal(mean, agent.actor_logstd.exp().expand_as(mean)).cpu().numpy()
                obs_np[step] = normalized.numpy()
                next_obs, reward, term, trunc, infos = envs.step(np.clip(actions_np[step], act_low, act_high))
                global_step += N
                rewards_np[step], terminated_np[step], dones_np[step] = reward, term, term | trunc
                for i in np.flatnonzero(dones_np[step]):  # next_obs[i] already starts the next episode
                    final_obs_np[step, i] = normalize_obs(infos["final_obs"][i][None], obs_rms)[0].numpy()
                for i in np.flatnonzero(infos.get("_episode", ())):
                    train_returns.append(float(infos["episode"]["r"][i]))
                    writer.add_scalar("charts/episodic_return", train_returns[-1], step_offset + global_step)
        # gathered in CPU memory, updated on the agent's device
        obs, actions, final_obs, rewards, terminated, dones = (
            x.to(device) for x in (obs, actions, final_obs, rewards, terminated, dones))
        with torch.no_grad():
            dist = agent.dist(obs)
            logprobs, values = dist.log_prob(actions).sum(-1), agent.value(obs)
            last_value = agent.value(normalize_obs(next_obs, obs_rms).to(device))
            # V(s_{t+1}): V(final observation) where an episode ended at t (bootstrapped only at a truncation)
            next_values = torch.where(dones, agent.value(final_obs), torch.cat([values[1:], last_value[None]]))
            advantages, returns = compute_gae(rewards, values, next_values, terminated, dones,
                                              ppo.gamma, ppo.gae_lambda)
        if bar is not None:
            bar.update(T * N)

        batch_size = T * N
        b_obs, b_actions = obs.reshape(batch_size, -1), actions.reshape(batch_size, -1)
        b_logprobs, b_advantages = logprobs.reshape(-1), advantages.reshape(-1)
        b_returns, b_values = returns.reshape(-1), values.reshape(-1)
        for _ in range(ppo.update_epochs):
            for mb in torch.randperm(batch_size, device=device).split(minibatch_size):
                dist = agent.dist(b_obs[mb])
                ratio = (dist.log_prob(b_actions[mb]).sum(-1) - b_logprobs[mb]).exp()
                mb_adv = b_advantages[mb]
                mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
                # Eq. 7 of the PPO paper: -E[min(r A, clip(r, 1 - eps, 1 + eps) A)]
                clipped = ratio.clamp(1 - ppo.clip_coef, 1 + ppo.clip_coef)
                pg_loss = -torch.min(ratio * mb_adv, clipped * mb_adv).mean()
                new_value = agent.value(b_obs[mb])
                v_clipped = b_values[mb] + (new_value - b_values[mb]).clamp(-ppo.clip_coef, ppo.clip_coef)
                v_loss = 0.5 * torch.max((new_value - b_returns[mb]) ** 2, (v_clipped - b_returns[mb]) ** 2).mean()
                entropy = dist.entropy().sum(-1).mean()
                loss = pg_loss - ppo.ent_coef * entropy + ppo.vf_coef * v_loss  # Eq. 9
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), ppo.max_grad_norm)
                optimizer.step()
    envs.close()
    return train_returns[-100:], optimizer.state_dict()


@torch.inference_mode()
def evaluate(agent: Agent, obs_rms: RunningMeanStd, domain: str, episodes: int, seed: int) -> list[float]:
    """Returns of deterministic (mean-action) episodes on CustomHopper-<domain>-v0, env seeds seed + k;
    obs_rms is read, never updated."""
    env, returns = gym.make(f"CustomHopper-{domain}-v0"), []
    low, high = env.action_space.low, env.action_space.high
    for k in range(episodes):
        obs, _ = env.reset(seed=seed + k)
        done, total = False, 0.0
        while not done:
            mean = agent.actor_mean(normalize_obs(obs[None], obs_rms).to(agent.actor_logstd.device))
            obs, reward, terminated, truncated, _ = env.step(np.clip(mean[0].cpu().numpy(), low, high))
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
            fail(f"search box has low >= high for {name}: {low[k]:.3f} >= {high[k]:.3f} "
                 "(give --phi-low below --phi-high)")
    pairs_low, pairs_high = low.reshape(-1, 2), high.reshape(-1, 2)
    if (pairs_low[:, 0] > pairs_high[:, 1]).any():
        fail("the box allows no (low <= high) distribution for some body "
             "(its low end's range lies above its high end's)")
    if args.acquisition not in ACQUISITIONS:
        fail(f"unknown acquisition {args.acquisition!r} (choose one of {', '.join(ACQUISITIONS)})")
    ppo = args.ppo
    check_range(ppo, ("learning_rate", "clip_coef", "max_grad_norm"), lambda v: 0 < v < math.inf, "a finite number > 0")
    check_range(ppo, ("gamma", "gae_lambda"), lambda v: 0 <= v <= 1, "in [0, 1]")
    check_range(ppo, ("ent_coef", "vf_coef"), lambda v: 0 <= v < math.inf, "a finite number >= 0")
    check_range(args, ("ucb_beta",), lambda v: 0 <= v < math.inf, "a finite number >= 0")
    if ppo.cuda and not torch.cuda.is_available():
        fail("--cuda: torch sees no CUDA device (drop --cuda, or install a CUDA build of torch)")
    if args.warm_start and (args.parallel_candidates > 1 or args.ray_address):
        fail("--warm-start trains each candidate from the previous one, so candidates cannot train at once "
             "or elsewhere (give --parallel-candidates 1 and no --ray-address)")
    check_range(args, ("num_init", "iterations", "inner_timesteps", "target_episodes", "acq_samples", "acq_restarts",
                       "acq_steps", "gp_iters", "parallel_candidates"), lambda v: v > 0, "a whole number > 0")
    check_range(ppo, ("num_envs", "num_steps", "num_minibatches", "update_epochs"), lambda v: v > 0,
                "a whole number > 0")
    check_range(args, ("final_timesteps", "eval_episodes", "source_episodes"), lambda v: v >= 0, "a whole number >= 0")
    for name in ("inner_timesteps", "final_timesteps"):
        if getattr(args, name) % ppo.num_envs:
            fail(f"--{name.replace('_', '-')} {getattr(args, name)} is not a multiple of --num-envs {ppo.num_envs} "
                 "(every env takes the same number of steps)")
    if (ppo.num_envs * ppo.num_steps) % ppo.num_minibatches:
        fail(f"--num-minibatches {ppo.num_minibatches} does not divide num_envs * num_steps "
             f"= {ppo.num_envs * ppo.num_steps} (pick a divisor)")
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


def write_history(run_dir: str, history: list[dict]) -> None:
    """Write the whole history to a temporary file, then rename it over the old one (os.replace is
    atomic), so an interruption leaves either the old or the new file, never half."""
    path = os.path.join(run_dir, HISTORY)
    with open(path + ".tmp", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in history)
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + ".tmp", path)


def configure_torch(args: Args) -> None:
    """One CPU thread per process (the networks are small; workers share the cores), deterministic algorithms."""
    if args.ppo.cuda and args.torch_deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # what deterministic cuBLAS requires
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(args.torch_deterministic)


def device_of(args: Args) -> torch.device:
    """Where the inner learner's networks live: cuda with --cuda, else the CPU."""
    return torch.device("cuda" if args.ppo.cuda else "cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run_candidate(args: Args, index: int, phi: torch.Tensor, history: list[dict], run_dir: str,
                  writer: SummaryWriter, bar: tqdm) -> dict:
    """Train a policy on U(phi) (from scratch, or from the previous candidate's with --warm-start),
    measure it on the target and the source; returns the history record."""
    start = time.time()
    train_seed, target_seed, source_seed = episode_seeds(args.seed, (0, 0 if args.common_seed else index))
    seed_everything(train_seed)
    (agent, obs_rms), optimizer_state = new_policy(device_of(args)), None
    if args.warm_start and history:
        agent, obs_rms, optimizer_state = load_policy(os.path.join(run_dir, history[-1]["policy"]), device_of(args))
    last100, optimizer_state = train_ppo(args.ppo, phi_to_bounds(phi), agent, obs_rms, args.inner_timesteps, train_seed,
                                         writer, index * args.inner_timesteps, optimizer_state, bar)
    target = evaluate(agent, obs_rms, "target", args.target_episodes, target_seed)
    source = evaluate(agent, obs_rms, "source", args.source_episodes, source_seed)
    policy = os.path.join("policies", f"candidate{index}.pt")  # relative to run_dir: the directory can move
    os.makedirs(os.path.join(run_dir, "policies"), exist_ok=True)
    torch.save(policy_state(agent, obs_rms, optimizer_state), os.path.join(run_dir, policy))
    used = (index + 1) * args.target_episodes  # every candidate so far spent target_episodes
    return {"index": index, "phi": [float(v) for v in phi], "bounds": phi_to_bounds(phi), "train_seed": train_seed,
            "target_return": float(np.mean(target)), "target_returns": target,
            "source_return": float(np.mean(source)) if source else None,
            "train_return_last100": float(np.mean(last100)) if last100 else None,
            "target_episodes_used": used, "seconds": time.time() - start, "policy": policy}


def train_candidate(args: Args, index: int, phi: list[float], run_dir: str) -> dict:
    """run_candidate in a worker process, with its own TensorBoard file in run_dir; the same record as in
    the main process (the candidate's seeds come from its index)."""
    configure_torch(args)
    writer = SummaryWriter(run_dir, filename_suffix=f".candidate{index}")
    record = run_candidate(args, index, torch.tensor(phi, dtype=torch.float64), [], run_dir, writer, None)
    writer.close()
    return record


def train_round(args: Args, todo: list[dict], history: list[dict], run_dir: str, writer: SummaryWriter,
                bar: tqdm) -> Iterator[dict]:
    """Train the round's candidates ({index, phi}) and yield each record as it finishes: in this process
    one after another, or with --parallel-candidates > 1 in as many worker processes, or with --ray-address
    as Ray tasks. A worker that dies loses only its own candidate, which is trained again (twice at most)."""
    if args.ray_address:
        yield from train_on_ray(args, todo, run_dir, bar)
        return
    if args.parallel_candidates == 1:
        for c in todo:
            yield run_candidate(args, c["index"], torch.tensor(c["phi"], dtype=torch.float64), history, run_dir,
                                writer, bar)
        return
    left, attempts = list(todo), 0
    while left:
        attempts += 1
        with ProcessPoolExecutor(len(left), mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(train_candidate, args, c["index"], c["phi"], run_dir): c for c in left}
            try:
                for future in as_completed(futures):
                    left.remove(futures[future])
                    bar.update(args.inner_timesteps)
                    yield future.result()
            except BrokenProcessPool:
                if attempts == 3:
                    raise
                tqdm.write(f"a worker died; training candidates {[c['index'] for c in left]} again")


def train_on_ray(args: Args, todo: list[dict], run_dir: str, bar: tqdm) -> Iterator[dict]:
    """The round's candidates as Ray tasks (num_cpus=1) on the cluster at args.ray_address; each trains in a
    scratch directory of its node and sends back its record and files, which are written into run_dir. The
    nodes import this file and hopper_envs.py from the job's working directory; Ray runs a task again if its
    worker dies (max_retries=2)."""
    ray = sys.modules["ray"]  # imported by connect_ray
    task = ray.remote(num_cpus=1, max_retries=2)(train_candidate_files)
    pending = {task.remote(args, c["index"], c["phi"]): c for c in todo}
    while pending:
        (ref,), _ = ray.wait(list(pending), num_returns=1)
        del pending[ref]
        record, files = ray.get(ref)
        for name, data in files.items():
            os.makedirs(os.path.dirname(os.path.join(run_dir, name)), exist_ok=True)
            with open(os.path.join(run_dir, name), "wb") as f:
                f.write(data)
        bar.update(args.inner_timesteps)
        yield record


def connect_ray(address: str) -> None:
    """Join the Ray cluster at `address` with this file and hopper_envs.py as the job's working directory, so
    that its nodes can import them; exits 2 if Ray is not installed or there is no cluster there."""
    try:
        import ray  # a benchmark extra, imported only with --ray-address
    except ImportError:
        fail("--ray-address needs Ray (pip install -r benchmark/requirements.txt)")
    code = tempfile.mkdtemp(prefix="bayrn-code-")
    for module in (__file__, hopper_envs.__file__):
        shutil.copy(module, code)
    try:
        ray.init(address=address, runtime_env={"working_dir": code}, log_to_driver=False, logging_level="ERROR")
    except (ConnectionError, ValueError, RuntimeError) as e:
        fail(f"--ray-address {address}: {str(e).splitlines()[0]} (start one with `ray start --head`, or give its "
             "address)")


def train_candidate_files(args: Args, index: int, phi: list[float]) -> tuple[dict, dict[str, bytes]]:
    """train_candidate on a Ray node, in a scratch directory: (its record, {path in the run directory: bytes})."""
    importlib.import_module("hopper_envs")  # registers the CustomHopper-* ids in the node's worker process
    scratch = tempfile.mkdtemp(prefix="bayrn-candidate-")
    try:
        record, files = train_candidate(args, index, phi, scratch), {}
        for folder, _, names in os.walk(scratch):
            for name in names:
                with open(os.path.join(folder, name), "rb") as f:
                    files[os.path.relpath(os.path.join(folder, name), scratch)] = f.read()
        return record, files
    finally:
        shutil.rmtree(scratch)


def load_round(run_dir: str) -> list[dict]:
    path = os.path.join(run_dir, ROUND)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return json.load(f)


def next_round(args: Args, history: list[dict], init: torch.Tensor, low: torch.Tensor, high: torch.Tensor,
               run_dir: str) -> tuple[list[dict], GP | None]:
    """The candidates ({"index", "phi", "acquisition"}) to train next and the GP that proposed them (None for
    Sobol points): the unfinished rest of a round recorded in run_dir (a resumed search); else the next
    q = --parallel-candidates of the num_init Sobol points `init` (num_init, 6); else q proposals of the
    acquisition on a GP fitted to `history` (Algorithm 1 of Muratore et al. 2021; q > 1 by the kriging
    believer). A new round is written to run_dir before it is trained."""
    done = {r["index"] for r in history}
    todo = [c for c in load_round(run_dir) if c["index"] not in done]  # a round that stopped part-way
    if todo:
        return todo, None
    index, candidates = len(history), args.num_init + args.iterations
    q = min(args.parallel_candidates, (args.num_init if index < args.num_init else candidates) - index)
    gp = None
    if index < args.num_init:
        todo = [{"index": i, "phi": init[i].tolist(), "acquisition": None} for i in range(index, index + q)]
    else:
        gp, proposals = propose_round(history, q, low, high, args.acquisition, args.ucb_beta,
                                      box_argmax(low, high, args), args.gp_iters, seed=args.seed + index)
        todo = [{"index": index + j, "phi": phi.tolist(), "acquisition": value}
                for j, (phi, value) in enumerate(proposals)]
    with open(os.path.join(run_dir, ROUND), "w") as f:
        json.dump(todo, f)
    return todo, gp


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


def final_policy(args: Args, history: list[dict], low: torch.Tensor, high: torch.Tensor, run_dir: str,
                 writer: SummaryWriter, bar: tqdm) -> tuple[Agent, RunningMeanStd, dict]:
    """phi* = argmax over the box of the GP posterior mean; the final policy trained on U(phi*) for
    final_timesteps steps, from the best candidate's policy (highest posterior mean among the
    evaluated candidates) or from scratch. Returns (agent, obs_rms, what eval.json records)."""
    gp, x, _, (shift, scale) = surrogate(history, low, high, args.gp_iters, seed=args.seed)
    with torch.no_grad():
        at_candidates = posterior(gp, x)[0] * scale + shift
    best = int(at_candidates.argmax())
    phi, mean_star = phi_star(gp, box_argmax(low, high, args), seed=args.seed)
    train_seed, _, _ = episode_seeds(args.seed, (1,))
    seed_everything(train_seed)
    if args.final_init == "best" or not args.final_timesteps:
        agent, obs_rms, optimizer_state = load_policy(os.path.join(run_dir, history[best]["policy"]), device_of(args))
    else:
        (agent, obs_rms), optimizer_state = new_policy(device_of(args)), None
    last100 = history[best]["train_return_last100"]
    if args.final_timesteps:
        returns, _ = train_ppo(args.ppo, phi_to_bounds(phi), agent, obs_rms, args.final_timesteps, train_seed, writer,
                               len(history) * args.inner_timesteps, optimizer_state, bar)
        last100 = float(np.mean(returns)) if returns else None
    for name, value in zip(PHI_NAMES, phi.tolist()):
        writer.add_scalar(f"bayrn/phi_star_{name}", value, len(history))
    return agent, obs_rms, {
        "phi_star": phi_to_bounds(phi), "phi_star_posterior_return": mean_star * scale + shift,
        "best_candidate": best, "candidate_posterior_returns": at_candidates.tolist(),
        "final_init": args.final_init if args.final_timesteps else "best", "final_timesteps": args.final_timesteps,
        "train_return_last100": last100}


def reusable_search(args: Args) -> list[dict]:
    """The history of the finished search in args.search_from; exits 2 if there is none, or if it
    was searched with other settings than args (those of the final policy and its evaluation may differ)."""
    path = os.path.join(args.search_from, "args.json")
    if not os.path.exists(path):
        fail(f"cannot reuse {args.search_from}: no args.json there (pass a run directory of this script)")
    with open(path) as f:
        saved = json.load(f)
    final = {"final_timesteps", "final_init", "eval_episodes", "log_dir", "exp_name", "progress", "search_from",
             "vector_env", "cuda", "ray_address"}  # these give the same search
    current = flat_args(args)
    differ = [k for k, v in saved.items() if k not in final and v != current.get(k, v)]
    if differ:
        flags = ", ".join("--" + k.replace("_", "-") for k in differ)
        fail(f"{args.search_from} searched with other settings: {flags} "
             "(give the same search flags; only --final-* and --eval-episodes may differ)")
    history = load_history(args.search_from)
    if len(history) < args.num_init + args.iterations:
        fail(f"{args.search_from} has {len(history)} of {args.num_init + args.iterations} candidates "
             "(finish it with --resume first)")
    return history


def main(args: Args) -> dict:
    if args.resume:
        saved = os.path.join(args.resume, "args.json")
        if not os.path.exists(saved):
            fail(f"cannot resume {args.resume}: no args.json there (pass a run directory of this script)")
        with open(saved) as f:
            args = args_from_flat({**json.load(f), "resume": args.resume, "progress": args.progress,
                                   "ray_address": args.ray_address})  # resume on any cluster, or none
        run_dir = args.resume
    low, high = check_args(args)
    reused = reusable_search(args) if args.search_from else []
    if args.ray_address:
        connect_ray(args.ray_address)
    configure_torch(args)
    if not args.resume:
        run_dir = os.path.join(args.log_dir, f"CustomHopper-udr__{args.exp_name}__{args.seed}__{int(time.time())}")
        os.makedirs(run_dir)
        with open(os.path.join(run_dir, "args.json"), "w") as f:
            json.dump(flat_args(args), f, indent=2)
        if reused:  # its candidates become ours; the loop below then has nothing left to search
            shutil.copytree(os.path.join(args.search_from, "policies"), os.path.join(run_dir, "policies"))
            write_history(run_dir, reused)
    writer = SummaryWriter(run_dir)
    table = "\n".join(f"|{k}|{v}|" for k, v in flat_args(args).items())
    writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + table)
    history = load_history(run_dir)
    candidates = args.num_init + args.iterations
    bar = tqdm(total=candidates * args.inner_timesteps + args.final_timesteps, unit="step",
               initial=len(history) * args.inner_timesteps, disable=not (args.progress and sys.stderr.isatty()))
    sobol = SobolEngine(len(low), scramble=True, seed=args.seed)
    init = repair(from_unit(sobol.draw(args.num_init, dtype=torch.float64), low, high))
    while len(history) < candidates:  # Algorithm 1 of Muratore et al. 2021
        todo, gp = next_round(args, history, init, low, high, run_dir)  # phi: Sobol, then argmax of the acquisition
        acquisitions = {c["index"]: c["acquisition"] for c in todo}
        # theta*(phi) by PPO on U(phi), then J_real(theta*(phi)) on target episodes (Eq. 6-7)
        for record in train_round(args, todo, history, run_dir, writer, bar):
            history.append(record)
            history.sort(key=lambda r: r["index"])
            write_history(run_dir, history)
            log_candidate(writer, record, acquisitions[record["index"]], gp)
            tqdm.write(f"candidate {record['index']}: target return {record['target_return']:.0f}, "
                       f"source {record['source_return']}, target episodes used {record['target_episodes_used']}")

    start = time.time()
    agent, obs_rms, result = final_policy(args, history, low, high, run_dir, writer, bar)
    bar.close()
    torch.save(policy_state(agent, obs_rms, None), os.path.join(run_dir, "model.pt"))
    # udr_hopper.py's final episodes for --seed final_seed, so that `udr_hopper.py --checkpoint model.pt
    # --seed <final_seed>` replays them; no candidate used these seeds
    final_seed = episode_seeds(args.seed, (1,))[0]
    for domain in ("target", "source"):
        returns = evaluate(agent, obs_rms, domain, args.eval_episodes, final_seed + 10**6)
        result[domain] = {"mean": float(np.mean(returns)) if returns else None,
                          "std": float(np.std(returns)) if returns else None,
                          "episodes": len(returns), "returns": returns}
        if returns:
            writer.add_scalar(f"eval/{domain}_return", result[domain]["mean"], len(history))
    result |= {"final_seed": final_seed, "candidates": len(history),
               "target_episodes_used": history[-1]["target_episodes_used"],
               "simulator_steps": len(history) * args.inner_timesteps + args.final_timesteps,
               "loop_seconds": sum(r["seconds"] for r in history), "final_seconds": time.time() - start}
    with open(os.path.join(run_dir, "eval.json"), "w") as f:
        json.dump(result, f, indent=2)
    writer.close()
    print(f"{run_dir}: phi* {result['phi_star']}, final policy on target {result['target']['mean']} +- "
          f"{result['target']['std']}, source {result['source']['mean']}; "
          f"{result['target_episodes_used']} target episodes in the search")
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))
