"""The workflow's SLURM profile (workflow/profiles/slurm): what the executor plugin would ask sbatch for, and the tiny
pipeline run on a real single-node SLURM cluster (scripts/slurm_local.sh: munge, MariaDB, slurmdbd, slurmctld and
slurmd on 127.0.0.1), checked against the scheduler's own accounting records.

The cluster test installs Debian's SLURM packages and needs root (or passwordless sudo): CI runs it; deselect it
locally with `-m 'not slurm'`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import BIN, ROOT, check_summary, copy_project, run, snakemake_jobs, tiny_params, write_params
from snakemake_executor_plugin_slurm.submit_string import get_submit_command
from snakemake_executor_plugin_slurm.utils import set_gres_string

SCRIPT = ROOT / "scripts" / "slurm_local.sh"
PROFILE = "workflow/profiles/slurm"
# What scripts/slurm_local.sh creates: its default partition and the account it puts the submitting user in.
PARTITION, ACCOUNT = "debug", "asrflow"
TARGET = "results/summary.csv"
METHODS = ["full"]
K = 2


# --- what the plugin asks sbatch for (no cluster needed) ---------------------------------------------------------


class _Resources(dict):
    """A job's resources as the plugin reads them: `resources.get("gpu")` and `resources.mem_mb` alike."""

    __getattr__ = dict.__getitem__


def sbatch_options(job: dict[str, Any]) -> str:
    """The sbatch command line snakemake-executor-plugin-slurm builds for `job` (a conftest.snakemake_jobs entry)."""
    submitted = _Resources(resources=_Resources(job["resources"]), threads=job["threads"])
    params = {
        "run_uuid": "run",
        "slurm_logfile": "slurm.log",
        "comment_str": f"rule_{job['rule']}",
        "account": "",
        "partition": "",
        "workdir": "",
    }
    return get_submit_command(submitted, params) + set_gres_string(submitted)


def train_jobs(jobs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """fold → the train job of that fold, among `jobs` (a conftest.snakemake_jobs listing)."""
    return {job["wildcards"]["fold"]: job for job in jobs if job["rule"] == "train"}


@pytest.mark.slow
def test_training_asks_for_its_gpus_and_every_retry_for_more_memory(tmp_path: Path) -> None:
    project = copy_project(tmp_path / "project")
    params = tiny_params(project, methods=METHODS, k=K)
    params["resources"].update(gpus_per_process=2, gpu_model="a100")
    write_params(project, params)
    jobs = snakemake_jobs(project, attempt=1)  # every job of the first submission: read once, checked twice below
    first, retry = train_jobs(jobs), train_jobs(snakemake_jobs(project, attempt=2))
    assert sorted(first) == sorted(retry) == [str(fold) for fold in range(K)]
    for fold, job in first.items():
        memory = job["resources"]["mem_mb"]
        assert " --gpus=a100:2" in sbatch_options(job) and f" --mem {memory} " in sbatch_options(job)
        again = sbatch_options(retry[fold])
        assert " --gpus=a100:2" in again and f" --mem {2 * memory} " in again

    # Every job that runs the model asks for a GPU (the release refits one; evaluation and the base's pretraining or
    # description run one; the learning curve trains and evaluates; the decoder stage pre-trains the projector's
    # causal LM); the data and report jobs do not.
    asking = {job["rule"] for job in jobs if "--gpus=a100:" in sbatch_options(job)}
    assert asking == {"pretrain", "decoder", "plan", "train", "evaluate", "release", "curve_train", "curve_evaluate"}
    params["resources"].update(gpus_per_process=0, gpu_model=None)
    write_params(project, params)
    assert all("--gpus" not in sbatch_options(job) for job in snakemake_jobs(project))


# --- the tiny pipeline on a real SLURM cluster ---------------------------------------------------------------------


def can_be_root() -> bool:
    return os.geteuid() == 0 or (
        shutil.which("sudo") is not None and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0
    )


def recorded_daemons(state: Path) -> dict[str, int]:
    """name → PID of every daemon the harness started (its run/pids file)."""
    lines = (state / "run" / "pids").read_text().split("\n")
    return {name: int(pid) for name, pid in (line.split() for line in lines if line.strip())}


def listening_addresses(pid: int) -> set[str]:
    """IPv4/IPv6 addresses (hex, as /proc/net/tcp* writes them) that process `pid` accepts TCP connections on."""
    sockets = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed since the listing
            continue
        if target.startswith("socket:["):
            sockets.add(target.removeprefix("socket:[").removesuffix("]"))
    addresses = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            if fields[3] == "0A" and fields[9] in sockets:  # 0A: LISTEN
                addresses.add(fields[1].rsplit(":", 1)[0])
    return addresses


LOOPBACK = {"0100007F", "00000000000000000000000001000000"}  # 127.0.0.1 and ::1 in /proc/net/tcp* notation


def is_running(name: str, pid: int) -> bool:
    """PID `pid` is still daemon `name` (not a process that got the number after the daemon ended)."""
    comm = Path(f"/proc/{pid}/comm")
    return comm.is_file() and comm.read_text().strip() == name


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory) -> Iterator[Path]:
    """A running single-node cluster; its SLURM_CONF is in the environment of every command the tests run."""
    if not can_be_root():
        message = "the SLURM harness needs root or passwordless sudo (apt-get install, daemons)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    state = tmp_path_factory.mktemp("slurm")
    pids = state / "run" / "pids"
    daemons: dict[str, int] = {}
    try:
        start = subprocess.run([str(SCRIPT), "start", str(state)], capture_output=True, text=True, timeout=900)
        assert start.returncode == 0, f"{SCRIPT} start failed:\n{start.stdout}\n{start.stderr}"
        daemons = recorded_daemons(state)
        assert set(daemons) >= {"mariadbd", "slurmdbd", "slurmctld", "slurmd"}, daemons
        for name, pid in daemons.items():
            assert listening_addresses(pid) <= LOOPBACK, f"{name} listens beyond 127.0.0.1"
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("SLURM_CONF", str(state / "etc" / "slurm.conf"))
            yield state
    finally:
        daemons = recorded_daemons(state) if pids.is_file() else daemons
        stop = subprocess.run([str(SCRIPT), "stop", str(state)], capture_output=True, text=True, timeout=300)
        assert stop.returncode == 0, f"{SCRIPT} stop failed:\n{stop.stdout}\n{stop.stderr}"
        assert not [name for name, pid in daemons.items() if is_running(name, pid)], "daemons left after stop"


