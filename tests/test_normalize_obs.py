"""The observation normalizer every on-policy script carries its own copy of: running statistics,
frozen normalization, clipping at 10 and the checkpoint round trip."""

import numpy as np
import pytest
import torch
from gymnasium.wrappers.utils import RunningMeanStd

import a2c
import bayrn_hopper
import ppo_continuous
import reinforce
import trpo
import udr_hopper

MODULES = [ppo_continuous, trpo, a2c, reinforce, udr_hopper, bayrn_hopper]


@pytest.fixture(scope="module")
def statistics():
    rng = np.random.default_rng(0)
    a, b = rng.normal(3.0, 2.0, size=(50, 4)), rng.normal(-1.0, 0.5, size=(70, 4))
    obs_rms = RunningMeanStd(shape=(4,))
    obs_rms.update(a)
    obs_rms.update(b)
    both = np.concatenate([a, b])
    assert np.allclose(obs_rms.mean, both.mean(0), atol=1e-4) and np.allclose(obs_rms.var, both.var(0), atol=1e-4)
    return obs_rms, both, rng.normal(size=(5, 4))


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_normalize_obs_standardizes_clips_and_never_updates(module, statistics):
    obs_rms, both, probe = statistics
    before = obs_rms.mean.copy(), obs_rms.var.copy(), obs_rms.count
    normalized = module.normalize_obs(probe, obs_rms)
    assert normalized.dtype == torch.float32
    assert np.array_equal(obs_rms.mean, before[0]) and np.array_equal(obs_rms.var, before[1])
    assert obs_rms.count == before[2]  # normalizing never updates (frozen unless update() is called)
    expected = ((probe - both.mean(0)) / both.std(0)).astype(np.float32)
    assert torch.allclose(normalized, torch.from_numpy(expected), atol=1e-3)
    assert module.normalize_obs(np.full((1, 4), 1e6), obs_rms).max().item() == 10.0  # clipped
    assert module.normalize_obs(np.full((1, 4), -1e6), obs_rms).min().item() == -10.0


@pytest.mark.parametrize("module", [a2c, reinforce], ids=lambda m: m.__name__)
def test_without_statistics_the_observation_passes_unchanged(module, statistics):
    _, _, probe = statistics  # --no-norm-obs (these two scripts also run Discrete tasks unnormalized)
    assert torch.equal(module.normalize_obs(probe, None), torch.from_numpy(probe.astype(np.float32)))


@pytest.mark.parametrize("module", [m for m in MODULES if hasattr(m, "rms_to_tensors")], ids=lambda m: m.__name__)
def test_statistics_survive_the_checkpoint_round_trip(module, statistics, tmp_path):
    obs_rms, _, probe = statistics
    path = tmp_path / "model.pt"
    torch.save({"obs_rms": module.rms_to_tensors(obs_rms)}, path)
    loaded = module.rms_from_tensors(torch.load(path, weights_only=True)["obs_rms"])
    assert torch.equal(module.normalize_obs(probe, loaded), module.normalize_obs(probe, obs_rms))
    assert loaded.count == obs_rms.count and np.array_equal(loaded.var, obs_rms.var)
