"""Every script refuses a mistyped command line the same way: one line `error: <what> (<what to do>)` on
stderr, exit status 2, no traceback and no run directory. The table is long on purpose: it is the
list of mistakes a user makes (out-of-range values, nan, wrong files, flags that contradict each other).

The table runs in-process (tyro parses, main validates) to keep it fast; a few lines also run as a
real command line, and the mistakes tyro itself catches (a word where a number goes, an unknown flag)
are checked to end without a traceback.
"""

import importlib.util

import pytest
import torch
import tyro
from conftest import run_script

import a2c
import bayrn_hopper
import ddpg
import ppo_continuous
import reinforce
import trpo
import udr_hopper

MODULES = {"ppo_continuous.py": ppo_continuous, "trpo.py": trpo, "a2c.py": a2c, "reinforce.py": reinforce,
           "ddpg.py": ddpg, "udr_hopper.py": udr_hopper, "bayrn_hopper.py": bayrn_hopper}
EVERY = list(MODULES)
GYM_ENVS = ["ppo_continuous.py", "trpo.py", "a2c.py", "reinforce.py", "ddpg.py"]  # take --env-id
TRAINERS = EVERY[:-1]  # bayrn_hopper.py trains candidates, not one policy: no --checkpoint / --eval-freq
ANNEALED = ["ppo_continuous.py", "trpo.py", "a2c.py", "udr_hopper.py", "bayrn_hopper.py"]  # use GAE
PPO_LIKE = ["ppo_continuous.py", "udr_hopper.py", "bayrn_hopper.py"]
LR = [s for s in EVERY if s != "trpo.py"]  # TRPO's policy step has no learning rate
CUDA = EVERY  # every script takes --cuda

