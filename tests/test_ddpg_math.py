"""ddpg: the replay buffer (ring, sample shapes, truncation vs termination as stored by the training
loop), the Polyak update, the critic target, the actor's ascent on Q, the matrix products of one
update, the OU process."""

import copy
import tracemalloc

import numpy as np
import pytest
import torch
from torch.utils.tensorboard import SummaryWriter

import ddpg


def filled_buffer(capacity, inserts):
    buffer = ddpg.ReplayBuffer(capacity, obs_dim=2, act_dim=1, rng=np.random.default_rng(0))
    for k in range(inserts):
        buffer.add(np.full(2, k), np.full(1, -k), float(k), np.full(2, k + 1), k % 2 == 0)
    return buffer


def test_buffer_wraps_around_and_overwrites_the_oldest():
    buffer = filled_buffer(capacity=5, inserts=7)
    assert buffer.size == 5 and buffer.pos == 2
    # rows 0, 1 hold inserts 5, 6; rows 2..4 still hold inserts 2..4
    assert buffer.rewards.tolist() == [5.0, 6.0, 2.0, 3.0, 4.0]
    assert buffer.obs[:, 0].tolist() == [5.0, 6.0, 2.0, 3.0, 4.0]
    assert buffer.terminated.tolist() == [0.0, 1.0, 1.0, 0.0, 1.0]


def test_saved_buffer_is_oldest_first_and_reloads_into_any_capacity():
    state = filled_buffer(capacity=5, inserts=7).state()  # holds inserts 2..6, the ring starting at row 2
    assert state["rewards"].tolist() == [2.0, 3.0, 4.0, 5.0, 6.0]
    assert state["next_obs"][:, 0].tolist() == [3.0, 4.0, 5.0, 6.0, 7.0]
    smaller = ddpg.ReplayBuffer(3, obs_dim=2, act_dim=1, rng=np.random.default_rng(0))
    smaller.load(state)  # keeps the newest it can hold
    assert smaller.size == 3 and smaller.pos == 0 and smaller.rewards.tolist() == [4.0, 5.0, 6.0]
    larger = ddpg.ReplayBuffer(10, obs_dim=2, act_dim=1, rng=np.random.default_rng(0))
    larger.load(state)
    assert larger.size == larger.pos == 5 and larger.rewards[:5].tolist() == [2.0, 3.0, 4.0, 5.0, 6.0]
    larger.add(np.zeros(2), np.zeros(1), 7.0, np.zeros(2), False)  # goes on after the loaded rows
    assert larger.rewards[5] == 7.0 and larger.size == 6
    assert filled_buffer(capacity=5, inserts=3).state()["rewards"].tolist() == [0.0, 1.0, 2.0]  # not yet full


def test_sample_shapes_dtypes_and_only_stored_rows():
    buffer = filled_buffer(capacity=100, inserts=10)
    obs, actions, rewards, next_obs, terminated = buffer.sample(64)
    assert obs.shape == next_obs.shape == (64, 2) and actions.shape == (64, 1)
    assert rewards.shape == terminated.shape == (64,)
    assert all(x.dtype == torch.float32 for x in (obs, actions, rewards, next_obs, terminated))
    assert rewards.max() <= 9 and torch.equal(next_obs[:, 0], obs[:, 0] + 1) and torch.equal(actions[:, 0], -rewards)


def test_buffer_memory_stays_flat_once_full():
    tracemalloc.start()
    try:
        buffer = filled_buffer(capacity=1000, inserts=1000)
        full = tracemalloc.get_traced_memory()[0]
        for k in range(5000):  # five more fills, sampling as training does
            buffer.add(np.full(2, k), np.full(1, -k), float(k), np.full(2, k + 1), False)
            if k % 100 == 0:
                buffer.sample(256)
        grown = tracemalloc.get_traced_memory()[0] - full
    finally:
        tracemalloc.stop()
    # a buffer that kept its transitions in growing lists would hold ~5000 more rows (> 500 kB)
    assert grown < 10_000, grown


def run_random_steps(env_id, steps, tmp_path):
    args = ddpg.Args(env_id=env_id, total_timesteps=steps, learning_starts=steps, buffer_size=1000,
                     progress=False, eval_freq=0, save_model=False)
    env = ddpg.make_env(env_id)
    networks = ddpg.make_networks(env.observation_space, env.action_space, torch.device("cpu"))
    with SummaryWriter(tmp_path) as writer:
        return ddpg.train(args, networks, writer, str(tmp_path), None)["replay_buffer"]