def use_cluster(project: Path) -> None:
    """Set the profile's partition and account to the test cluster's, as a user does for their site."""
    path = project / PROFILE / "config.yaml"
    profile = yaml.safe_load(path.read_text(encoding="utf-8"))
    profile["default-resources"].update(slurm_partition=PARTITION, slurm_account=ACCOUNT)
    path.write_text(yaml.safe_dump(profile, sort_keys=False), encoding="utf-8")


def slurm_comment(job: dict[str, Any]) -> str:
    """The --comment the plugin gives a job's sbatch submission: rule name and wildcard values."""
    values = "_".join(map(str, job["wildcards"].values()))
    return f"rule_{job['rule']}" + (f"_wildcards_{values}" if values else "")


SACCT_FIELDS = ["JobIDRaw", "Comment", "State", "Account", "Partition", "NodeList", "WorkDir", "SubmitLine"]


def sacct_jobs(run_id: str, since: datetime) -> list[dict[str, str]]:
    """The accounting database's record of every job named `run_id` (the plugin names a run's jobs by its run ID)."""
    proc = run(
        [
            "sacct",
            "-X",
            "--parsable2",
            "--noheader",
            f"--name={run_id}",
            f"--starttime={since:%Y-%m-%dT%H:%M:%S}",
            "--endtime=now",
            f"--format={','.join(SACCT_FIELDS)}",
        ],
        ROOT,
    )
    return [dict(zip(SACCT_FIELDS, line.split("|", len(SACCT_FIELDS) - 1))) for line in proc.stdout.splitlines()]


@pytest.mark.slurm
@pytest.mark.slow
def test_tiny_pipeline_runs_as_sbatch_jobs_through_the_profile(slurm_cluster: Path, tmp_path: Path) -> None:
    project = copy_project(tmp_path / "project")
    tiny_params(project, methods=METHODS, k=K)
    use_cluster(project)
    planned = sorted(slurm_comment(job) for job in snakemake_jobs(project, targets=(TARGET,)))
    since = datetime.now() - timedelta(minutes=1)
    # The first status check 2 s after a submission, not the profile's 40 s: the tiny jobs take seconds.
    proc = run(
        [str(BIN / "snakemake"), "--profile", PROFILE, "--slurm-init-seconds-before-status-checks", "2", TARGET],
        project,
        timeout=1800,
    )
    check_summary(project, METHODS, k=K)

    run_id = re.search(r"SLURM run ID: (\S+)", proc.stdout + proc.stderr).group(1)
    jobs = sacct_jobs(run_id, since)
    assert sorted(job["Comment"] for job in jobs) == planned, "one sbatch job per pipeline job, none run locally"
    for job in jobs:
        assert job["SubmitLine"].startswith("sbatch "), job
        assert (job["State"], job["Account"], job["Partition"], job["NodeList"]) == (
            "COMPLETED",
            ACCOUNT,
            PARTITION,
            "localhost",
        ), job
        assert Path(job["WorkDir"]) == project, job
