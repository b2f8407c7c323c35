"""trpo: conjugate gradient, the Fisher-vector product, the trust-region step and its line search."""

import pytest
import torch
from conftest import trpo_step_settings
from torch.distributions import Normal, kl_divergence
from torch.func import functional_call
from torch.nn.utils import parameters_to_vector

import trpo


def policy_params(agent):
    return list(agent.actor_mean.parameters()) + [agent.actor_logstd]


def test_conjugate_gradient_solves_a_random_spd_system():
    gen = torch.Generator().manual_seed(0)
    m = torch.randn(10, 10, generator=gen, dtype=torch.float64)
    a = m @ m.T + 0.5 * torch.eye(10, dtype=torch.float64)
    b = torch.randn(10, generator=gen, dtype=torch.float64)
    x = trpo.conjugate_gradient(lambda v: a @ v, b, iters=25)
    exact = torch.linalg.solve(a, b)
    assert torch.linalg.norm(x - exact) / torch.linalg.norm(exact) < 1e-6


def test_fisher_vector_product_equals_explicit_fisher_times_vector():
    torch.manual_seed(0)
    actor = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).double()
    logstd = torch.nn.Parameter(torch.full((2,), -0.3, dtype=torch.float64))
    params = list(actor.parameters()) + [logstd]
    names = [n for n, _ in actor.named_parameters()]
    obs = torch.randn(16, 3, dtype=torch.float64)
    with torch.no_grad():
        old = Normal(actor(obs), logstd.exp().expand(16, 2))

    def mean_kl(flat):  # mean KL(pi_old || pi_theta) as a function of one flat parameter vector
        tensors, i = {}, 0
        for name, p in zip(names + ["logstd"], params):
            tensors[name], i = flat[i:i + p.numel()].view_as(p), i + p.numel()
        log_std = tensors.pop("logstd")
        mean = functional_call(actor, tensors, (obs,))
        return kl_divergence(old, Normal(mean, log_std.exp().expand_as(mean))).sum(-1).mean()

    theta = parameters_to_vector(params).detach()
    fisher = torch.autograd.functional.hessian(mean_kl, theta)  # Hessian of the KL at theta_old = Fisher
    assert fisher.shape == (28, 28) and torch.linalg.eigvalsh(fisher).min() > -1e-10
    v = torch.randn_like(theta)
    kl_grad = trpo.flat_grad(mean_kl(parameters_to_vector(params)), params, create_graph=True)
    fvp = trpo.fisher_vector_product(kl_grad, params, v, damping=0.1)
    assert torch.allclose(fvp, fisher @ v + 0.1 * v, atol=1e-5, rtol=1e-5)


def batch(seed=0, size=512):
    torch.manual_seed(seed)
    agent = trpo.Agent(4, 2)
    obs = torch.randn(size, 4)
    with torch.no_grad():
        actions = agent.dist(obs).sample()
    advantages = torch.randn(size)
    return agent, obs, actions, advantages


def test_trpo_step_improves_the_surrogate_within_the_kl_bound():
    agent, obs, actions, advantages = batch()
    args = trpo.Args(max_kl=0.01)
    with torch.no_grad():
        old = agent.dist(obs)
        old = Normal(old.loc.clone(), old.scale.clone())
    stats = trpo.trpo_step(agent, obs, actions, advantages, **trpo_step_settings(args))
    with torch.no_grad():
        new = agent.dist(obs)
        kl = kl_divergence(old, new).sum(-1).mean().item()
        ratio = (new.log_prob(actions).sum(-1) - old.log_prob(actions).sum(-1)).exp()
        improvement = (ratio * advantages).mean().item() - advantages.mean().item()
    assert stats["charts/step_accepted"] == 1.0
    assert 0 < kl <= args.max_kl and kl == pytest.approx(stats["losses/kl"], rel=1e-4)
    assert improvement > 0 and improvement == pytest.approx(stats["losses/surrogate_improvement"], rel=1e-3)


def test_full_step_is_sized_so_that_its_quadratic_kl_is_max_kl():
    # Appendix C: beta = sqrt(2 delta / s^T F s), so the KL's quadratic model 0.5 (beta s)^T F (beta s) is
    # exactly delta. Without damping, the true KL of that step is delta up to third-order terms (0.93 delta
    # on this batch), and the line search accepts it at once. A step sqrt(2) too short gives 0.46 delta; one
    # too long exceeds delta and is only accepted after backtracking.
    agent, obs, actions, advantages = batch()
    args = trpo.Args(max_kl=0.01, cg_damping=0.0)
    stats = trpo.trpo_step(agent, obs, actions, advantages, **trpo_step_settings(args))
    assert stats["charts/line_search_steps"] == 1 and stats["charts/step_accepted"] == 1.0
    assert 0.85 * args.max_kl < stats["losses/kl"] <= args.max_kl


def scripted(results):
    """An evaluate_step that returns (surrogate, KL) from a script: first for theta_old, then per try."""
    calls = iter(results)
    return lambda: next(calls)


@pytest.mark.parametrize(
    "results, why",
    [
        ([(0.0, 0.0), (1.0, 0.02), (1.0, 0.011)], "every step improves but breaks the KL bound"),
        ([(0.0, 0.0), (-1.0, 0.001), (0.0, 0.001)], "every step is within the bound but none improves"),
    ],
)
def test_line_search_rejects_and_restores_parameters_bit_identical(results, why):
    agent = trpo.Agent(4, 2)
    params = policy_params(agent)
    before = [p.detach().clone() for p in params]
    step = torch.ones_like(parameters_to_vector(params))
    with torch.no_grad():
        accepted, steps, kl, improvement = trpo.line_search(params, step, scripted(results), max_kl=0.01,
                                                            max_steps=2, backtrack_coef=0.5)
    assert not accepted and steps == 2 and kl == 0.0 and improvement == 0.0, why
    for p, b in zip(params, before):
        assert torch.equal(p, b), why


def test_line_search_accepts_the_first_good_step_and_keeps_it():
    agent = trpo.Agent(4, 2)
    params = policy_params(agent)
    theta_old = parameters_to_vector(params).detach().clone()
    step = torch.ones_like(theta_old)
    results = [(0.0, 0.0), (2.0, 0.05), (1.0, 0.008), (3.0, 0.001)]
    with torch.no_grad():
        accepted, steps, kl, improvement = trpo.line_search(params, step, scripted(results), max_kl=0.01,
                                                            max_steps=3, backtrack_coef=0.5)
    assert accepted and steps == 2 and kl == 0.008 and improvement == 1.0
    assert torch.equal(parameters_to_vector(params), theta_old + 0.5 * step)
