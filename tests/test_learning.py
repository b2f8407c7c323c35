"""Each algorithm learns: InvertedPendulum-v4 balanced by a short run (about 20 s each here).

A policy-gradient sign error, a detached ratio, a broken GAE or (TRPO) a wrong step direction
leaves the deterministic evaluation far below the threshold within this budget.
"""

import pytest

import ppo_continuous
import trpo


@pytest.mark.parametrize("module", [ppo_continuous, trpo])
def test_balances_inverted_pendulum(module, tmp_path):
    args = module.Args(env_id="InvertedPendulum-v4", total_timesteps=30_720, eval_episodes=10,
                       log_dir=str(tmp_path), progress=False, save_model=False)
    result = module.main(args)
    assert result["mean"] >= 900, result
