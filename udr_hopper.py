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
"""

from __future__ import annotations

import json
import os
import pickle
import random
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass

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
# +-10%, about the seed study's +-0.5 kg. Chosen after benchmark/transfer.py's sweep on seed 1 (scale
# 0.1 / 0.3 / 0.5: target returns 1932 / 922 / 829), so with target data; the first, a-priori default
# 0.3 transferred worse than no randomization on all 3 seeds (benchmark/results/transfer-hopper-scale0.3.md).
DEFAULT_MASS_SCALE = 0.1


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """name of this experiment, part of the run directory"""
    seed: int = 1
    """seed of random, numpy, torch and the environments"""
    torch_deterministic: bool = True
    """make torch use deterministic algorithms"""
    torch_threads: int = 1
    """torch CPU threads; 1 is fastest for 64-unit networks"""
    train_domain: str = "udr"
    """source, target (the oracle), or udr (source with randomized thigh / leg / foot masses)"""
    mass_low: dict[str, float] | None = None
    """udr: lower mass bound in kg per body, e.g. thigh 3.0 leg 2.0 foot 4.5 (unnamed bodies stay fixed)"""
    mass_high: dict[str, float] | None = None
    """udr: upper mass bound in kg per body, naming the same bodies as --mass-low"""
    mass_scale: float | None = None
    """udr: bounds (1 -+ scale) x the source mass of thigh, leg and foot (default 0.1 when no bounds are given)"""
    total_timesteps: int = 500_000
    """total environment steps of training (the same for every row of the transfer table)"""
    learning_rate: float = 3e-4
    """Adam learning rate (start value, annealed linearly to 0)"""
    num_envs: int = 1
    """parallel environments (gymnasium SyncVectorEnv)"""
    num_steps: int = 2048
    """steps per environment per rollout"""
    gamma: float = 0.99
    """discount factor"""
    gae_lambda: float = 0.95
    """GAE lambda"""
    num_minibatches: int = 32
    """minibatches per epoch; must divide num_envs * num_steps"""
    update_epochs: int = 10
    """epochs over each rollout"""
    clip_coef: float = 0.2
    """epsilon of the clipped surrogate (also clips the value loss)"""
    ent_coef: float = 0.0
    """entropy bonus coefficient"""
    vf_coef: float = 0.5
    """value loss coefficient"""
    max_grad_norm: float = 0.5
    """global gradient-norm clipping"""
    log_dir: str = "runs"
    """where run directories are created"""
    save_model: bool = True
    """write model.pt into the run directory"""
    eval_episodes: int = 50
    """deterministic evaluation episodes after training, on each of source and target"""
    checkpoint: str | None = None
    """load this model.pt and only evaluate it"""
    progress: bool = True
    """show a progress bar when stderr is a terminal"""


def fail(message: str) -> None:
    """Print a one-line error and exit with status 2 (bad input)."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


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
            raise ValueError(f"--mass-low names {sorted(low)} but --mass-high names {sorted(high)} (name the same bodies)")
        unknown = sorted(set(low) - set(hopper_envs.RANDOMIZED_BODIES))
        if unknown:
            raise ValueError(f"unknown bodies {unknown} in the mass bounds (randomizable: thigh, leg, foot)")
        bounds = {b: (low[b], high[b]) if b in low else (source[b], source[b]) for b in hopper_envs.RANDOMIZED_BODIES}
    else:
        scale = DEFAULT_MASS_SCALE if args.mass_scale is None else args.mass_scale
        if not 0 <= scale < 1:
            raise ValueError(f"--mass-scale must be in [0, 1), got {scale}")
        bounds = {b: ((1 - scale) * source[b], (1 + scale) * source[b]) for b in hopper_envs.RANDOMIZED_BODIES}
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
    """clip((obs - mean) / sqrt(var + 1e-8), -clip, clip); obs (B, 11) -> float32 tensor (B, 11).

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


@torch.inference_mode()
def evaluate(agent: Agent, obs_rms: RunningMeanStd, domain: str, episodes: int, seed: int) -> dict:
    """Deterministic (mean-action) episodes on CustomHopper-<domain>-v0 with frozen normalization.

    Env seeds are seed + 10**6 + k, disjoint from training's. Returns {"mean", "std", "episodes",
    "returns", "masses"}; masses (kg) are read back from the env while it runs.
    """
    env = make_env(domain)
    returns, masses = [], None
    for k in range(episodes):
        obs, _ = env.reset(seed=seed + 10**6 + k)
        masses = hopper_envs.get_masses(env)
        done, total = False, 0.0
        while not done:
            mean = agent.actor_mean(normalize_obs(obs[None], obs_rms))
            obs, reward, terminated, truncated, _ = env.step(np.clip(mean[0].numpy(), -1.0, 1.0))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return {"mean": float(np.mean(returns)) if returns else None, "std": float(np.std(returns)) if returns else None,
            "episodes": len(returns), "returns": returns, "masses": masses}


def check_args(args: Args) -> dict | None:
    """Exit 2 on bad input before anything is written; returns the UDR mass bounds (or None)."""
    if args.train_domain not in DOMAINS:
        fail(f"unknown --train-domain {args.train_domain!r} (choose one of {', '.join(DOMAINS)})")
    try:
        bounds = mass_bounds(args)
    except ValueError as e:
        fail(f"{e} (see --help for the mass flags)")
    for name in ("total_timesteps", "num_envs", "num_steps", "num_minibatches", "update_epochs", "torch_threads"):
        if getattr(args, name) <= 0:
            fail(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.eval_episodes < 0:
        fail(f"--eval-episodes must be >= 0, got {args.eval_episodes}")
    if (args.num_envs * args.num_steps) % args.num_minibatches:
        fail(f"--num-minibatches {args.num_minibatches} does not divide the batch of "
             f"{args.num_envs * args.num_steps} steps (pick a divisor of num_envs * num_steps)")
    return bounds


def load_checkpoint(path: str) -> tuple[Agent, RunningMeanStd]:
    """Agent and frozen normalizer from a model.pt of this script; exits 2 if unreadable or mismatched."""
    agent = Agent(11, 3)
    try:
        checkpoint = torch.load(path, weights_only=True)
        agent.load_state_dict(checkpoint["agent"])
        obs_rms = rms_from_tensors(checkpoint["obs_rms"])
    except (OSError, RuntimeError, KeyError, TypeError, pickle.UnpicklingError) as e:
        fail(f"cannot load checkpoint {path}: {str(e).splitlines()[0]} (pass a model.pt written by this script)")
    return agent, obs_rms


def train(args: Args, bounds: dict | None, agent: Agent, obs_rms: RunningMeanStd, writer: SummaryWriter,
          train_returns: deque) -> int:
    """PPO's loop (Algorithm 1 of the PPO paper) on the training domain; updates agent, obs_rms.

    Logs the masses of every training episode (domain/<body>_mass, x = the step it starts at).
    Appends raw training episode returns to train_returns; returns the number of env steps taken.
    """
    envs = gym.vector.SyncVectorEnv([lambda: make_env(args.train_domain, bounds)] * args.num_envs,
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    envs = gym.wrappers.vector.RecordEpisodeStatistics(envs)  # raw returns, before any scaling
    envs = gym.wrappers.vector.NormalizeReward(envs, gamma=args.gamma)  # divide by std of discounted return
    envs = gym.wrappers.vector.TransformReward(envs, lambda r: np.clip(r, -10, 10))
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5, fused=True)

    T, N = args.num_steps, args.num_envs
    batch_size, minibatch_size = T * N, T * N // args.num_minibatches
    num_iterations = max(1, args.total_timesteps // batch_size)
    obs, actions = torch.zeros((T, N, 11)), torch.zeros((T, N, 3))
    final_obs, rewards = torch.zeros_like(obs), torch.zeros((T, N))
    terminated, dones = torch.zeros((T, N), dtype=torch.bool), torch.zeros((T, N), dtype=torch.bool)
    obs_np, final_obs_np, actions_np, rewards_np, terminated_np, dones_np = (
        x.numpy() for x in (obs, final_obs, actions, rewards, terminated, dones))

    def log_masses(step: int, which) -> None:  # the masses the envs `which` have just been reset to
        for i, masses in enumerate(envs.unwrapped.call("masses")):
            if i in which:
                for body, mass in masses.items():
                    writer.add_scalar(f"domain/{body}_mass", mass, step)

    global_step, start = 0, time.time()
    next_obs, _ = envs.reset(seed=args.seed)
    log_masses(0, range(N))
    bar = tqdm(total=num_iterations * batch_size, disable=not (args.progress and sys.stderr.isatty()), unit="step")
    for iteration in range(num_iterations):
        lr = args.learning_rate * (1.0 - iteration / num_iterations)
        optimizer.param_groups[0]["lr"] = lr
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
                ended = np.flatnonzero(dones_np[step])
                for i in ended:  # next_obs[i] already starts the next episode, with new masses
                    final_obs_np[step, i] = normalize_obs(infos["final_obs"][i][None], obs_rms)[0].numpy()
                if len(ended):
                    log_masses(global_step, set(ended))
                for i in np.flatnonzero(infos.get("_episode", ())):
                    train_returns.append(float(infos["episode"]["r"][i]))
                    writer.add_scalar("charts/episodic_return", train_returns[-1], global_step)
                    writer.add_scalar("charts/episodic_length", int(infos["episode"]["l"][i]), global_step)
            dist = agent.dist(obs)
            logprobs, values = dist.log_prob(actions).sum(-1), agent.value(obs)
            last_value = agent.value(normalize_obs(next_obs, obs_rms))
            next_values = torch.where(dones, agent.value(final_obs), torch.cat([values[1:], last_value[None]]))
            advantages, returns = compute_gae(rewards, values, next_values, terminated, dones,
                                              args.gamma, args.gae_lambda)

        b_obs, b_actions = obs.reshape(batch_size, -1), actions.reshape(batch_size, -1)
        b_logprobs, b_advantages = logprobs.reshape(-1), advantages.reshape(-1)
        b_returns, b_values = returns.reshape(-1), values.reshape(-1)
        stats = []
        for _ in range(args.update_epochs):
            for mb in torch.randperm(batch_size).split(minibatch_size):
                dist = agent.dist(b_obs[mb])
                logratio = dist.log_prob(b_actions[mb]).sum(-1) - b_logprobs[mb]
                ratio = logratio.exp()
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
                approx_kl = ((ratio - 1) - logratio).mean()
                clipfrac = ((ratio - 1.0).abs() > args.clip_coef).float().mean()
                stats.append(torch.stack([pg_loss, v_loss, entropy, approx_kl, clipfrac]).detach())

        pg, vl, ent, approx_kl, clipfrac = torch.stack(stats).mean(0).tolist()
        var_returns = b_returns.var()
        explained_var = float("nan") if var_returns == 0 else float(1 - (b_returns - b_values).var() / var_returns)
        sps = int(global_step / (time.time() - start))
        for tag, value in (("charts/learning_rate", lr), ("charts/SPS", sps), ("losses/policy_loss", pg),
                           ("losses/value_loss", vl), ("losses/entropy", ent), ("losses/approx_kl", approx_kl),
                           ("losses/clipfrac", clipfrac), ("losses/explained_variance", explained_var)):
            writer.add_scalar(tag, value, global_step)
        bar.update(batch_size)
        bar.set_postfix(SPS=sps, ret=f"{train_returns[-1]:.0f}" if train_returns else "-")
    bar.close()
    envs.close()
    return global_step


def main(args: Args) -> dict:
    bounds = check_args(args)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(args.torch_deterministic)
    torch.set_num_threads(args.torch_threads)
    if args.checkpoint:
        agent, obs_rms = load_checkpoint(args.checkpoint)
    else:
        agent, obs_rms = Agent(11, 3), RunningMeanStd(shape=(11,))

    run_dir = os.path.join(args.log_dir, f"CustomHopper-{args.train_domain}__{args.exp_name}__{args.seed}__{int(time.time())}")
    writer = SummaryWriter(run_dir)
    writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|" for k, v in asdict(args).items()))
    train_returns: deque[float] = deque(maxlen=100)
    global_step, start = 0, time.time()
    if not args.checkpoint:
        global_step = train(args, bounds, agent, obs_rms, writer, train_returns)
        if args.save_model:
            torch.save({"agent": agent.state_dict(), "obs_rms": rms_to_tensors(obs_rms), "args": asdict(args)},
                       os.path.join(run_dir, "model.pt"))

    result = {"train_domain": args.train_domain, "mass_bounds": bounds, "global_step": global_step,
              "train_return_last100": float(np.mean(train_returns)) if train_returns else None,
              "checkpoint": args.checkpoint}
    for domain in ("source", "target"):
        result[domain] = evaluate(agent, obs_rms, domain, args.eval_episodes, args.seed)
        for k, r in enumerate(result[domain]["returns"]):
            writer.add_scalar(f"eval/{domain}_return", r, k)
    for k, r in enumerate(result["target"]["returns"]):  # the convention's tag: the return that matters
        writer.add_scalar("eval/episodic_return", r, k)
    result["wall_seconds"] = time.time() - start
    with open(os.path.join(run_dir, "eval.json"), "w") as f:
        json.dump(result, f, indent=2)
    writer.close()
    print(f"{run_dir}: source {result['source']['mean']} +- {result['source']['std']}, "
          f"target {result['target']['mean']} +- {result['target']['std']} ({result['target']['episodes']} episodes each)")
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))
