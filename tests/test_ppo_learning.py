"""ppo_continuous learns: InvertedPendulum-v4 balanced by a short run (about 20 s here).

A policy-gradient sign error, a detached or zeroed advantage, or a broken GAE leaves the
deterministic evaluation far below the threshold within this budget.
"""

import ppo_continuous as ppo


def test_ppo_balances_inverted_pendulum(tmp_path):
    args = ppo.Args(env_id="InvertedPendulum-v4", total_timesteps=30_720, eval_episodes=10,
                    log_dir=str(tmp_path), progress=False, save_model=False)
    result = ppo.main(args)
    assert result["mean"] >= 900, result
