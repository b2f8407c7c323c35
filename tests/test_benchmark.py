"""benchmark/run.py end to end on a tiny budget: it runs our script and writes CSV, MD and PNG."""

import csv
import json
import re
import shutil
import sys

import numpy as np
import pytest
from conftest import ROOT, run_benchmark

pytest.importorskip("matplotlib", reason="benchmark extras: pip install -r benchmark/requirements.txt")
# .ci/run runs these after installing benchmark/requirements.txt
pytestmark = [pytest.mark.extras, pytest.mark.slow]


def test_harness_runs_ours_and_writes_results(tmp_path):
    flags = ["--algo", "ppo", "--env-id", "InvertedPendulum-v4", "--total-timesteps", "2048", "--seeds", "1",
             "--eval-episodes", "2", "--name", "tiny"]
    result = run_benchmark("run.py", *flags, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr

    with open(tmp_path / "results" / "tiny.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert row["impl"] == "ours" and row["seed"] == "1" and row["eval_episodes"] == "2"
    for column in ("train_return_last100", "train_return_best100", "eval_mean", "eval_std", "sps", "wall_seconds",
                   "peak_rss_mb"):
        assert float(row[column]) >= 0, column
    assert float(row["sps"]) > 0 and float(row["peak_rss_mb"]) > 50  # a python + torch process
    assert (tmp_path / "results" / "tiny.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = (tmp_path / "results" / "tiny.md").read_text()
    assert "benchmark/run.py" in summary and "| ours |" in summary

    # A finished job is not run again: a second call reuses it (and so takes no training time).
    job = tmp_path / "runs" / "tiny" / "ours" / "seed1" / "job.json"
    stamp = job.stat().st_mtime_ns
    assert run_benchmark("run.py", *flags, tmp_path=tmp_path).returncode == 0
    assert job.stat().st_mtime_ns == stamp


def test_best_moving_mean_is_the_highest_window_not_the_last(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmark"))
    import run

    returns = np.concatenate([np.zeros(100), np.full(100, 10.0), np.full(100, 5.0)])
    assert run.best_moving_mean(returns) == pytest.approx(10.0)
    assert run.best_moving_mean(returns, window=200) == pytest.approx(7.5)  # episodes 100-299
    assert run.best_moving_mean(np.array([1.0, 2.0, 6.0])) == pytest.approx(3.0)  # fewer episodes than the window: all


def test_paired_speed_run_reports_the_ratio_and_the_load_it_ran_under(tmp_path):
    pytest.importorskip("stable_baselines3", reason="benchmark extras: pip install -r benchmark/requirements.txt")
    result = run_benchmark("run.py", "--algo", "ppo", "--env-id", "InvertedPendulum-v4", "--total-timesteps", "2048",
                           "--seeds", "1", "--eval-episodes", "2", "--peer", "--paired", "--name", "pair",
                           tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "results" / "pair.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["impl"] for r in rows] == ["ours", "SB3 PPO"] and all(float(r["loadavg_at_start"]) >= 0 for r in rows)
    (line,) = [x for x in (tmp_path / "results" / "pair.md").read_text().splitlines() if x.startswith("SPS ratio")]
    ratio = float(rows[0]["sps"]) / float(rows[1]["sps"])
    assert f"median {ratio:.2f}" in line and "load average as each run started: " in line


def test_sps_ratio_is_per_seed_and_says_how_the_runs_shared_the_machine(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmark"))
    import run

    # rows in the order main() writes them (seed by seed), peer 2x slower on seed 1, 4x on seed 2
    rows = [{"impl": impl, "seed": seed, "sps": sps, "loadavg_at_start": 0.5, "train_return_last100": 1.0,
             "train_return_best100": 1.0, "eval_mean": 1.0, "best_eval_mean": None, "wall_seconds": 1.0,
             "peak_rss_mb": 100.0} for seed, pair in ((1, (200, 100)), (2, (400, 100)))
            for impl, sps in zip(("ours", "SB3 PPO"), pair)]
    lines = {}
    for jobs, paired in ((1, False), (2, True), (2, False)):
        args = run.Args(seeds=[1, 2], peer=True, jobs=jobs, paired=paired, results_dir=str(tmp_path))
        run.write_summary(rows, ["abc1234"], args, "s")
        lines[jobs, paired] = (tmp_path / "s.md").read_text()
    assert "per seed (each run alone on the machine): 2.00, 4.00; median 3.00" in lines[1, False]
    assert "per seed (ours and the peer of a seed run side by side, under the same load): 2.00, 4.00" in lines[2, True]
    assert "SPS ratio" not in lines[2, False] and "share the machine" in lines[2, False]


def test_peer_takes_our_number_of_envs_and_rollout_length(tmp_path):
    pytest.importorskip("stable_baselines3", reason="benchmark extras: pip install -r benchmark/requirements.txt")
    flags = ["--algo", "ppo", "--env-id", "InvertedPendulum-v4", "--total-timesteps", "512", "--seed", "1",
             "--eval-episodes", "1", "--num-envs", "2", "--num-steps", "128", "--vec-env", "subproc"]
    result = run_benchmark("sb3_peer.py", *flags, "--log-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    # one Monitor file per env, and two rollouts of 2 x 128 steps
    assert sorted(p.name for p in tmp_path.glob("*monitor.csv")) == ["0.monitor.csv", "1.monitor.csv"]
    assert json.loads((tmp_path / "eval.json").read_text())["global_step"] == 512
    bad = run_benchmark("sb3_peer.py", "--algo", "ddpg", "--num-steps", "8", "--log-dir", str(tmp_path / "bad"))
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and not (tmp_path / "bad").exists()


def test_transfer_table_runs_every_row(tmp_path):
    flags = ["--total-timesteps", "2048", "--seeds", "1", "--eval-episodes", "2", "--name", "tiny", "--bayrn-init", "2",
             "--bayrn-iterations", "1"]
    result = run_benchmark("transfer.py", *flags, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "results" / "tiny.csv") as f:
        rows = list(csv.DictReader(f))
    # source, target, udr at the default scale (0.1) and bayrn, all udr_hopper.py's PPO
    assert sorted((r["algo"], r["train_domain"], r["mass_scale"]) for r in rows) == [
        ("udr_hopper", "bayrn", ""), ("udr_hopper", "source", ""), ("udr_hopper", "target", ""),
        ("udr_hopper", "udr", "0.1")]
    # 3 BayRn candidates x 5 target episodes; no other row touches the target while training
    assert {r["train_domain"]: int(r["loop_target_episodes"]) for r in rows} == {
        "bayrn": 15, "source": 0, "target": 0, "udr": 0}
    summary = (tmp_path / "results" / "tiny.md").read_text()
    for row in ("S -> S", "S -> T", "T -> T", "UDR -> S", "UDR -> T", "BayRn -> S", "BayRn -> T"):
        assert f"| PPO (udr_hopper.py) | {row} |" in summary, row
    assert (tmp_path / "results" / "tiny.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the BayRn search itself is kept beside the table: every candidate, and its figure
    history = (tmp_path / "results" / "tiny-bayrn-seed1.jsonl").read_text().splitlines()
    assert [json.loads(line)["index"] for line in history] == [0, 1, 2]
    assert (tmp_path / "results" / "tiny-bayrn-seed1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| 1 | " in summary  # the per-seed phi* row
    # no two runs share a training seed; every final policy is published
    assert len({r["train_seed"] for r in rows}) == 4
    assert sorted(p.name for p in (tmp_path / "results" / "policies" / "tiny").iterdir()) == [
        "bayrn-seed1.pt", "source-seed1.pt", "target-seed1.pt", "udr-seed1.pt"]
    # --reevaluate: the published policies, evaluated again from the results alone, give the published numbers
    shutil.rmtree(tmp_path / "runs")
    (tmp_path / "results" / "tiny.md").unlink()
    result = run_benchmark("transfer.py", *flags, "--reevaluate", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "results" / "tiny.csv") as f:
        again = list(csv.DictReader(f))
    assert again == rows
    assert (tmp_path / "results" / "tiny.md").read_text().count("| BayRn -> T |") == 1


def test_transfer_learners_tune_the_udr_scale_on_other_seeds_and_evaluate_on_both_domains(tmp_path):
    result = run_benchmark("transfer.py", "--algos", "trpo", "--rows", "source", "target", "udr", "--tune-seeds", "9",
                           "--mass-scales", "0.1", "0.3", "--total-timesteps", "2048", "--seeds", "1",
                           "--eval-episodes", "2", "--name", "learners", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "results" / "learners.csv") as f:
        rows = list(csv.DictReader(f))
    tuned = {float(r["mass_scale"]): float(r["target_mean"]) for r in rows if r["purpose"] == "tune"}
    assert sorted(tuned) == [0.1, 0.3] and all(r["seed"] == "9" for r in rows if r["purpose"] == "tune")
    # the reported udr row trains at the scale whose tuning run did best on the target
    (udr,) = [r for r in rows if r["purpose"] == "report" and r["train_domain"] == "udr"]
    assert float(udr["mass_scale"]) == max(tuned, key=tuned.get)
    # the target episodes of the tuning runs are counted; training never touches the target otherwise
    assert sorted(int(r["loop_target_episodes"]) for r in rows) == [0, 0, 0, 2, 2]
    # each run trained on its own id with the learner's own script, and was evaluated on source and target
    for r in rows:
        tune = f"-scale{r['mass_scale']}" if r["purpose"] == "tune" else ""
        job = tmp_path / "runs" / "learners" / f"trpo-{r['train_domain']}{tune}" / f"seed{r['seed']}"
        (trained,) = job.glob("*__*/eval.json")
        percent = round(100 * float(r["mass_scale"])) if r["train_domain"] == "udr" else ""
        assert json.loads(trained.read_text())["env_id"] == f"hopper_envs:CustomHopper-{r['train_domain']}" \
                                                           f"{percent}-v0"
        assert json.loads((job / "job.json").read_text())["command"][1].endswith("trpo.py")
        for domain in ("source", "target"):
            (evaluated,) = job.glob(f"eval-{domain}/*__*/eval.json")
            result = json.loads(evaluated.read_text())
            assert result["env_id"] == f"hopper_envs:CustomHopper-{domain}-v0"
            assert float(r[f"{domain}_mean"]) == round(result["mean"], 1) and len(result["returns"]) == 2
    assert len({r["train_seed"] for r in rows}) == len(rows) == 5
    summary = (tmp_path / "results" / "learners.md").read_text()
    assert "| TRPO | UDR -> T |" in summary and "| TRPO | S -> T |" in summary
    assert summary.count("(chosen)") == 1


def test_transfer_resumes_a_stopped_bayrn_run_and_refuses_another_budget(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmark"))
    import transfer

    args = transfer.Args(total_timesteps=4096, bayrn_init=2, bayrn_iterations=1, eval_episodes=3)
    fresh = transfer.bayrn_command(args, 7, str(tmp_path))
    assert "--resume" not in fresh and fresh[fresh.index("--inner-timesteps") + 1] == "4096"
    run_dir = tmp_path / "CustomHopper-udr__bayrn_hopper__7__1"
    run_dir.mkdir()
    saved = {"seed": 7, "inner_timesteps": 4096, "final_timesteps": 4096, "num_init": 2, "iterations": 1,
             "eval_episodes": 3}
    (run_dir / "args.json").write_text(json.dumps(saved))
    assert transfer.bayrn_command(args, 7, str(tmp_path))[-2:] == ["--resume", str(run_dir)]
    for wrong in ({"inner_timesteps": 2048}, {"final_timesteps": 0}):
        (run_dir / "args.json").write_text(json.dumps({**saved, **wrong}))
        with pytest.raises(SystemExit) as stop:
            transfer.bayrn_command(args, 7, str(tmp_path))
        assert stop.value.code == 2
    # a search started with other --bayrn-args is another variant: refused both ways
    (run_dir / "args.json").write_text(json.dumps(saved))
    variant = transfer.Args(**{**vars(args), "bayrn_args": "--common-seed --target-episodes 10"})
    with pytest.raises(SystemExit):
        transfer.bayrn_command(variant, 7, str(tmp_path))
    other = tmp_path / "variant"
    assert "--common-seed" in transfer.bayrn_command(variant, 7, str(other))  # fresh: records its flags
    (other / "CustomHopper-udr__bayrn_hopper__7__1").mkdir()
    (other / "CustomHopper-udr__bayrn_hopper__7__1" / "args.json").write_text(json.dumps(saved))
    assert transfer.bayrn_command(variant, 7, str(other))[-1].endswith("__1")
    with pytest.raises(SystemExit):
        transfer.bayrn_command(args, 7, str(other))
    # --reuse-search: the final policy only, from the candidates of another table's search of the same seed
    reuse = transfer.Args(**{**vars(args), "reuse_search": "searched", "runs_dir": str(tmp_path / "runs")})
    with pytest.raises(SystemExit):
        transfer.bayrn_command(reuse, 7, str(tmp_path / "reuse"))  # that table has no search of seed 7
    searched = tmp_path / "runs" / "searched" / "bayrn" / "seed7" / "CustomHopper-udr__bayrn_hopper__7__2"
    searched.mkdir(parents=True)
    fresh = transfer.bayrn_command(reuse, 7, str(tmp_path / "reuse"))
    assert fresh[fresh.index("--search-from") + 1] == str(searched)


def test_a_job_run_again_starts_from_an_empty_directory_unless_it_resumes(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmark"))
    import run
    import transfer

    for resume in (False, True):
        job_dir = tmp_path / f"resume{resume}"
        (job_dir / "Hopper-v4__ppo_continuous__1__1").mkdir(parents=True)  # what a killed run left
        job = run.run_job([sys.executable, "-c", f"import os; print(sorted(os.listdir({str(job_dir)!r})))"],
                          str(job_dir), resume=resume)
        assert job["returncode"] == 0
        assert ("Hopper-v4__ppo_continuous__1__1" in (job_dir / "output.log").read_text()) == resume
    # the transfer table resumes BayRn searches only: every other row starts afresh
    asked = {}

    def fake_runner(address):
        def fake_run_job(command, job_dir, resume=False):
            asked[command[1].rsplit("/", 1)[-1]] = resume
            raise RuntimeError("stop here")
        return fake_run_job

    monkeypatch.setattr(transfer, "runner", fake_runner)
    args = transfer.Args(total_timesteps=2048, runs_dir=str(tmp_path / "runs"))
    for key in (("udr_hopper", "bayrn", 7, None), ("udr_hopper", "source", 7, None)):
        with pytest.raises(RuntimeError, match="stop here"):
            transfer.train_one(args, key)
    assert asked == {"bayrn_hopper.py": True, "udr_hopper.py": False}


def test_transfer_table_keeps_its_published_rows_when_the_runs_are_gone(tmp_path):
    # benchmark/runs/ is not committed: a table that grows over sessions must keep the rows it published.
    def table(*flags):
        result = run_benchmark("transfer.py", "--total-timesteps", "2048", "--name", "grow", *flags, tmp_path=tmp_path)
        assert result.returncode == 0, result.stderr
        shutil.rmtree(tmp_path / "runs")  # a new session: only results/ is left
        with open(tmp_path / "results" / "grow.csv") as f:
            return result.stdout, list(csv.DictReader(f))

    _, first = table("--rows", "source", "--seeds", "1", "--eval-episodes", "2")
    out, second = table("--rows", "target", "--seeds", "1", "2", "--eval-episodes", "2")
    assert "kept 1 published rows" in out
    assert [(r["train_domain"], r["seed"]) for r in second] == [("source", "1"), ("target", "1"), ("target", "2")]
    assert second[0] == first[0]  # the source row as published, not trained again
    assert "| S -> T |" in (tmp_path / "results" / "grow.md").read_text()
    # another evaluation budget is another table: nothing published under this name fits it
    out, third = table("--rows", "source", "--seeds", "1", "--eval-episodes", "3")
    assert "published rows" not in out and [r["eval_episodes"] for r in third] == ["3"]


def test_ddpg_profile_times_and_counts_each_part_and_prints_the_operators():
    pytest.importorskip("stable_baselines3", reason="benchmark extras: pip install -r benchmark/requirements.txt")
    result = run_benchmark("profile_ddpg.py", "--env-id", "Pendulum-v1", "--updates", "5", "--repeats", "1", "--bf16",
                           "--sb3")
    assert result.returncode == 0, result.stderr
    cells = [[c.strip() for c in line.strip("|").split("|")]
             for line in result.stdout.splitlines() if line.startswith("| ")]
    rows = {name: (float(ms), float(mflop)) for name, ms, mflop, _ in cells[1:]}
    assert set(rows) == {"env step + buffer add", "actor inference (1 obs)", "ddpg.update (fp32)",
                         "reference: one 256 x 256 product", "ddpg.update (bf16 autocast)",
                         "SB3 DDPG train(gradient_steps=1)"}
    assert rows["env step + buffer add"][1] == 0 and rows["reference: one 256 x 256 product"][1] == 33.6  # 2 x 256^3
    # the same products under autocast; SB3 adds the critic's weight gradients in its actor step
    fp32, bf16 = rows["ddpg.update (fp32)"][1], rows["ddpg.update (bf16 autocast)"][1]
    assert bf16 == fp32 < rows["SB3 DDPG train(gradient_steps=1)"][1]
    # the closing sentence restates the table: the update's GFLOP/s as a share of the bare product's
    rate = {name: mflop / ms for name, (ms, mflop) in rows.items() if mflop}
    share = rate["ddpg.update (fp32)"] / rate["reference: one 256 x 256 product"]
    printed = re.search(r"runs at (\d+)% of the bare product's rate: .* it would be ([\d.]+)x faster", result.stdout)
    assert printed, result.stdout
    assert float(printed[1]) == pytest.approx(100 * share, abs=1.5)
    assert float(printed[2]) == pytest.approx(1 / share, rel=0.02)
    assert "aten::addmm" in result.stdout  # the profile of the linear layers inside ddpg.update


def test_ppo_profile_charges_each_function_to_who_spends_its_time(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmark"))
    import profile_ppo

    site = "/usr/lib/python3.11/site-packages"
    cases = {("~", "<built-in method mujoco._functions.mj_step>"): "simulator",
             (f"{site}/gymnasium/envs/mujoco/hopper_v4.py", "is_healthy"): "simulator",
             (f"{site}/gymnasium/wrappers/vector/stateful_reward.py", "step"): "gymnasium",
             ("~", "<method 'run_backward' of 'torch._C._EngineBase' objects>"): "torch",
             (f"{site}/torch/nn/modules/linear.py", "forward"): "torch",
             ("~", "<method 'reduce' of 'numpy.ufunc' objects>"): "numpy",
             ("/repo/ppo_continuous.py", "collect_rollout"): "script",
             ("~", "<built-in method marshal.loads>"): "other"}
    assert {k: profile_ppo.group_of(*k[:1], k[1], "/repo/ppo_continuous.py") for k in cases} == cases


def test_ppo_profile_runs_the_script_under_cprofile_and_shares_add_up():
    result = run_benchmark("profile_ppo.py", "--env-id", "InvertedPendulum-v4", "--total-timesteps", "2048")
    assert result.returncode == 0, result.stderr
    rows = {cells[0]: cells for line in result.stdout.splitlines() if line.startswith("| ") and "%" in line
            for cells in [[c.strip() for c in line.strip("|").split("|")]]}
    assert set(rows) == {"simulator", "gymnasium", "torch", "numpy", "script", "other"}
    assert float(rows["simulator"][1]) > 0 and float(rows["script"][1]) > 0
    assert abs(sum(int(r[2].rstrip("%")) for r in rows.values()) - 100) <= 3  # rounded shares


def test_hopper_gif_reads_the_policy_from_the_checkpoint_file_alone(tmp_path):
    import importlib.util

    import torch
    from gymnasium.wrappers.utils import RunningMeanStd
    from PIL import Image

    import ppo_continuous as ppo

    torch.manual_seed(0)
    agent, obs_rms = ppo.Agent(11, 3), RunningMeanStd(shape=(11,))
    obs_rms.update(np.random.default_rng(0).normal(2.0, 3.0, size=(50, 11)))
    torch.nn.init.normal_(agent.actor_mean[4].weight)  # a non-trivial mean action (the init scales it by 0.01)
    path = tmp_path / "model.pt"
    torch.save({"agent": agent.state_dict(), "obs_rms": ppo.rms_to_tensors(obs_rms)}, path)
    spec = importlib.util.spec_from_file_location("hopper_gif", ROOT / "benchmark" / "hopper_gif.py")
    hopper_gif = sys.modules["hopper_gif"] = importlib.util.module_from_spec(spec)  # dataclasses need it there
    spec.loader.exec_module(hopper_gif)
    policy = hopper_gif.deterministic_policy(str(path))
    obs = np.random.default_rng(1).normal(0.0, 5.0, size=(11,))
    obs[:2] = 100.0, -100.0  # beyond the +-10 clip once normalized
    with torch.no_grad():
        expected = agent.actor_mean(ppo.normalize_obs(obs[None], obs_rms))[0].numpy()
    assert np.allclose(policy(obs), expected, atol=1e-6) and np.abs(expected).max() > 0.1

    out = tmp_path / "hopper.gif"
    result = run_benchmark("hopper_gif.py", "--checkpoint", str(path), "--out", str(out), "--steps", "8", "--every",
                           "4", "--size", "64")
    assert result.returncode == 0, result.stderr
    with Image.open(out) as gif:
        assert gif.n_frames == 2 and gif.size == (64, 64)


@pytest.mark.parametrize("flags, message", [
    (["--tune-seeds", "1", "--seeds", "1", "2"], "overlap --seeds"),
    (["--algos", "trpo", "--rows", "udr", "--mass-scale", "0.15"], "CustomHopper-udr<percent>-v0"),
    (["--algos", "trpo", "--rows", "bayrn"], "needs --algos udr_hopper"),
    (["--reevaluate", "--name", "nothing"], "no nothing.csv"),
])
def test_transfer_refuses_a_table_it_cannot_make_in_one_line_before_running_anything(tmp_path, flags, message):
    result = run_benchmark("transfer.py", *flags, tmp_path=tmp_path)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error: ")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "results").exists()


def test_surrogates_normalizes_each_environment_from_the_random_policy_to_the_best_setting(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmark"))
    import surrogates

    clip, none, ablation = "clipping, epsilon = 0.2", "no clipping or penalty", "none, no grad-norm clipping"
    rows = [{"setting": s, "flags": "", "env_id": e, "seed": seed, "total_timesteps": 10, "last100": x,
             "random_policy": 0, "wall_seconds": 1, "commit": "abc"}
            for s, e, seed, x in [(clip, "A", 1, 90.0), (clip, "A", 2, 110.0), (none, "A", 1, 10.0),
                                  (none, "A", 2, 30.0), (clip, "B", 1, -50.0), (none, "B", 1, -100.0),
                                  (ablation, "A", 1, 300.0)]]
    random = {"A": 0.0, "B": -200.0}
    scores = surrogates.normalized(rows, random)
    # the ablation (no paper score) beats every setting on A, but the scale stays the paper settings' best
    assert scores[ablation, "A"] == pytest.approx([3.0])
    assert scores[clip, "A"] == pytest.approx([0.9, 1.1]) and scores[none, "A"] == pytest.approx([0.1, 0.3])
    assert scores[clip, "B"] == pytest.approx([1.0]) and scores[none, "B"] == pytest.approx([2 / 3])
    args = surrogates.Args(env_ids=["A", "B"], seeds=[1, 2], results_dir=str(tmp_path), name="t")
    surrogates.write(rows, random, args)
    lines = (tmp_path / "t.md").read_text().splitlines()
    table = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in lines
             if line.startswith("| ") and "setting" not in line}
    assert table[clip][3] == "1.00" and table[clip][4] == "0.82 |" and table[none][3] == f"{(0.4 + 2 / 3) / 3:.2f}"
    assert table[none][1] == "0.20 (0.10, 0.30)" and "Partial: 7 of 40 runs" in (tmp_path / "t.md").read_text()
    assert table[ablation][1] == "3.00 (3.00)" and table[ablation][2] == "-" and table[ablation][4] == "- |"
    # the random policy of a real environment: Pendulum's reward is never positive
    assert surrogates.random_policy_return("Pendulum-v1", 2) < -100


def test_surrogates_resumes_from_the_runs_its_csv_records(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmark"))
    import surrogates

    clip = "clipping, epsilon = 0.2"
    flags = " ".join(surrogates.SETTINGS[clip][0])
    rows = [{"setting": clip, "flags": f, "env_id": e, "seed": seed, "total_timesteps": steps, "last100": 5.0,
             "random_policy": 0.0, "wall_seconds": 1.0, "commit": "abc"}
            for f, e, seed, steps in [(flags, "A", 1, 10), (flags, "A", 2, 20), (flags, "B", 1, 10),
                                      (flags, "A", 3, 10), ("--surrogate clip --clip-coef 0.25", "A", 2, 10)]]
    args = surrogates.Args(env_ids=["A", "B"], seeds=[1, 2], total_timesteps=10, results_dir=str(tmp_path), name="t")
    assert surrogates.recorded_rows(args) == []  # no csv yet
    surrogates.write(rows, {"A": 0.0, "B": -1.0}, args)
    # kept: same flags, steps, an environment and a seed asked for; the 20-step, seed-3 and other-flags rows are not
    kept = surrogates.recorded_rows(args)
    assert [(r["env_id"], r["seed"]) for r in kept] == [("A", 1), ("B", 1)] and kept[0] == rows[0]


def test_time_to_return_reads_the_moving_mean_against_wall_clock_seconds(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmark"))
    import time_to_return as ttr

    returns = np.array([0.0, 10.0, 20.0, 30.0, 40.0])
    assert ttr.moving_mean(returns, 2) == pytest.approx([0, 5, 15, 25, 35])
    seconds = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    # the first full window of 2 whose mean reaches 25 ends with the episode at 4 s; 36 is never reached
    assert ttr.time_to(seconds, returns, 25.0, 2) == 4.0 and ttr.time_to(seconds, returns, 36.0, 2) is None
    assert ttr.time_to(seconds, np.array([30.0, 0.0, 0.0]), 20.0, 2) is None  # one return is not a full window
    assert ttr.mean_at(seconds, returns, 3.5, 2) == 15 and ttr.mean_at(seconds, returns, 0.5, 2) is None
    assert ttr.mean_at(seconds, returns, 100.0, 2) == 35  # the run ended earlier: its last moving mean

    result = run_benchmark("time_to_return.py", "--impls", "ours", "--env-id", "Pendulum-v1", "--total-timesteps",
                           "4096", "--seeds", "1", "--threshold", "-5000", "--window", "5", "--marks", "0.001", "1000",
                           tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "results" / "time-to-return.csv") as f:
        (row,) = list(csv.DictReader(f))
    job = json.loads((tmp_path / "runs" / "time-to-return" / "ours" / "seed1" / "job.json").read_text())
    # Pendulum's 200-step episodes all return more than -5000: reached at the 5th episode's end, which
    # lies between the process start and its end; nothing had finished at 1 ms
    assert 0 < float(row["seconds_to_threshold"]) < job["wall_seconds"] and row["return_at_0.001s"] == ""
    assert float(row["return_at_1000s"]) == float(row["final_return"])


def test_transfer_slots_let_a_waiting_evaluation_go_before_earlier_trainings(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmark"))
    import threading
    import time

    import transfer

    slots, started = transfer.Slots(1), []

    def job(name, priority):
        with slots.take(priority):
            started.append(name)

    with slots.take(1):  # the one slot is busy while three jobs queue up
        threads = [threading.Thread(target=job, args=a) for a in (("train a", 1), ("train b", 1), ("evaluate", 0))]
        for t in threads:
            t.start()
            time.sleep(0.05)  # queue in this order
    for t in threads:
        t.join(timeout=10)
    assert started == ["evaluate", "train a", "train b"]
    two = transfer.Slots(2)
    with two.take(1), two.take(1):  # n jobs at once, not more
        assert two.free == 0


def test_transfer_csv_keeps_text_cells_that_look_like_numbers(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmark"))
    import transfer

    path = tmp_path / "table.csv"
    path.write_text("algo,train_domain,mass_scale,seed,commit,target_mean,bayrn_args\n"
                    "trpo,udr,0.1,101,870e094,803.4,\n")  # a short commit hash that float() reads as 8.7e96
    (row,) = transfer.read_rows(str(path))
    assert row["commit"] == "870e094" and row["algo"] == "trpo" and row["purpose"] == "report"
    assert row["mass_scale"] == 0.1 and row["seed"] == 101 and row["target_mean"] == 803.4