# (scripts, arguments, words the error line must contain)
BAD = [
    (EVERY, ["--seed", "-1"], "--seed"),
    (EVERY, ["--seed", str(2**32)], "--seed"),
    (TRAINERS, ["--total-timesteps", "0"], "--total-timesteps"),
    (TRAINERS, ["--total-timesteps", "-1000"], "--total-timesteps"),
    (["bayrn_hopper.py"], ["--inner-timesteps", "0"], "--inner-timesteps"),
    (LR, ["--learning-rate", "0"], "--learning-rate"),
    (LR, ["--learning-rate", "-3e-4"], "--learning-rate"),
    (LR, ["--learning-rate", "nan"], "--learning-rate"),
    (LR, ["--learning-rate", "inf"], "--learning-rate"),
    (EVERY, ["--gamma", "1.5"], "--gamma"),
    (EVERY, ["--gamma", "-0.01"], "--gamma"),
    (EVERY, ["--gamma", "nan"], "--gamma"),
    (ANNEALED, ["--gae-lambda", "1.05"], "--gae-lambda"),
    (ANNEALED, ["--gae-lambda", "nan"], "--gae-lambda"),
    (PPO_LIKE, ["--clip-coef", "0"], "--clip-coef"),
    (PPO_LIKE, ["--clip-coef", "-0.2"], "--clip-coef"),
    (PPO_LIKE + ["a2c.py", "reinforce.py"], ["--max-grad-norm", "0"], "--max-grad-norm"),
    (PPO_LIKE + ["a2c.py"], ["--vf-coef", "-1"], "--vf-coef"),
    (PPO_LIKE + ["a2c.py", "reinforce.py"], ["--ent-coef", "nan"], "--ent-coef"),
    (PPO_LIKE + ["trpo.py", "a2c.py"], ["--num-envs", "0"], "--num-envs"),
    (PPO_LIKE + ["trpo.py", "a2c.py"], ["--num-steps", "0"], "--num-steps"),
    (PPO_LIKE, ["--num-minibatches", "0"], "--num-minibatches"),
    (PPO_LIKE, ["--num-minibatches", "7"], "does not divide"),
    (PPO_LIKE, ["--update-epochs", "0"], "--update-epochs"),
    (["ppo_continuous.py", "trpo.py", "a2c.py", "udr_hopper.py"], ["--num-envs", "3", "--total-timesteps", "1000"],
     "not a multiple of --num-envs"),
    (EVERY, ["--eval-episodes", "-1"], "--eval-episodes"),
    (TRAINERS, ["--eval-freq", "-1"], "--eval-freq"),
    (TRAINERS, ["--periodic-eval-episodes", "0"], "--periodic-eval-episodes"),
    (TRAINERS, ["--checkpoint", "no/such/model.pt"], "cannot load checkpoint"),
    (TRAINERS, ["--init-checkpoint", "no/such/model.pt"], "cannot load checkpoint"),
    (TRAINERS, ["--checkpoint", "README.md", "--init-checkpoint", "README.md"], "give one of them"),
    (TRAINERS, ["--checkpoint", "README.md"], "cannot load checkpoint"),  # a file, but not a checkpoint
    (TRAINERS, ["--checkpoint", "tests"], "cannot load checkpoint"),  # a directory
    (EVERY, ["--log-dir", "README.md"], "is a file"),
    (GYM_ENVS, ["--env-id", "NoSuchEnv-v0"], "`NoSuchEnv` doesn't exist"),
    (GYM_ENVS, ["--env-id", "hopper-v4"], "Did you mean: `Hopper`?"),  # gymnasium's hint reaches the user
    (GYM_ENVS, ["--env-id", "CartPole-v9"], "version `v9`"),
    (GYM_ENVS, ["--env-id", "no_such_module:MyEnv-v0"], "No module named 'no_such_module'"),
    (GYM_ENVS, ["--env-id", "json:MyEnv-v0"], "`MyEnv` doesn't exist"),  # the module imports, registers nothing
    ([] if importlib.util.find_spec("Box2D") else GYM_ENVS, ["--env-id", "CarRacing-v3"], "Box2D is not installed"),
    (["ppo_continuous.py", "trpo.py", "ddpg.py"], ["--env-id", "CartPole-v1"], "Discrete"),
    (["a2c.py", "reinforce.py"], ["--env-id", "Blackjack-v1"], "observations"),
    (["ppo_continuous.py"], ["--surrogate", "trust-me"], "unknown surrogate"),
    (["ppo_continuous.py"], ["--kl-beta", "-1"], "--kl-beta"),
    (["ppo_continuous.py"], ["--kl-target", "0"], "--kl-target"),
    (["ppo_continuous.py"], ["--target-kl", "0"], "--target-kl"),
    (["ppo_continuous.py"], ["--target-kl", "-0.01"], "--target-kl"),
    (["trpo.py"], ["--max-kl", "0"], "--max-kl"),
    (["trpo.py"], ["--max-kl", "nan"], "--max-kl"),
    (["trpo.py"], ["--vf-lr", "0"], "--vf-lr"),
    (["trpo.py"], ["--backtrack-coef", "1.5"], "--backtrack-coef"),
    (["trpo.py"], ["--backtrack-coef", "0"], "--backtrack-coef"),
    (["trpo.py"], ["--cg-damping", "-0.1"], "--cg-damping"),
    (["trpo.py"], ["--cg-iters", "0"], "--cg-iters"),
    (["trpo.py"], ["--line-search-steps", "0"], "--line-search-steps"),
    (["trpo.py"], ["--vf-iters", "0"], "--vf-iters"),
    (["trpo.py"], ["--vf-minibatches", "7"], "does not divide"),
    (["a2c.py"], ["--optimizer", "sgd"], "unknown optimizer"),
    (["a2c.py"], ["--rmsprop-alpha", "1.5"], "--rmsprop-alpha"),
    (["a2c.py"], ["--optimizer-eps", "0"], "--optimizer-eps"),
    (["reinforce.py"], ["--baseline", "median"], "unknown baseline"),
    (["reinforce.py"], ["--episodes-per-update", "0"], "--episodes-per-update"),
    (["reinforce.py"], ["--vf-learning-rate", "0"], "--vf-learning-rate"),
    (["reinforce.py"], ["--vf-epochs", "0"], "--vf-epochs"),
    (["reinforce.py"], ["--vf-minibatch-size", "0"], "--vf-minibatch-size"),
    (["ddpg.py"], ["--noise", "pink"], "unknown noise"),
    (["ddpg.py"], ["--tau", "0"], "--tau"),
    (["ddpg.py"], ["--tau", "1.5"], "--tau"),
    (["ddpg.py"], ["--batch-size", "0"], "--batch-size"),
    (["ddpg.py"], ["--buffer-size", "0"], "--buffer-size"),
    (["ddpg.py"], ["--learning-starts", "-1"], "--learning-starts"),
    (["ddpg.py"], ["--exploration-noise", "-0.1"], "--exploration-noise"),
    (["ddpg.py"], ["--ou-theta", "0"], "--ou-theta"),
    (["ddpg.py"], ["--policy-frequency", "0"], "--policy-frequency"),
    ([] if torch.cuda.is_available() else CUDA, ["--cuda"], "no CUDA device"),
    (["udr_hopper.py"], ["--train-domain", "real"], "unknown --train-domain"),
    (["udr_hopper.py"], ["--mass-scale", "1.0"], "--mass-scale"),
    (["udr_hopper.py"], ["--mass-scale", "-0.1"], "--mass-scale"),
    (["udr_hopper.py"], ["--mass-scale", "0.2", "--train-domain", "source"], "only apply"),
    (["udr_hopper.py"], ["--mass-low", "thigh", "5", "--mass-high", "thigh", "4"], "low > high"),
    (["udr_hopper.py"], ["--mass-low", "leg", "0", "--mass-high", "leg", "3"], "positive"),
    (["udr_hopper.py"], ["--mass-low", "torso", "2", "--mass-high", "torso", "3"], "unknown bodies"),
    (["udr_hopper.py"], ["--mass-low", "thigh", "3"], "--mass-high names"),
    (["udr_hopper.py"], ["--mass-low", "thigh", "3", "--mass-high", "thigh", "4", "--mass-scale", "0.1"], "not both"),
    (["bayrn_hopper.py"], ["--phi-low", "1", "1", "1", "1", "1", "1", "--phi-high", "2", "2", "0.5", "2", "2", "2"],
     "low >= high"),
    (["bayrn_hopper.py"], ["--phi-low", "nan", "1", "1", "1", "1", "1"], "finite positive"),
    (["bayrn_hopper.py"], ["--phi-low", "1", "2"], "needs 6 numbers"),
    (["bayrn_hopper.py"], ["--iterations", "0"], "--iterations"),
    (["bayrn_hopper.py"], ["--num-init", "0"], "--num-init"),
    (["bayrn_hopper.py"], ["--target-episodes", "0"], "--target-episodes"),
    (["bayrn_hopper.py"], ["--parallel-candidates", "0"], "--parallel-candidates"),
    (["bayrn_hopper.py"], ["--warm-start", "--parallel-candidates", "2"], "cannot train at once"),
    (["bayrn_hopper.py"], ["--warm-start", "--ray-address", "auto"], "cannot train at once"),
    ([] if importlib.util.find_spec("ray") else ["bayrn_hopper.py"], ["--ray-address", "auto"], "needs Ray"),
    (["bayrn_hopper.py"], ["--acquisition", "pi"], "unknown acquisition"),
    (["bayrn_hopper.py"], ["--ucb-beta", "-1"], "--ucb-beta"),
    (["bayrn_hopper.py"], ["--gp-iters", "0"], "--gp-iters"),
    (["bayrn_hopper.py"], ["--final-timesteps", "-1"], "--final-timesteps"),
    (["bayrn_hopper.py"], ["--resume", "no/such/run"], "cannot resume"),
]
CASES = [(script, args, words) for scripts, args, words in BAD for script in scripts]


