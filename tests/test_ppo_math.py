"""ppo_continuous: GAE, the surrogate objectives, the KL coefficient rule, the normalizer."""

import numpy as np
import pytest
import torch
from gymnasium.wrappers.utils import RunningMeanStd

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


@pytest.mark.parametrize("surrogate", ppo.SURROGATES)
def test_a_step_on_the_surrogate_raises_the_probability_of_good_actions(surrogate):
    # Positive advantage for every sampled action: descending the loss must make them likelier.
    torch.manual_seed(0)
    agent = ppo.Agent(4, 2)
    obs = torch.randn(32, 4)
    with torch.no_grad():
        dist = agent.dist(obs)
        actions = dist.sample()
        old_logprob = dist.log_prob(actions).sum(-1)
    new_dist = agent.dist(obs)
    ratio = (new_dist.log_prob(actions).sum(-1) - old_logprob).exp()
    loss = ppo.policy_loss(surrogate, ratio, torch.ones(32), torch.zeros(32), 0.2, 1.0)
    loss.backward()
    with torch.no_grad():
        for p in agent.parameters():
            if p.grad is not None:
                p -= 0.01 * p.grad
        assert agent.dist(obs).log_prob(actions).sum(-1).mean() > old_logprob.mean()


def test_normalizer_update_freeze_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    a, b = rng.normal(3.0, 2.0, size=(50, 4)), rng.normal(-1.0, 0.5, size=(70, 4))
    obs_rms = RunningMeanStd(shape=(4,))
    obs_rms.update(a)
    obs_rms.update(b)
    both = np.concatenate([a, b])
    assert np.allclose(obs_rms.mean, both.mean(0), atol=1e-4)
    assert np.allclose(obs_rms.var, both.var(0), atol=1e-4)

    probe = rng.normal(size=(5, 4))
    before = obs_rms.mean.copy(), obs_rms.var.copy(), obs_rms.count
    normalized = ppo.normalize_obs(probe, obs_rms)
    assert normalized.dtype == torch.float32
    assert np.array_equal(obs_rms.mean, before[0]) and np.array_equal(obs_rms.var, before[1])
    assert obs_rms.count == before[2]  # normalizing never updates (frozen unless update() is called)
    expected = ((probe - both.mean(0)) / both.std(0)).astype(np.float32)
    assert torch.allclose(normalized, torch.from_numpy(expected), atol=1e-3)
    assert ppo.normalize_obs(np.full((1, 4), 1e6), obs_rms).max().item() == 10.0  # clipped

    path = tmp_path / "model.pt"
    torch.save({"obs_rms": ppo.rms_to_tensors(obs_rms)}, path)
    loaded = ppo.rms_from_tensors(torch.load(path, weights_only=True)["obs_rms"])
    assert torch.equal(ppo.normalize_obs(probe, loaded), normalized)
    assert loaded.count == obs_rms.count
