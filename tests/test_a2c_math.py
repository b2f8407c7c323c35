"""a2c: n-step returns by hand, the actor-critic loss's gradients, both action-space types."""

import pytest
import torch

import a2c


def test_n_step_returns_across_a_termination_and_a_truncation():
    # gamma = 0.5, lambda = 1 (the paper's n-step returns). Column 0: t=1 ends in a terminal state
    # (its next value 7.0 must be ignored), t=2 is truncated by a time limit (bootstrap from
    # V(final observation) = 8.0), t=3 is the last step of the rollout (bootstrap V(s_4) = 6.0).
    # Column 1: no episode end, a plain 4-step return bootstrapped with V(s_4) = 8.0.
    rewards = torch.tensor([[1.0, 1.0], [2.0, 1.0], [3.0, 1.0], [4.0, 1.0]])
    values = torch.tensor([[0.5, 0.0], [1.0, 0.0], [1.5, 0.0], [2.0, 0.0]])
    next_values = torch.tensor([[1.0, 0.0], [7.0, 0.0], [8.0, 0.0], [6.0, 8.0]])
    terminated = torch.tensor([[False, False], [True, False], [False, False], [False, False]])
    dones = torch.tensor([[False, False], [True, False], [True, False], [False, False]])
    advantages, returns = a2c.compute_gae(rewards, values, next_values, terminated, dones, gamma=0.5, gae_lambda=1.0)
    # R_3 = 4 + .5*6 = 7; R_2 = 3 + .5*8 = 7 (cut at the truncation); R_1 = 2 (terminal); R_0 = 1 + .5*2 = 2
    # R_0 of column 1 = 1 + .5 + .25 + .125 + .0625*8 = 2.375, and so on.
    expected = torch.tensor([[2.0, 2.375], [2.0, 2.75], [7.0, 3.5], [7.0, 5.0]])
    assert torch.allclose(returns, expected)
    assert torch.allclose(advantages, expected - values)


def test_policy_gradient_of_the_loss_is_minus_advantage_times_score():
    # Categorical over logits z: d log pi(a) / dz = onehot(a) - pi. The loss is -mean(A log pi(a)),
    # so its gradient with respect to the last layer's bias is -mean(A (onehot(a) - pi)).
    torch.manual_seed(0)
    agent = a2c.Agent(3, 2, discrete=True)
    obs, actions = torch.randn(4, 3), torch.tensor([0, 0, 1, 1])
    advantages, returns = torch.tensor([1.0, 2.0, -1.0, 0.5]), torch.zeros(4)
    loss, pg_loss, _, _ = a2c.a2c_loss(agent, obs, actions, advantages, returns, ent_coef=0.0, vf_coef=0.0)
    assert loss.item() == pytest.approx(pg_loss.item())  # vf_coef = ent_coef = 0: only the policy term
    loss.backward()
    probs = agent.dist(obs).probs.detach()
    expected = -(advantages[:, None] * (torch.nn.functional.one_hot(actions, 2) - probs)).mean(0)
    assert torch.allclose(agent.actor[-1].bias.grad, expected, atol=1e-6)


def test_value_loss_gradient_pulls_v_towards_the_returns():
    torch.manual_seed(0)
    agent = a2c.Agent(3, 2, discrete=False)
    obs, actions = torch.randn(8, 3), torch.randn(8, 2)
    returns = agent.value(obs).detach() + 1.0  # every target one unit above the current value
    _, _, v_loss, _ = a2c.a2c_loss(agent, obs, actions, torch.zeros(8), returns, ent_coef=0.0, vf_coef=1.0)
    assert v_loss.item() == pytest.approx(0.5)
    v_loss.backward()
    assert agent.critic[-1].bias.grad.item() == pytest.approx(-1.0)  # d/db 0.5 mean((V + ... - R)^2) = mean(V - R)


def test_entropy_bonus_raises_the_gaussian_std():
    agent = a2c.Agent(3, 2, discrete=False)
    obs, actions = torch.randn(8, 3), torch.randn(8, 2)
    loss, _, _, entropy = a2c.a2c_loss(agent, obs, actions, torch.zeros(8), agent.value(obs).detach(),
                                       ent_coef=1.0, vf_coef=0.0)
    assert entropy.item() == pytest.approx(2 * 0.5 * (1 + torch.log(torch.tensor(2 * torch.pi)).item()))
    loss.backward()
    assert (agent.actor_logstd.grad < 0).all()  # descending the loss increases the log-std


@pytest.mark.parametrize("discrete", [True, False])
def test_act_shapes_and_deterministic_mode(discrete):
    agent = a2c.Agent(4, 3, discrete=discrete)
    obs = torch.randn(5, 4)
    sample, mode = agent.act(obs), agent.act(obs, deterministic=True)
    assert sample.shape == mode.shape == ((5,) if discrete else (5, 3))
    expected_mode = agent.actor(obs).argmax(-1) if discrete else agent.actor(obs)
    assert torch.equal(mode, expected_mode)
    assert agent.dist(obs).log_prob(sample).shape == (5,)
