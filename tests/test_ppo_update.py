"""ppo_continuous.ppo_update on a fixed batch: the clip's gradient away from ratio 1, value clipping,
the direction of the KL penalty and the target_kl early stop, as they act inside training."""

import numpy as np
import pytest
import torch
from torch.distributions import Normal, kl_divergence

import ppo_continuous as ppo

T, N, OBS, ACT = 64, 2, 4, 2
DEFAULTS = {"update_epochs": 10, "minibatch_size": 32, "surrogate": "clip", "clip_coef": 0.2, "kl_beta": 1.0,
            "kl_target": 0.01, "norm_adv": True, "clip_vloss": False, "ent_coef": 0.0, "vf_coef": 0.5,
            "max_grad_norm": 1e9, "target_kl": None}


def batch(seed: int = 0):
    """A rollout of the agent's own actions with random advantages, and the agent that made it."""
    torch.manual_seed(seed)
    agent = ppo.Agent(OBS, ACT)
    obs = torch.randn(T, N, OBS)
    with torch.no_grad():
        actions = agent.dist(obs.reshape(-1, OBS)).sample().reshape(T, N, ACT)
        values = agent.value(obs.reshape(-1, OBS)).reshape(T, N)
    zeros = torch.zeros(T, N)
    rollout = ppo.Rollout(obs, actions, zeros, zeros.bool(), zeros.bool(), torch.zeros_like(obs),
                          obs[-1], np.zeros((N, OBS)), [])
    return agent, rollout, torch.randn(T, N), values


def update(agent, rollout, advantages, returns, values, lr=3e-3, **kwargs):
    optimizer = torch.optim.Adam(agent.parameters(), lr=lr)
    torch.manual_seed(1)  # the minibatch order
    return ppo.ppo_update(agent, optimizer, rollout, advantages, returns, values, **(DEFAULTS | kwargs))


def mean_kl(old, agent, obs):
    with torch.no_grad():
        return kl_divergence(Normal(old.loc, old.scale), agent.dist(obs)).sum(-1).mean().item()


@pytest.mark.parametrize("ratio, advantage, slope", [
    (1.5, 1.0, 0.0),    # above 1 + eps with A > 0: clipped, no incentive to move further (Eq. 7)
    (1.5, -1.0, -1.0),  # above 1 + eps with A < 0: the unclipped term is the minimum, push r down
    (0.5, 1.0, 1.0),    # below 1 - eps with A > 0: unclipped, push r up
    (0.5, -1.0, 0.0),   # below 1 - eps with A < 0: clipped
    (1.1, -1.0, -1.0),  # inside the clip range: the plain surrogate
])
def test_clip_objective_gradient_away_from_ratio_one(ratio, advantage, slope):
    r = torch.tensor([ratio], requires_grad=True)
    (-ppo.policy_loss("clip", r, torch.tensor([advantage]), torch.zeros(1), 0.2, 1.0)).backward()
    assert r.grad.item() == slope


def test_kl_penalty_gradient_lowers_the_objective_by_beta_per_unit_kl():
    ratio, kl = torch.tensor([1.3, 0.6], requires_grad=True), torch.tensor([0.2, 0.1], requires_grad=True)
    for surrogate in ("fixed-kl", "adaptive-kl"):
        ratio.grad = kl.grad = None
        (-ppo.policy_loss(surrogate, ratio, torch.tensor([2.0, -1.0]), kl, 0.2, 3.0)).backward()
        assert torch.equal(ratio.grad, torch.tensor([1.0, -0.5])) and torch.equal(kl.grad, torch.tensor([-1.5, -1.5]))


def test_a_larger_kl_penalty_keeps_the_updated_policy_closer_to_the_old_one():
    kls = []
    for beta in (0.0, 30.0):
        agent, rollout, advantages, values = batch()
        obs = rollout.obs.reshape(-1, OBS)
        with torch.no_grad():
            old = agent.dist(obs)
        update(agent, rollout, advantages, values, values, surrogate="fixed-kl", kl_beta=beta)
        kls.append(mean_kl(old, agent, obs))
    assert kls[1] < 0.5 * kls[0]


def test_adaptive_kl_returns_the_next_beta_from_the_kl_after_the_update():
    agent, rollout, advantages, values = batch()
    # A large step (lr) against a tiny target: KL > 1.5 target, so beta doubles (Section 4).
    _, _, beta = update(agent, rollout, advantages, values, values, surrogate="adaptive-kl", kl_beta=1.0,
                        kl_target=1e-6)
    assert beta == 2.0
    agent, rollout, advantages, values = batch()
    _, _, beta = update(agent, rollout, advantages, values, values, lr=1e-7, surrogate="adaptive-kl", kl_beta=1.0,
                        kl_target=1.0)
    assert beta == 0.5


def test_value_clipping_keeps_the_new_value_near_the_old_one():
    # Returns 100 above the rollout's values: the unclipped loss pulls V towards them (24 after 20 epochs),
    # the clipped one (Huang et al. 2022, detail 9) stops pulling a sample once its V leaves old value
    # +- clip_coef; Adam's momentum and the shared network carry V a little further (0.8).
    moved = {}
    for clip_vloss in (False, True):
        agent, rollout, _, values = batch()
        update(agent, rollout, torch.zeros(T, N), values + 100.0, values, clip_vloss=clip_vloss, update_epochs=20)
        with torch.no_grad():
            moved[clip_vloss] = (agent.value(rollout.obs.reshape(-1, OBS)).reshape(T, N) - values).mean().item()
    assert moved[False] > 10.0
    assert 0.2 <= moved[True] < 1.5


def test_target_kl_stops_the_epochs_early():
    agent, rollout, advantages, values = batch()
    _, epochs, _ = update(agent, rollout, advantages, values, values, target_kl=None)
    assert epochs == DEFAULTS["update_epochs"]
    agent, rollout, advantages, values = batch()
    _, epochs, _ = update(agent, rollout, advantages, values, values, target_kl=1e-8)
    assert epochs == 1  # the first epoch's mean KL already exceeds it
    agent, rollout, advantages, values = batch()
    _, epochs, _ = update(agent, rollout, advantages, values, values, target_kl=10.0)
    assert epochs == DEFAULTS["update_epochs"]
