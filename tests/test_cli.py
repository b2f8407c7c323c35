"""Each algorithm script as a user runs it: a short Hopper run and its outputs (model.pt, best_model.pt,
eval.json, TensorBoard), --checkpoint, --init-checkpoint, checkpoints that do not fit."""

import json

import pytest
import torch
from conftest import run_script, scalars
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

pytestmark = pytest.mark.slow

STEPS = 5000  # not a multiple of any script's batch: the budget must still be met exactly
COMMON_TAGS = ["charts/episodic_return", "charts/episodic_length", "charts/SPS", "charts/learning_rate",
               "eval/episodic_return", "eval/episodic_return_std"]
ON_POLICY_TAGS = COMMON_TAGS + ["losses/policy_loss", "losses/value_loss", "losses/entropy", "losses/approx_kl",
                                "losses/explained_variance"]
ON_POLICY = {"agent", "obs_rms", "reward_rms", "global_step", "args"}
SCRIPTS = {  # script -> (TensorBoard tags, model.pt keys, extra args of the smoke run)
    "ppo_continuous.py": (ON_POLICY_TAGS + ["losses/clipfrac"], ON_POLICY | {"optimizer", "kl_beta"}, []),
    "trpo.py": (ON_POLICY_TAGS + ["losses/kl", "losses/surrogate_improvement", "charts/line_search_steps"],
                ON_POLICY | {"vf_optimizer"}, []),
    "a2c.py": (ON_POLICY_TAGS, ON_POLICY | {"optimizer"}, []),
    "reinforce.py": (ON_POLICY_TAGS, ON_POLICY | {"optimizer", "vf_optimizer"}, []),
    "ddpg.py": (COMMON_TAGS + ["losses/qf_loss", "losses/qf_values", "losses/actor_loss"],
                {"actor", "critic", "actor_target", "critic_target", "actor_optimizer", "critic_optimizer",
                 "global_step", "args"}, ["--learning-starts", "2048"]),
}