def test_truncation_is_stored_as_non_terminal_with_the_true_last_observation(tmp_path):
    # Pendulum never terminates and is truncated at 200 steps.
    buffer = run_random_steps("Pendulum-v1", 250, tmp_path)
    assert buffer.terminated[:250].sum() == 0
    inside = [t for t in range(249) if t != 199]
    assert np.array_equal(buffer.next_obs[inside], buffer.obs[[t + 1 for t in inside]])  # s' is the next s
    # at the truncation, s' is the episode's last observation, not the first of the next episode
    assert not np.allclose(buffer.next_obs[199], buffer.obs[200])
    cos, sin = buffer.next_obs[199, :2]
    assert cos**2 + sin**2 == pytest.approx(1.0, abs=1e-5)  # a real Pendulum state (not zeros)


def test_termination_is_stored_as_terminal(tmp_path):
    # InvertedPendulum under random actions falls (terminates) within a few dozen steps.
    buffer = run_random_steps("InvertedPendulum-v4", 300, tmp_path)
    ends = np.flatnonzero(buffer.terminated[:300])
    assert len(ends) >= 3
    assert all(abs(buffer.next_obs[t, 1]) > 0.2 for t in ends)  # the pole angle that ended the episode


def test_polyak_update_is_tau_theta_plus_one_minus_tau_theta_target():
    source, target = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    with torch.no_grad():
        source.weight[:] = torch.tensor([[1.0, 2.0]])
        source.bias[:] = 4.0
        target.weight[:] = torch.tensor([[3.0, -2.0]])
        target.bias[:] = 0.0
    ddpg.soft_update(target, source, tau=0.25)
    assert torch.allclose(target.weight, torch.tensor([[0.25 * 1 + 0.75 * 3, 0.25 * 2 - 0.75 * 2]]))
    assert torch.allclose(target.bias, torch.tensor([1.0]))
    assert torch.allclose(source.weight, torch.tensor([[1.0, 2.0]]))  # the source is untouched


def test_critic_target_bootstraps_except_after_a_termination():
    rewards = torch.tensor([1.0, 2.0, -1.0])
    terminated = torch.tensor([0.0, 1.0, 0.0])
    next_q = torch.tensor([10.0, 10.0, 4.0])
    y = ddpg.td_target(rewards, terminated, next_q, gamma=0.5)
    assert torch.allclose(y, torch.tensor([1.0 + 5.0, 2.0, -1.0 + 2.0]))


def test_actor_step_raises_q_of_its_own_actions():
    torch.manual_seed(0)
    actor, critic = ddpg.Actor(3, 2, -np.ones(2), np.ones(2)), ddpg.Critic(3, 2)
    obs = torch.randn(64, 3)
    before = critic(obs, actor(obs)).mean().item()
    batch = (obs, torch.rand(64, 2) * 2 - 1, torch.randn(64), torch.randn(64, 3), torch.zeros(64))
    ddpg.update(batch, actor, critic, copy.deepcopy(actor), copy.deepcopy(critic),
                torch.optim.SGD(actor.parameters(), lr=0.01), torch.optim.SGD(critic.parameters(), lr=0.0),
                gamma=0.99, tau=0.005)
    assert critic(obs, actor(obs)).mean().item() > before


