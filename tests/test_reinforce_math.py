"""reinforce: reward-to-go by hand, the three baselines, the estimator's gradient."""

import pytest
import torch

import reinforce


def test_reward_to_go_hand_worked():
    rewards = torch.tensor([1.0, 2.0, 3.0])
    # gamma = 0.5: G_2 = 3, G_1 = 2 + 1.5 = 3.5, G_0 = 1 + 1.75 = 2.75
    assert torch.allclose(reinforce.reward_to_go(rewards, 0.5), torch.tensor([2.75, 3.5, 3.0]))
    # truncated with V(s_T) = 4: G_2 = 3 + 2 = 5, G_1 = 2 + 2.5 = 4.5, G_0 = 1 + 2.25 = 3.25
    assert torch.allclose(reinforce.reward_to_go(rewards, 0.5, bootstrap=4.0), torch.tensor([3.25, 4.5, 5.0]))
    # gamma = 1: the undiscounted sums
    assert torch.allclose(reinforce.reward_to_go(rewards, 1.0), torch.tensor([6.0, 5.0, 3.0]))


RETURNS = torch.tensor([1.0, 2.0, 6.0])
VALUES = torch.tensor([0.5, 2.5, 3.0])


@pytest.mark.parametrize("baseline, expected", [
    ("none", RETURNS),
    ("mean", RETURNS - 3.0),
    ("value", RETURNS - VALUES),
])
def test_each_baseline_subtracts_what_it_says(baseline, expected):
    assert torch.allclose(reinforce.policy_weights(RETURNS, VALUES, baseline, norm_adv=False), expected)
    scaled = reinforce.policy_weights(RETURNS, VALUES, baseline, norm_adv=True)
    assert torch.allclose(scaled, expected / expected.std())  # scale only, the mean is kept


def test_bad_baseline_or_missing_values_raise():
    with pytest.raises(ValueError, match="unknown baseline"):
        reinforce.policy_weights(RETURNS, VALUES, "median", norm_adv=False)
    with pytest.raises(ValueError, match="needs the values"):
        reinforce.policy_weights(RETURNS, None, "value", norm_adv=False)


def test_gradient_is_minus_weight_times_score_on_a_two_action_problem():
    # d log pi(a) / dz = onehot(a) - pi for logits z: the loss -mean(Phi log pi(a)) has gradient
    # -mean(Phi (onehot(a) - pi)) on the last bias. Action 0 rewarded, action 1 punished.
    torch.manual_seed(0)
    agent = reinforce.Agent(2, 2, discrete=True)
    obs, actions = torch.randn(4, 2), torch.tensor([0, 0, 1, 1])
    weights = torch.tensor([1.0, 1.0, -1.0, -1.0])
    loss = reinforce.reinforce_loss(agent.dist(obs), actions, weights)
    loss.backward()
    probs = agent.dist(obs).probs.detach()
    expected = -(weights[:, None] * (torch.nn.functional.one_hot(actions, 2) - probs)).mean(0)
    assert torch.allclose(agent.actor[-1].bias.grad, expected, atol=1e-6)
    # and a gradient step makes the rewarded action likelier in every state
    before = probs[:, 0].clone()
    torch.optim.SGD(agent.parameters(), lr=0.5).step()
    assert (agent.dist(obs).probs[:, 0] > before).all()


def test_gaussian_step_moves_the_mean_towards_rewarded_actions():
    torch.manual_seed(0)
    agent = reinforce.Agent(1, 1, discrete=False)
    obs = torch.zeros(2, 1)
    actions = torch.tensor([[1.0], [-1.0]])  # +1 rewarded, -1 punished
    loss = reinforce.reinforce_loss(agent.dist(obs), actions, torch.tensor([1.0, -1.0]))
    before = agent.actor(obs[:1]).item()
    loss.backward()
    torch.optim.SGD(agent.actor.parameters(), lr=0.1).step()
    assert agent.actor(obs[:1]).item() > before