@pytest.fixture(scope="module", params=list(SCRIPTS))
def hopper_run(request, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("runs")
    # eval every 2000 steps: evaluations at 2000 (or the first batch past it), 4000 and at the end
    result = run_script(request.param, "--env-id", "Hopper-v4", "--total-timesteps", str(STEPS), "--eval-episodes", "2",
                        "--eval-freq", "2000", "--periodic-eval-episodes", "2", "--log-dir", str(log_dir),
                        *SCRIPTS[request.param][2])
    assert result.returncode == 0, result.stderr
    (run_dir,) = log_dir.iterdir()
    return request.param, run_dir


def test_smoke_run_writes_every_tag_both_models_and_eval(hopper_run):
    script, run_dir = hopper_run
    assert run_dir.name.startswith(f"Hopper-v4__{script[:-3]}__1__")
    events = EventAccumulator(str(run_dir))
    events.Reload()
    tags, checkpoint_keys = SCRIPTS[script][:2]
    missing = [t for t in tags if t not in events.Tags()["scalars"]]
    assert not missing
    assert any(t.startswith("hyperparameters") for t in events.Tags()["tensors"])
    steps = [e.step for e in events.Scalars("charts/episodic_return")]
    assert len(steps) > 10 and steps == sorted(steps) and steps[-1] <= STEPS
    evaluations = scalars(run_dir, "eval/episodic_return")
    assert len(evaluations) == 3 and evaluations[-1][0] == STEPS  # about every 2000 steps, and at the end

    result = json.loads((run_dir / "eval.json").read_text())
    assert result["env_id"] == "Hopper-v4" and result["episodes"] == 2 and len(result["returns"]) == 2
    assert result["mean"] == pytest.approx(sum(result["returns"]) / 2)
    assert result["global_step"] == STEPS  # exactly the budget asked for
    best = result["best_model"]
    # best_model.pt is the evaluation with the highest mean; it is evaluated on the final episodes again
    assert (best["global_step"], pytest.approx(best["periodic_eval_mean"])) == max(evaluations, key=lambda e: e[1])
    assert len(best["returns"]) == 2

    for name in ("model.pt", "best_model.pt"):
        checkpoint = torch.load(run_dir / name, weights_only=True)
        assert set(checkpoint) == checkpoint_keys
        assert checkpoint["args"]["env_id"] == "Hopper-v4"
        if "obs_rms" in checkpoint:
            assert checkpoint["obs_rms"]["mean"].shape == (11,)
    assert torch.load(run_dir / "model.pt", weights_only=True)["global_step"] == STEPS
    assert torch.load(run_dir / "best_model.pt", weights_only=True)["global_step"] == best["global_step"]


@pytest.mark.parametrize("name", ["model.pt", "best_model.pt"])
def test_checkpoint_is_evaluated_with_its_frozen_statistics(hopper_run, tmp_path, name):
    script, run_dir = hopper_run
    result = run_script(script, "--env-id", "Hopper-v4", "--checkpoint", str(run_dir / name),
                        "--eval-episodes", "2", "--log-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    (eval_dir,) = tmp_path.iterdir()
    evaluated = json.loads((eval_dir / "eval.json").read_text())
    trained = json.loads((run_dir / "eval.json").read_text())
    # Same weights, same frozen statistics, same evaluation seeds: the same returns.
    expected = trained["returns"] if name == "model.pt" else trained["best_model"]["returns"]
    assert evaluated["returns"] == pytest.approx(expected)
    assert not (eval_dir / "model.pt").exists()


def test_init_checkpoint_continues_step_schedule_and_curves(hopper_run, tmp_path):
    script, run_dir = hopper_run
    result = run_script(script, "--env-id", "Hopper-v4", "--init-checkpoint", str(run_dir / "model.pt"),
                        "--total-timesteps", "2048", "--eval-episodes", "2", "--log-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    (continued,) = tmp_path.iterdir()
    assert json.loads((continued / "eval.json").read_text())["global_step"] == STEPS + 2048
    assert torch.load(continued / "model.pt", weights_only=True)["global_step"] == STEPS + 2048
    episodes = scalars(continued, "charts/episodic_return")
    assert episodes and STEPS < episodes[0][0] and episodes[-1][0] <= STEPS + 2048  # x continues at STEPS
    if script == "ddpg.py":  # replay_buffer.pt reloaded: gradient steps from the first 1000 steps, no warm-up
        assert (run_dir / "replay_buffer.pt").exists()
        assert scalars(continued, "losses/qf_loss")[0][0] == STEPS - STEPS % 1000 + 1000
        # the continued buffer holds the first run's transitions and the new ones
        assert len(torch.load(continued / "replay_buffer.pt", weights_only=True)["rewards"]) == STEPS + 2048
    trained_args = torch.load(run_dir / "model.pt", weights_only=True)["args"]
    if trained_args.get("anneal_lr"):  # the rate goes on decaying from where it stood, to 0 at the new end
        lr0, final = trained_args["learning_rate"], STEPS + 2048
        for step, rate in scalars(continued, "charts/learning_rate"):
            assert lr0 * (1 - step / final) - 1e-9 <= rate <= lr0 * (1 - STEPS / final) + 1e-9, (step, rate)


def test_checkpoint_for_another_env_exits_2(hopper_run, tmp_path):
    script, run_dir = hopper_run
    for flag in ("--checkpoint", "--init-checkpoint"):
        result = run_script(script, "--env-id", "InvertedPendulum-v5", flag, str(run_dir / "model.pt"),
                            "--log-dir", str(tmp_path / "runs"))
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "does not match" in lines[0], result.stderr
        assert not (tmp_path / "runs").exists()


def test_capture_video_records_each_evaluation_episode(tmp_path):
    result = run_script("ppo_continuous.py", "--env-id", "Hopper-v4", "--total-timesteps", "2048",
                        "--eval-episodes", "2", "--capture-video", "--no-save-model", "--log-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    run_dir = next(tmp_path.iterdir())
    videos = sorted((run_dir / "videos").glob("*.mp4"))
    assert len(videos) == 2 and all(v.stat().st_size > 1000 for v in videos)
    assert not (run_dir / "model.pt").exists() and not (run_dir / "best_model.pt").exists()


CUDA_SCRIPTS = list(SCRIPTS)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (this machine has none)")
@pytest.mark.parametrize("script", CUDA_SCRIPTS)
def test_a_gpu_run_trains_on_the_gpu_and_its_checkpoint_evaluates_on_the_cpu(script, tmp_path):
    extra = SCRIPTS[script][2]
    trained = run_script(script, "--cuda", "--env-id", "Hopper-v4", "--total-timesteps", "3000", "--eval-episodes", "2",
                         "--eval-freq", "0", "--log-dir", str(tmp_path / "gpu"), *extra)
    assert trained.returncode == 0, trained.stderr
    (run_dir,) = (tmp_path / "gpu").iterdir()
    state = torch.load(run_dir / "model.pt", weights_only=True)
    network = state["agent"] if "agent" in state else state["actor"]
    assert all(t.is_cuda for t in network.values())  # the networks trained on the GPU
    on_cpu = run_script(script, "--no-cuda", "--env-id", "Hopper-v4", "--checkpoint", str(run_dir / "model.pt"),
                        "--eval-episodes", "2", "--log-dir", str(tmp_path / "cpu"))
    assert on_cpu.returncode == 0, on_cpu.stderr
    (cpu_dir,) = (tmp_path / "cpu").iterdir()
    expected = json.loads((run_dir / "eval.json").read_text())["returns"]
    assert json.loads((cpu_dir / "eval.json").read_text())["returns"] == pytest.approx(expected, rel=1e-3)