@pytest.mark.parametrize("script, args, words", CASES, ids=[f"{s[:-3]}:{' '.join(a)}" for s, a, _ in CASES])
def test_bad_value_is_refused_with_one_line_before_anything_is_written(script, args, words, tmp_path, capsys):
    log_dir = tmp_path / "runs"
    argv = [*args, "--log-dir", str(log_dir)] if "--log-dir" not in args else list(args)
    module = MODULES[script]
    with pytest.raises(SystemExit) as exit_info:
        module.main(tyro.cli(module.Args, args=argv))
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], lines
    assert lines[0].endswith(")"), lines[0]  # "(what to do)" closes the line
    assert not log_dir.exists()


def test_the_table_covers_every_script_many_times():
    assert {script for script, *_ in CASES} == set(MODULES)
    assert min(sum(script == s for s, *_ in CASES) for script in MODULES) >= 20


@pytest.mark.parametrize("script, args, words", [
    ("ppo_continuous.py", ["--gamma", "1.5"], "--gamma"),
    ("ddpg.py", ["--tau", "0"], "--tau"),
    ("bayrn_hopper.py", ["--resume", "no/such/run"], "cannot resume"),
])
@pytest.mark.slow
def test_a_real_command_line_is_refused_the_same_way(script, args, words, tmp_path):
    result = run_script(script, *args, "--log-dir", str(tmp_path / "runs"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], result.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
@pytest.mark.parametrize("args", [["--total-timesteps", "abc"], ["--no-such-flag", "1"]])
def test_a_command_line_tyro_cannot_parse_ends_without_a_traceback(args, tmp_path):
    result = run_script("ppo_continuous.py", *args, "--log-dir", str(tmp_path / "runs"))
    assert result.returncode == 2 and "Traceback" not in result.stderr and result.stderr.strip()
    assert not (tmp_path / "runs").exists()
