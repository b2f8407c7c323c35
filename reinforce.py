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
    python reinforce.py --env-id Hopper-v4 --checkpoint runs/<run>/model.pt
"""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import random
import sys
import time
import warnings
from collections import deque
from dataclasses import asdict, dataclass

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
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """name of this experiment, part of the run directory"""
    seed: int = 1
    """seed of random, numpy, torch and the environment"""
    torch_deterministic: bool = True
    """make torch use deterministic algorithms"""
    torch_threads: int = 1
    """torch CPU threads; 1 is fastest for 64-unit networks"""
    env_id: str = "Hopper-v4"
    """gymnasium id of an environment with a Box or Discrete action space"""
    total_timesteps: int = 1_000_000
    """total environment steps of training"""
    learning_rate: float = 3e-3
    """Adam learning rate of the policy (start value when annealed)"""
    anneal_lr: bool = True
    """decay both learning rates linearly to 0 over training"""
    episodes_per_update: int = 5
    """whole episodes per policy gradient step"""
    gamma: float = 0.99
    """discount factor of the reward-to-go"""
    baseline: str = "value"
    """subtracted from G_t: none, mean (of the batch), value (a learned V(s_t))"""
    vf_learning_rate: float = 1e-3
    """Adam learning rate of the value function (baseline value)"""
    vf_epochs: int = 5
    """epochs of value regression on each batch (baseline value)"""
    vf_minibatch_size: int = 256
    """samples per value minibatch (baseline value)"""
    norm_adv: bool = True
    """divide Phi_t by its batch std (scale only: the baseline decides what is subtracted)"""
    norm_obs: bool = True
    """normalize observations with running statistics (frozen and saved for evaluation)"""
    norm_reward: bool = True
    """scale rewards by the running std of the discounted return, then clip to +-10"""
    ent_coef: float = 0.0
    """entropy bonus coefficient"""
    max_grad_norm: float = 0.5
    """global gradient-norm clipping of each network's step"""
    log_dir: str = "runs"
    """where run directories are created"""
    save_model: bool = True
    """write model.pt into the run directory"""
    eval_episodes: int = 10
    """deterministic evaluation episodes after training"""
    checkpoint: str | None = None
    """load this model.pt and only evaluate it"""
    capture_video: bool = False
    """record the evaluation episodes to <run>/videos (MP4; renders with MUJOCO_GL, default egl)"""
    progress: bool = True
    """show a progress bar when stderr is a terminal"""


