"""Benchmark jobs as Ray tasks: what benchmark/run.py and transfer.py do with --ray-address.

A job is one command line (one script, one seed) that writes into its job directory. On Ray it becomes a
task with num_cpus=1 that may run on any node: the task receives a bundle (the repository's Python
files, the job directory as it is, so that a stopped BayRn search resumes, and every file the command
names, e.g. a --checkpoint), runs the command there with the node's Python, and sends the job directory
back, which is unpacked into the same benchmark/runs/ layout as a local run; job.json is written as
run.run_job writes it, plus the node's hostname and the command as the node ran it. Every node needs
this project's requirements installed. A job's directory comes back when the job ends. Ray runs its
workers at niceness 15: on a node that also does other work, start it with RAY_worker_niceness=0.
Only imported when --ray-address is given (Ray is a benchmark extra: benchmark/requirements.txt).

    ray start --head --num-cpus 2            # or an existing cluster
    python benchmark/run.py --algo ppo --seeds 1 2 3 --ray-address auto
"""

from __future__ import annotations

import glob
import io
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time

import ray
from run import ROOT, finished_job, git_commit, write_job

_connected = None


def connect(address: str) -> None:
    """Join the Ray cluster at `address` ("auto", "host:port" or "ray://host:port") once per process."""
    global _connected
    if _connected is None:
        ray.init(address=address, log_to_driver=False, logging_level="ERROR")
        _connected = address


def portable(command: list[str], job_dir: str) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """The command with its machine-specific paths made relative, and the input files it names.

    Each word becomes (kind, rest): ("python", "") for this interpreter, ("job", rest) for a path in
    job_dir, ("input", name) for another existing file or directory (sent as inputs/<name>), ("repo", rest)
    for a path in the repository, ("", word) for anything else. Returns (words, {name: local path})."""
    words, inputs = [], {}
    job_dir = os.path.abspath(job_dir)
    for word in command:
        path = os.path.abspath(word) if os.path.isabs(word) else None
        if word == sys.executable:
            words.append(("python", ""))
        elif path and (path == job_dir or path.startswith(job_dir + os.sep)):
            words.append(("job", os.path.relpath(path, job_dir)))
        elif path and os.path.exists(path) and not path.endswith(".py"):
            name = f"{len(inputs)}-{os.path.basename(path)}"
            inputs[name] = path
            words.append(("input", name))
        elif path and path.startswith(ROOT + os.sep):
            words.append(("repo", os.path.relpath(path, ROOT)))
        else:
            words.append(("", word))
    return words, inputs


def bundle(job_dir: str, inputs: dict[str, str]) -> bytes:
    """A gzip tar of repo/ (the repository's .py files), job/ (job_dir as it is) and inputs/."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in glob.glob(os.path.join(ROOT, "*.py")) + glob.glob(os.path.join(ROOT, "benchmark", "*.py")):
            tar.add(path, os.path.join("repo", os.path.relpath(path, ROOT)))
        if os.path.isdir(job_dir):
            tar.add(job_dir, "job")
        for name, path in inputs.items():
            tar.add(path, os.path.join("inputs", name))
    return buffer.getvalue()


@ray.remote(num_cpus=1)
def _run_remote(words: list[tuple[str, str]], files: bytes) -> tuple[dict, bytes]:
    """On a Ray node: unpack, run the command from repo/ with its output in job/output.log, pack job/."""
    scratch = tempfile.mkdtemp(prefix="benchmark-job-")
    with tarfile.open(fileobj=io.BytesIO(files), mode="r:gz") as tar:
        tar.extractall(scratch, filter="data")
    job = os.path.join(scratch, "job")
    os.makedirs(job, exist_ok=True)
    where = {"python": lambda _: sys.executable, "job": lambda rest: os.path.normpath(os.path.join(job, rest)),
             "input": lambda rest: os.path.join(scratch, "inputs", rest),
             "repo": lambda rest: os.path.join(scratch, "repo", rest), "": lambda rest: rest}
    command = [where[kind](rest) for kind, rest in words]
    load, start = os.getloadavg()[0], time.time()
    with open(os.path.join(job, "output.log"), "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=os.path.join(scratch, "repo"))
        _, status, usage = os.wait4(process.pid, 0)
    result = {"returncode": os.waitstatus_to_exitcode(status), "started": start, "wall_seconds": time.time() - start,
              "peak_rss_mb": usage.ru_maxrss / 1024, "loadavg_at_start": load, "host": socket.gethostname(),
              "node_command": command}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(job, "job")
    shutil.rmtree(scratch)
    return result, buffer.getvalue()


def run_job(command: list[str], job_dir: str, resume: bool = False) -> dict:
    """run.run_job on the Ray cluster joined with connect(): the same job.json, the same job directory."""
    done = finished_job(job_dir)
    if done:
        return done
    if not resume:
        shutil.rmtree(job_dir, ignore_errors=True)
    words, inputs = portable(command, job_dir)
    result, files = ray.get(_run_remote.remote(words, bundle(job_dir, inputs)))
    staging = tempfile.mkdtemp(prefix="benchmark-job-")
    with tarfile.open(fileobj=io.BytesIO(files), mode="r:gz") as tar:
        tar.extractall(staging, filter="data")
    shutil.rmtree(job_dir, ignore_errors=True)
    os.makedirs(os.path.dirname(os.path.abspath(job_dir)), exist_ok=True)
    shutil.move(os.path.join(staging, "job"), job_dir)
    shutil.rmtree(staging)
    return write_job(job_dir, {"command": command, "commit": git_commit(), **result})
