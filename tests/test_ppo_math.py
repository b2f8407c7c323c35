"""ppo_continuous: GAE, the surrogate objectives and the KL coefficient rule (the update itself:
test_ppo_update.py; the observation normalizer of every script: test_normalize_obs.py)."""

import pytest
import torch

import ppo_continuous as ppo


def test_gae_hand_worked_with_a_termination_and_a_truncation():
    # One env, 5 steps, gamma = lambda = 0.5 (gamma * lambda = 0.25).
    # t=1 ends in a terminal state: no bootstrap (its next value 7.0 must be ignored).
    # t=3 is truncated by a time limit: bootstrap from V(final observation) = 10.0.
    rewards = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    values = torch.tensor([0.5, 1.0, 1.5, 2.0, 2.5])
    next_values = torch.tensor([1.0, 7.0, 2.0, 10.0, 3.0])
    terminated = torch.tensor([False, True, False, False, False])
    dones = torch.tensor([False, True, False, True, False])
    # deltas: 1 + .5*1 - .5 = 1.0 | 2 - 1 = 1.0 | 3 + .5*2 - 1.5 = 2.5 | 4 + .5*10 - 2 = 7.0 | 5 + .5*3 - 2.5 = 4.0
    # A_4 = 4.0; A_3 = 7.0 (episode ends); A_2 = 2.5 + .25*7 = 4.25; A_1 = 1.0 (ends); A_0 = 1 + .25*1 = 1.25
    expected_adv = torch.tensor([1.25, 1.0, 4.25, 7.0, 4.0])
    adv, ret = ppo.compute_gae(rewards[:, None], values[:, None], next_values[:, None],
                               terminated[:, None], dones[:, None], gamma=0.5, gae_lambda=0.5)
    assert torch.allclose(adv[:, 0], expected_adv)
    assert torch.allclose(ret[:, 0], expected_adv + values)


def test_gae_with_lambda_one_is_discounted_return_minus_value():
    rewards = torch.tensor([[1.0], [1.0], [1.0]])
    values = torch.zeros(3, 1)
    no = torch.zeros(3, 1, dtype=torch.bool)
    adv, _ = ppo.compute_gae(rewards, values, torch.zeros(3, 1), no, no, gamma=0.9, gae_lambda=1.0)
    assert torch.allclose(adv[:, 0], torch.tensor([1 + 0.9 + 0.81, 1 + 0.9, 1.0]))


RATIO = torch.tensor([0.5, 0.5, 1.5])
ADV = torch.tensor([1.0, -1.0, 2.0])
KL = torch.tensor([0.1, 0.2, 0.3])


@pytest.mark.parametrize(
    "surrogate, expected",
    [
        # min(rA, clip(r, .8, 1.2)A): min(.5, .8) = .5; min(-.5, -.8) = -.8; min(3, 2.4) = 2.4 -> mean .7
        ("clip", -0.7),
        # rA - beta KL with beta = 2: .5-.2, -.5-.4, 3-.6 -> mean .6
        ("fixed-kl", -0.6),
        ("adaptive-kl", -0.6),
        # rA: .5, -.5, 3 -> mean 1
        ("none", -1.0),
    ],
)
def test_surrogate_losses_match_the_paper(surrogate, expected):
    loss = ppo.policy_loss(surrogate, RATIO, ADV, KL, clip_coef=0.2, kl_beta=2.0)
    assert loss.item() == pytest.approx(expected)


def test_unknown_surrogate_raises():
    with pytest.raises(ValueError, match="unknown surrogate"):
        ppo.policy_loss("trust-me", RATIO, ADV, KL, 0.2, 1.0)


def test_adaptive_kl_beta_halves_doubles_or_keeps():
    assert ppo.adapt_kl_beta(1.0, 0.006, kl_target=0.01) == 0.5  # < 0.01 / 1.5
    assert ppo.adapt_kl_beta(1.0, 0.016, kl_target=0.01) == 2.0  # > 0.01 * 1.5
    assert ppo.adapt_kl_beta(1.0, 0.014, kl_target=0.01) == 1.0