def test_update_is_critic_step_then_actor_step_on_the_new_critic_then_polyak():
    torch.manual_seed(0)
    actor, critic = ddpg.Actor(3, 2, -np.ones(2), np.ones(2)), ddpg.Critic(3, 2)
    actor_target, critic_target = ddpg.Actor(3, 2, -np.ones(2), np.ones(2)), ddpg.Critic(3, 2)
    batch = (torch.randn(32, 3), torch.rand(32, 2) * 2 - 1, torch.randn(32), torch.randn(32, 3),
             (torch.rand(32) < 0.2).float())
    gamma, tau, lr = 0.9, 0.1, 0.05
    nets = [copy.deepcopy(n) for n in (actor, critic, actor_target, critic_target)]

    # by hand, plain SGD: theta_Q -= lr grad (Q - y)^2; theta_mu += lr grad Q_new(s, mu(s)); then Polyak
    obs, actions, rewards, next_obs, terminated = batch
    y = rewards + gamma * (1 - terminated) * critic_target(next_obs, actor_target(next_obs)).detach()
    critic_grads = torch.autograd.grad(((critic(obs, actions) - y) ** 2).mean(), list(critic.parameters()))
    with torch.no_grad():
        for p, g in zip(critic.parameters(), critic_grads):
            p -= lr * g
    actor_grads = torch.autograd.grad(-critic(obs, actor(obs)).mean(), list(actor.parameters()))
    with torch.no_grad():
        for p, g in zip(actor.parameters(), actor_grads):
            p -= lr * g
        for target, source in ((actor_target, actor), (critic_target, critic)):
            for pt, ps in zip(target.parameters(), source.parameters()):
                pt.copy_(tau * ps + (1 - tau) * pt)

    sgd = [torch.optim.SGD(net.parameters(), lr=lr) for net in nets[:2]]
    ddpg.update(batch, *nets, *sgd, gamma=gamma, tau=tau)
    for expected, got in zip((actor, critic, actor_target, critic_target), nets):
        for pe, pg in zip(expected.parameters(), got.parameters()):
            assert torch.allclose(pe, pg, atol=1e-6)

    # update_actor=False (a delayed policy update) moves the critic only
    frozen = [copy.deepcopy(n) for n in (nets[0], nets[2], nets[3])]
    sgd = [torch.optim.SGD(net.parameters(), lr=lr) for net in nets[:2]]
    ddpg.update(batch, *nets, *sgd, gamma=gamma, tau=tau, update_actor=False)
    for before, after in zip(frozen, (nets[0], nets[2], nets[3])):
        assert all(torch.equal(a, b) for a, b in zip(before.parameters(), after.parameters()))


def test_update_does_only_the_matrix_products_the_algorithm_needs():
    # FLOPs of one Linear layer's forward product on B rows: 2 B n_in n_out. One update needs:
    # critic step: mu'(s') and Q'(s', .) forward, Q(s, a) forward, its backward (weight gradients of all
    # three layers, input gradients of layers 2-3); actor step: mu(s) and Q(s, mu(s)) forward, Q's input
    # gradients through all three layers (no weight gradients), mu's weight gradients and its input
    # gradients of layers 2-3. Computing anything more (e.g. the critic's weight gradients in the actor
    # step, as loss.backward() would) adds 2 B x the critic's size.
    from torch.utils.flop_counter import FlopCounterMode

    obs_dim, act_dim, batch_size, hidden = 11, 3, 64, 256
    actor, critic = ddpg.Actor(obs_dim, act_dim, -np.ones(act_dim), np.ones(act_dim)), ddpg.Critic(obs_dim, act_dim)
    nets = (actor, critic, copy.deepcopy(actor).requires_grad_(False), copy.deepcopy(critic).requires_grad_(False))
    batch = (torch.randn(batch_size, obs_dim), torch.rand(batch_size, act_dim), torch.randn(batch_size),
             torch.randn(batch_size, obs_dim), torch.zeros(batch_size))
    with FlopCounterMode(display=False) as counter:
        ddpg.update(batch, *nets, torch.optim.Adam(actor.parameters()), torch.optim.Adam(critic.parameters()),
                    gamma=0.99, tau=0.005)
    actor_first, critic_first = 2 * batch_size * obs_dim * hidden, 2 * batch_size * (obs_dim + act_dim) * hidden
    actor_all = actor_first + 2 * batch_size * (hidden * hidden + hidden * act_dim)
    critic_all = critic_first + 2 * batch_size * (hidden * hidden + hidden)
    assert counter.get_total_flops() == 4 * actor_all - actor_first + 6 * critic_all - critic_first


def test_actor_output_stays_inside_asymmetric_bounds():
    actor = ddpg.Actor(3, 2, np.array([0.0, -2.0]), np.array([1.0, 6.0]))
    with torch.no_grad():
        actions = actor(100 * torch.randn(256, 3))
    assert (actions[:, 0] >= 0).all() and (actions[:, 0] <= 1).all()
    assert (actions[:, 1] >= -2).all() and (actions[:, 1] <= 6).all()


def test_ou_noise_reverts_to_zero_and_has_its_stationary_spread():
    rng = np.random.default_rng(0)
    quiet = ddpg.OUNoise(1, theta=0.15, sigma=0.0, rng=rng)
    quiet.x[:] = 1.0
    assert quiet()[0] == pytest.approx(1 - 0.15 * 1e-2)  # x <- x - theta x dt
    noise = ddpg.OUNoise(1, theta=0.15, sigma=0.2, rng=rng, dt=0.1)
    samples = np.array([noise()[0] for _ in range(100_000)])
    # the stationary std of an OU process is sigma / sqrt(2 theta) (the Euler step is within 1%)
    assert samples[1000:].std() == pytest.approx(0.2 / np.sqrt(0.3), rel=0.1)
