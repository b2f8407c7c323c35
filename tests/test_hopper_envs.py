"""hopper_envs: nominal masses, source vs target, UDR sampling, the bounds API and its errors."""

import gymnasium as gym
import numpy as np
import pytest

import hopper_envs

UDR_BOUNDS = {"thigh": (3.0, 3.5), "leg": (2.0, 2.2), "foot": (5.0, 6.0)}


def make(domain, **kwargs):
    return gym.make(f"CustomHopper-{domain}-v0", **kwargs)


def test_registered_ids_have_hopper_spaces_and_1000_step_episodes():
    for domain in hopper_envs.DOMAINS:
        env = make(domain)
        assert env.observation_space.shape == (11,)
        assert env.action_space.shape == (3,)
        assert env.spec.max_episode_steps == 1000


def test_target_masses_are_mujoco3_values_read_from_the_model():
    masses = hopper_envs.get_masses(make("target"))
    expected = {"torso": 3.665, "thigh": 4.058, "leg": 2.781, "foot": 5.316}
    for body, mass in expected.items():
        assert masses[body] == pytest.approx(mass, abs=1e-3), body


def test_source_differs_from_target_by_one_kg_of_torso_only():
    source, target = make("source").unwrapped, make("target").unwrapped
    diff = target.model.body_mass - source.model.body_mass
    torso = source._body_ids["torso"]
    assert diff[torso] == pytest.approx(1.0, abs=1e-12)
    assert np.count_nonzero(diff) == 1
    # The torso keeps its shape: inertia scales with mass, and no other body's inertia moves.
    ratio = source.model.body_inertia[torso] / target.model.body_inertia[torso]
    assert np.allclose(ratio, source.model.body_mass[torso] / target.model.body_mass[torso])
    others = [i for i in range(1, source.model.nbody) if i != torso]
    assert np.array_equal(source.model.body_inertia[others], target.model.body_inertia[others])


def test_same_actions_give_different_trajectories_on_source_and_target():
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, size=(30, 3))
    trajectories = []
    for domain in ("source", "target"):
        env = make(domain)
        obs, _ = env.reset(seed=3)
        trajectory = [obs]
        for a in actions:
            obs, *_ = env.step(a)
            trajectory.append(obs)
        trajectories.append(np.array(trajectory))
    assert np.array_equal(trajectories[0][0], trajectories[1][0])  # same start state
    assert np.abs(trajectories[0] - trajectories[1]).max() > 1e-3


def udr_masses(env, resets, seed):
    sampled = []
    env.reset(seed=seed)
    sampled.append(hopper_envs.get_masses(env))
    for _ in range(resets - 1):
        env.reset()
        sampled.append(hopper_envs.get_masses(env))
    return sampled


def test_udr_masses_change_every_reset_within_bounds_and_torso_stays_at_source():
    source_torso = hopper_envs.get_masses(make("source"))["torso"]
    sampled = udr_masses(make("udr", mass_bounds=UDR_BOUNDS), resets=20, seed=0)
    for masses in sampled:
        assert masses["torso"] == source_torso
        for body, (low, high) in UDR_BOUNDS.items():
            assert low <= masses[body] <= high, (body, masses[body])
    for body in UDR_BOUNDS:
        assert len({m[body] for m in sampled}) == 20, body


def test_udr_default_bounds_are_source_mass_plus_minus_ten_percent_and_the_ids_set_other_scales():
    source = hopper_envs.nominal_masses("source")
    for env_id, scale in [("CustomHopper-udr-v0", 0.1), ("CustomHopper-udr30-v0", 0.3),
                          ("CustomHopper-udr5-v0", 0.05)]:
        env = gym.make(env_id).unwrapped
        for body in hopper_envs.RANDOMIZED_BODIES:
            assert env.mass_bounds[body] == pytest.approx(((1 - scale) * source[body], (1 + scale) * source[body]))
        assert env.masses()["torso"] == source["torso"]
    with pytest.raises(ValueError, match="not both"):
        make("udr", mass_bounds=UDR_BOUNDS, mass_scale=0.2)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        make("udr", mass_scale=1.0)
    with pytest.raises(ValueError, match="only apply"):
        make("source", mass_scale=0.2)