def fail(message: str) -> None:
    """Print a one-line error and exit with status 2 (bad input)."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


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


def reinforce_loss(dist: torch.distributions.Distribution, actions: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """-mean_t[log pi(a_t|s_t) Phi_t], whose gradient is minus the REINFORCE estimate (per step).

    dist: pi(.|s_t) with batch shape (B,) (Agent.dist of the batch's observations), actions (B, ...)
    and weights Phi (B,), a constant. Williams 1992, Eq. 4.
    """
    return -(dist.log_prob(actions) * weights.detach()).mean()


@torch.inference_mode()
def evaluate(agent: Agent, obs_rms: RunningMeanStd | None, env_id: str, episodes: int, seed: int,
             video_dir: str | None = None) -> list[float]:
    """Returns of `episodes` deterministic episodes (mode of pi), frozen normalization.

    Env seeds are seed + 10**6 + k, disjoint from training's seed.
    """
    env = make_env(env_id, render_mode="rgb_array" if video_dir else None)
    if video_dir:
        env = gym.wrappers.RecordVideo(env, video_dir, episode_trigger=lambda k: True, disable_logger=True)
    returns = []
    for k in range(episodes):
        obs, _ = env.reset(seed=seed + 10**6 + k)
        done, total = False, 0.0
        while not done:
            action = agent.act(normalize_obs(obs[None], obs_rms), deterministic=True)[0].numpy()
            if not agent.discrete:
                action = np.clip(action, env.action_space.low, env.action_space.high)
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return returns


def check_args(args: Args) -> tuple[int, int, bool]:
    """Exit 2 on bad input before anything is written; returns (obs_dim, act_dim, discrete).

    act_dim is the number of actions of a Discrete space.
    """
    if args.env_id not in gym.registry:
        fail(f"unknown env id {args.env_id!r} (see gymnasium.registry for the ids installed)")
    with warnings.catch_warnings():  # a probe only; the training env warns about old versions itself
        warnings.simplefilter("ignore")
        env = make_env(args.env_id)
    obs_space, act_space = env.observation_space, env.action_space
    env.close()
    if not isinstance(act_space, (gym.spaces.Box, gym.spaces.Discrete)) or (
            isinstance(act_space, gym.spaces.Box) and len(act_space.shape) != 1):
        fail(f"{args.env_id} has actions {act_space} (this script needs a flat Box or a Discrete space)")
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
        fail(f"{args.env_id} has observations {obs_space} (this script needs a flat Box)")
    if args.baseline not in BASELINES:
        fail(f"unknown baseline {args.baseline!r} (choose one of {', '.join(BASELINES)})")
    for name in ("total_timesteps", "episodes_per_update", "vf_epochs", "vf_minibatch_size", "torch_threads",
                 "learning_rate", "vf_learning_rate"):
        if getattr(args, name) <= 0:
            fail(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if not 0 <= args.gamma <= 1:
        fail(f"--gamma must be in [0, 1], got {args.gamma}")
    if args.capture_video:
        if importlib.util.find_spec("moviepy") is None:
            fail("--capture-video needs moviepy (pip install -r requirements.txt)")
        os.environ.setdefault("MUJOCO_GL", "egl")  # off-screen rendering; works without a display
    if args.eval_episodes < 0:
        fail(f"--eval-episodes must be >= 0, got {args.eval_episodes}")
    discrete = isinstance(act_space, gym.spaces.Discrete)
    return obs_space.shape[0], int(act_space.n) if discrete else act_space.shape[0], discrete


def load_checkpoint(path: str, obs_dim: int, act_dim: int, discrete: bool) -> tuple[Agent, RunningMeanStd | None]:
    """Agent and frozen normalizer from a model.pt of this script; exits 2 if unreadable or mismatched."""
    try:
        checkpoint = torch.load(path, weights_only=True)
        state = checkpoint["agent"]
        obs_rms = rms_from_tensors(checkpoint["obs_rms"]) if checkpoint["obs_rms"] else None
    except (OSError, RuntimeError, KeyError, TypeError, pickle.UnpicklingError) as e:
        fail(f"cannot load checkpoint {path}: {str(e).splitlines()[0]} (pass a model.pt written by this script)")
    agent = Agent(obs_dim, act_dim, discrete)
    shapes = {k: tuple(v.shape) for k, v in agent.state_dict().items()}
    if {k: tuple(v.shape) for k, v in state.items()} != shapes or (obs_rms and obs_rms.mean.shape != (obs_dim,)):
        fail(f"checkpoint {path} does not match the env's observation/action sizes ({obs_dim}, {act_dim})")
    agent.load_state_dict(state)
    return agent, obs_rms


def train(args: Args, agent: Agent, obs_rms: RunningMeanStd | None, writer: SummaryWriter,
          train_returns: deque) -> int:
    """REINFORCE's loop (Sutton & Barto 2018, Section 13.4 pseudo-code, batched over episodes).

    Updates agent and obs_rms in place; appends raw training episode returns to train_returns;
    returns the number of env steps taken (exactly args.total_timesteps).
    """
    env = gym.wrappers.RecordEpisodeStatistics(make_env(args.env_id))  # raw returns, before any scaling
    if args.norm_reward:
        env = gym.wrappers.NormalizeReward(env, gamma=args.gamma)  # divide by std of discounted return
        env = gym.wrappers.TransformReward(env, lambda r: np.clip(r, -10, 10))
    space = env.action_space
    actor_params = [*agent.actor.parameters(), agent.actor_logstd]
    optimizer = torch.optim.Adam(actor_params, lr=args.learning_rate, eps=1e-5)
    vf_optimizer = torch.optim.Adam(agent.critic.parameters(), lr=args.vf_learning_rate, eps=1e-5)
    use_value = args.baseline == "value"

    global_step, update, start = 0, 0, time.time()
    obs, _ = env.reset(seed=args.seed)
    bar = tqdm(total=args.total_timesteps, disable=not (args.progress and sys.stderr.isatty()), unit="step")
    while global_step < args.total_timesteps:
        frac = 1.0 - global_step / args.total_timesteps if args.anneal_lr else 1.0
        optimizer.param_groups[0]["lr"] = frac * args.learning_rate
        vf_optimizer.param_groups[0]["lr"] = frac * args.vf_learning_rate

        # Play whole episodes with the current policy; normalization statistics stay fixed within
        # a batch, so the stored observations are exactly the ones the policy saw.
        raw_obs, batch_obs, batch_actions, batch_returns = [], [], [], []
        with torch.no_grad():
            for _ in range(args.episodes_per_update):
                ep_obs, ep_actions, ep_rewards, done = [], [], [], False
                while not done and global_step < args.total_timesteps:
                    raw_obs.append(obs)
                    normalized = normalize_obs(obs[None], obs_rms)
                    action = agent.act(normalized)[0]
                    ep_obs.append(normalized[0])
                    ep_actions.append(action)
                    action = action.numpy()
                    obs, reward, terminated, truncated, info = env.step(
                        action if agent.discrete else np.clip(action, space.low, space.high))
                    ep_rewards.append(float(reward))
                    global_step += 1
                    done = terminated or truncated
                    if "episode" in info:
                        writer.add_scalar("charts/episodic_return", info["episode"]["r"], global_step)
                        writer.add_scalar("charts/episodic_length", info["episode"]["l"], global_step)
                        train_returns.append(float(info["episode"]["r"]))
                # A termination ends the return; a truncation (time limit, or the budget running
                # out) only stops observing it: with a learned value the rest is estimated by V(s_T).
                bootstrap = float(agent.value(normalize_obs(obs[None], obs_rms))[0]) if use_value and not terminated else 0.0
                batch_returns.append(reward_to_go(torch.tensor(ep_rewards), args.gamma, bootstrap))
                batch_obs.append(torch.stack(ep_obs))
                batch_actions.append(torch.stack(ep_actions))
                if done:
                    obs, _ = env.reset()
                if global_step >= args.total_timesteps:
                    break
        b_obs, b_actions, b_returns = torch.cat(batch_obs), torch.cat(batch_actions), torch.cat(batch_returns)
        if obs_rms is not None:
            obs_rms.update(np.asarray(raw_obs))

        with torch.no_grad():
            values = agent.value(b_obs) if use_value else None
            weights = policy_weights(b_returns, values, args.baseline, args.norm_adv)
        dist = agent.dist(b_obs)
        pg_loss = reinforce_loss(dist, b_actions, weights)
        old_logprob = dist.log_prob(b_actions).detach()
        entropy = dist.entropy().mean()
        optimizer.zero_grad()
        (pg_loss - args.ent_coef * entropy).backward()
        nn.utils.clip_grad_norm_(actor_params, args.max_grad_norm)
        optimizer.step()

        v_losses = []
        if use_value:  # fit V to the Monte-Carlo returns by regression (Sutton & Barto, Section 13.4)
            for _ in range(args.vf_epochs):
                for mb in torch.randperm(len(b_returns)).split(args.vf_minibatch_size):
                    v_loss = 0.5 * ((agent.value(b_obs[mb]) - b_returns[mb]) ** 2).mean()
                    vf_optimizer.zero_grad()
                    v_loss.backward()
                    nn.utils.clip_grad_norm_(agent.critic.parameters(), args.max_grad_norm)
                    vf_optimizer.step()
                    v_losses.append(v_loss.item())

        update += 1
        with torch.no_grad():
            logratio = agent.dist(b_obs).log_prob(b_actions) - old_logprob
            approx_kl = float((logratio.exp() - 1 - logratio).mean())
        var_returns = float(b_returns.var()) if len(b_returns) > 1 else 0.0
        explained_var = (1 - float((b_returns - values).var()) / var_returns
                         if use_value and var_returns > 0 else float("nan"))
        sps = int(global_step / (time.time() - start))
        for tag, value in (("charts/learning_rate", optimizer.param_groups[0]["lr"]), ("charts/SPS", sps),
                           ("charts/batch_steps", len(b_returns)), ("losses/policy_loss", pg_loss.item()),
                           ("losses/value_loss", float(np.mean(v_losses)) if v_losses else float("nan")),
                           ("losses/entropy", entropy.item()), ("losses/approx_kl", approx_kl),
                           ("losses/explained_variance", explained_var)):
            writer.add_scalar(tag, value, global_step)
        bar.update(len(b_returns))
        bar.set_postfix(SPS=sps, ret=f"{train_returns[-1]:.0f}" if train_returns else "-")
    bar.close()
    env.close()
    return global_step


def main(args: Args) -> dict:
    obs_dim, act_dim, discrete = check_args(args)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(args.torch_deterministic)
    torch.set_num_threads(args.torch_threads)
    if args.checkpoint:
        agent, obs_rms = load_checkpoint(args.checkpoint, obs_dim, act_dim, discrete)
    else:
        agent = Agent(obs_dim, act_dim, discrete)
        obs_rms = RunningMeanStd(shape=(obs_dim,)) if args.norm_obs else None

    run_dir = os.path.join(args.log_dir, f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}")
    writer = SummaryWriter(run_dir)
    writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|" for k, v in asdict(args).items()))
    train_returns: deque[float] = deque(maxlen=100)
    global_step, start = 0, time.time()
    if not args.checkpoint:
        global_step = train(args, agent, obs_rms, writer, train_returns)
        if args.save_model:
            torch.save({"agent": agent.state_dict(), "obs_rms": rms_to_tensors(obs_rms) if obs_rms else {},
                        "args": asdict(args)}, os.path.join(run_dir, "model.pt"))

    returns = evaluate(agent, obs_rms, args.env_id, args.eval_episodes, args.seed,
                       os.path.join(run_dir, "videos") if args.capture_video else None)
    for k, r in enumerate(returns):
        writer.add_scalar("eval/episodic_return", r, k)
    result = {
        "env_id": args.env_id, "episodes": len(returns), "returns": returns,
        "mean": float(np.mean(returns)) if returns else None, "std": float(np.std(returns)) if returns else None,
        "train_return_last100": float(np.mean(train_returns)) if train_returns else None,
        "global_step": global_step, "wall_seconds": time.time() - start, "checkpoint": args.checkpoint,
    }
    with open(os.path.join(run_dir, "eval.json"), "w") as f:
        json.dump(result, f, indent=2)
    writer.close()
    print(f"{run_dir}: eval return {result['mean']} +- {result['std']} over {len(returns)} episodes")
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))