def test_same_seed_same_mass_sequence_other_seed_other_sequence():
    a = udr_masses(make("udr"), resets=5, seed=42)
    b = udr_masses(make("udr"), resets=5, seed=42)
    c = udr_masses(make("udr"), resets=5, seed=43)
    assert a == b
    assert a != c


def test_set_mass_bounds_on_a_live_vector_env_applies_from_the_next_reset():
    envs = gym.make_vec("CustomHopper-udr-v0", num_envs=2, vectorization_mode="sync")
    envs = gym.wrappers.vector.RecordEpisodeStatistics(envs)  # as the scripts wrap them
    envs.reset(seed=0)
    fixed = {"thigh": (1.0, 1.0), "leg": (2.0, 2.0), "foot": (3.0, 3.0)}
    hopper_envs.set_mass_bounds(envs, fixed)
    envs.reset()
    for masses in envs.unwrapped.call("masses"):
        assert (masses["thigh"], masses["leg"], masses["foot"]) == (1.0, 2.0, 3.0)


def test_set_masses_scales_each_bodys_inertia_by_its_mass_ratio_and_nothing_else():
    # A randomized body keeps its shape: its inertia tensor (principal moments) scales with its mass.
    env = make("target")
    model = env.unwrapped.model
    before_mass, before_inertia = model.body_mass.copy(), model.body_inertia.copy()
    foot, leg = model.body("foot").id, model.body("leg").id
    hopper_envs.set_masses(env, {"foot": 4.0, "leg": 1.5})
    assert hopper_envs.get_masses(env)["foot"] == 4.0 and model.body_mass[foot] == 4.0
    for body, mass in ((foot, 4.0), (leg, 1.5)):
        assert np.allclose(model.body_inertia[body], before_inertia[body] * mass / before_mass[body], rtol=1e-12)
    others = [i for i in range(model.nbody) if i not in (foot, leg)]
    assert np.array_equal(model.body_inertia[others], before_inertia[others])
    assert np.array_equal(model.body_mass[others], before_mass[others])
    # Setting a mass back restores the inertia: the scaling is relative to the current mass, not the XML's.
    hopper_envs.set_masses(env, {"foot": float(before_mass[foot]), "leg": float(before_mass[leg])})
    assert np.allclose(model.body_inertia, before_inertia, rtol=1e-12)


@pytest.mark.parametrize(
    "bounds, words",
    [
        ({"thigh": (3.5, 3.0), "leg": (2, 3), "foot": (5, 6)}, ["thigh", "low > high", "3.5", "3.0"]),
        ({"thigh": (3, 4), "leg": (0.0, 3), "foot": (5, 6)}, ["leg", "positive", "0.0"]),
        ({"thigh": (3, 4), "leg": (2, 3), "foot": (5, 6, 7)}, ["foot", "2 numbers", "3"]),
        ({"thigh": (3, 4), "leg": (2, 3)}, ["missing", "foot"]),
        ({"thigh": (3, 4), "leg": (2, 3), "foot": (5, 6), "torso": (1, 2)}, ["unknown", "torso"]),
    ],
)
def test_bad_bounds_raise_value_error_naming_body_and_values(bounds, words):
    for call in (lambda: make("udr", mass_bounds=bounds), lambda: hopper_envs.set_mass_bounds(make("udr"), bounds)):
        with pytest.raises(ValueError) as info:
            call()
        for word in words:
            assert word in str(info.value)


def test_bad_masses_and_wrong_domain_raise_value_error():
    with pytest.raises(ValueError, match="thigh.*positive.*-1"):
        hopper_envs.set_masses(make("target"), {"thigh": -1.0})
    with pytest.raises(ValueError, match="unknown Hopper body"):
        hopper_envs.set_masses(make("target"), {"head": 1.0})
    with pytest.raises(ValueError, match="udr"):
        hopper_envs.set_mass_bounds(make("source"), UDR_BOUNDS)
    with pytest.raises(TypeError, match="CustomHopper"):
        hopper_envs.get_masses(gym.make("InvertedPendulum-v4"))
