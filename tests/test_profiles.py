"""The profiles plan the workflow (the launcher in the rules, Slurm and local planning), and the
CPUs a stage uses (kdlib.backend.usable_cpus, applied by workflow_scripts._cli.backend_from).

Without a cluster: docs/scaling.md's Slurm commands are planned (dry runs, which count one core), and
run for real (no -n, no --cores) against stand-ins for sbatch, sacct and sinfo that record what
the Slurm plugin submits; `--report` runs without --cores too.

The unit tests run in both runtimes; the profile tests need Snakemake and the Slurm executor plugin
(`make setup-cluster`, which `make test` runs).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shlex
import shutil
import subprocess

import pytest
import yaml
from conftest import HAS_SNAKEMAKE, ONEFLOW_PYTHON, REPO, TORCH_PYTHON
from workflows import RUNTIMES, copy_workflow, job_counts, make_workdir

from kdlib import backend
from workflow_scripts import _cli

# ---- the CPUs a stage may use --------------------------------------------------------------------

@pytest.fixture
def cpus(monkeypatch):
    """Set the process's CPU affinity (``set(n)``) and SLURM_CPUS_PER_TASK (``set(n, slurm)``) as
    the stage would see them, on a node whose os.cpu_count() is 64."""
    monkeypatch.setattr(os, "cpu_count", lambda: 64)

    def set_(affinity: int, slurm: str | None = None):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(affinity)), raising=False)
        if slurm is None:
            monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
        else:
            monkeypatch.setenv("SLURM_CPUS_PER_TASK", slurm)
    return set_


def test_usable_cpus_are_the_affinity_capped_by_slurm_cpus_per_task(cpus):
    cpus(3)
    assert backend.usable_cpus() == 3                 # the affinity, not the node's 64
    cpus(16, "4")
    assert backend.usable_cpus() == 4                 # a 4-CPU Slurm job on an unconfined node
    cpus(2, "8")
    assert backend.usable_cpus() == 2


@pytest.mark.parametrize("garbage", ["", "abc", "0", "-4", "4(x2)", "2.5"])
def test_usable_cpus_ignore_a_slurm_cpus_per_task_that_is_not_a_count(cpus, garbage):
    cpus(6, garbage)
    assert backend.usable_cpus() == 6


def test_usable_cpus_without_affinity_fall_back_to_the_cpu_count(cpus, monkeypatch):
    cpus(1, "12")
    monkeypatch.delattr(os, "sched_getaffinity")
    assert backend.usable_cpus() == 12                # min(os.cpu_count() = 64, 12)


class _Recorder:
    """Stands in for a Backend: records the thread counts it is given."""
    name, device_name, precision, precision_reason, rank = "torch", "cpu", "fp32", "asked for", 0

    def __init__(self):
        self.threads = []

    def set_num_threads(self, n):
        self.threads.append(n)


def test_backend_from_applies_the_requested_threads_up_to_the_usable_cpus(cpus, monkeypatch):
    recorder = _Recorder()
    monkeypatch.setattr(backend, "load", lambda name, device, precision: recorder)
    parser = argparse.ArgumentParser()
    _cli.add_runtime_args(parser)

    def runtime(threads):
        return parser.parse_args(["--backend", "torch", "--device", "cpu", "--precision", "fp32",
                                  "--threads", str(threads), "--eval-batch-size", "128"])
    for requested, affinity, slurm, applied in [
        (16, 4, None, 4),      # --threads 16 in a job bound to 4 CPUs
        (16, 64, "4", 4),      # ... or given 4 by Slurm on an unconfined node
        (2, 8, "4", 2),        # fewer than the job may use: as asked
    ]:
        cpus(affinity, slurm)
        assert _cli.backend_from(runtime(requested)) is recorder
        assert recorder.threads.pop() == applied, (requested, affinity, slurm)
    _cli.backend_from(runtime(0))                               # 0: the library's default
    assert recorder.threads == []
    # N data-parallel processes of one job share its CPUs
    cpus(16, None)
    for env, applied in [({"LOCAL_WORLD_SIZE": "4", "WORLD_SIZE": "8"}, 4), ({"WORLD_SIZE": "2"}, 8),
                         ({"LOCAL_WORLD_SIZE": "32"}, 1), ({"WORLD_SIZE": "x"}, 16)]:
        with monkeypatch.context() as m:
            for key, value in env.items():
                m.setenv(key, value)
            _cli.backend_from(runtime(16))
        assert recorder.threads.pop() == applied, env


# ---- profiles: the launcher in the rules, Slurm and local planning ------------------------------

def dry_run(work, *args) -> str:
    cmd = [str(REPO / ".venv" / "bin" / "snakemake"), "-n", "-p", "-s", str(work / "Snakefile"),
           "--directory", str(work), *args]
    out = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout + out.stderr


def job(text: str, rule: str) -> str:
    """The dry run's block for the first job of ``rule`` (its resources and shell command)."""
    return text.split(f"rule {rule}:")[1].split("\n\n")[0]


def needs_slurm_plugin() -> None:
    if not HAS_SNAKEMAKE:
        pytest.skip("needs Snakemake (the workflow runtime, .venv)")
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        pytest.skip("snakemake-executor-plugin-slurm is not installed: run 'make setup-cluster'")


def default_workflow(work) -> None:
    """The workflow, its profiles and config.yaml (with this checkout's runtimes) in ``work``."""
    copy_workflow(work, "profiles")
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["runtimes"] = dict(RUNTIMES)
    (work / "config.yaml").write_text(yaml.safe_dump(config))


def test_profiles_plan_the_users_target_with_the_launcher(tmp_path):
    needs_slurm_plugin()
    default_workflow(tmp_path)
    target = "results/sst2/tinybert_eval.json"
    slurm = ["--profile", str(REPO / "profiles" / "slurm")]

    text = dry_run(tmp_path, *slurm, "--config", "backend=torch", "--", target)
    for rule in ("download_glue", "finetune_teacher", "cache_teacher_logits", "distill", "evaluate_student"):
        assert f"rule {rule}:" in text
    teacher = job(text, "finetune_teacher")
    assert f"Shell command: {TORCH_PYTHON} -m workflow_scripts.finetune_teacher --task sst2" in teacher   # as ever
    assert "gpu=1" in teacher and "slurm_partition=gpu" in teacher and "runtime=720" in teacher

    text = dry_run(tmp_path, *slurm, "--config", "backend=torch", "processes=4", "--", target)
    for rule, script in (("finetune_teacher", "finetune_teacher"), ("distill", "distill")):
        block = job(text, rule)
        assert (f"Shell command: {TORCH_PYTHON} -m torch.distributed.run --standalone --nproc_per_node 4"
                f" -m workflow_scripts.{script} ") in block
        assert "gpu=4" in block and "cpus_per_task=16" in block
    assert "gpu=1" in job(text, "evaluate_student")

    if ONEFLOW_PYTHON.exists():
        text = dry_run(tmp_path, *slurm, "--config", "backend=oneflow", "processes=2", "--", target)
        assert (f"Shell command: {ONEFLOW_PYTHON} -m oneflow.distributed.launch --nproc_per_node 2"
                " --master_port $((20000 + RANDOM % 20000)) -m workflow_scripts.finetune_teacher ") \
            in job(text, "finetune_teacher")

    text = dry_run(tmp_path, "--profile", str(REPO / "profiles" / "local"), "--config", "backend=torch",
                   "--", target)
    assert "rule distill:" in text


def planned_jobs(text: str) -> tuple[list[tuple[str, list[str]]], list[str]]:
    """A dry run's group jobs ``[(group id, [rule of each member])]`` and its other jobs' rules."""
    groups, alone, current = [], [], None
    for line in text.splitlines():
        if "] Group job " in line:
            current = (line.split("] Group job ")[1].split()[0], [])
            groups.append(current)
        elif line.startswith("    rule ") and current is not None:
            current[1].append(line.split()[1].rstrip(":"))
        elif line.startswith(("rule ", "localrule ")):
            current = None
            alone.append(line.split()[1].rstrip(":"))
    return [(name, sorted(rules)) for name, rules in groups], alone


SLURM_PROFILES = ("slurm", "slurm-cpu")
GPU_RULES = ("finetune_teacher", "distill", "cache_teacher_logits", "cache_transfer_logits",
             "evaluate_teacher", "evaluate_student")


def rules_declaring_a_gpu() -> set[str]:
    """Every rule (or checkpoint) of rules/*.smk whose resources declare ``gpu=``."""
    names = set()
    for path in (REPO / "rules").glob("*.smk"):
        for block in re.split(r"\n(?=\s*(?:rule|checkpoint) \w+:)", path.read_text()):
            match = re.match(r"\s*(?:rule|checkpoint) (\w+):", block)
            if match and re.search(r"^\s+gpu=", block, flags=re.M):
                names.add(match[1])
    return names


@pytest.mark.parametrize("profile", SLURM_PROFILES)
def test_every_rule_that_declares_a_gpu_gets_the_gpu_partition_or_none(profile):
    """A rule's `gpu=1` becomes `sbatch --gpus=1`: on the GPU profile it must go to the GPU partition
    (the default partition is a CPU one), on the CPU profile `gpu: 0` must remove it (a cluster
    without GPUs refuses the request)."""
    declared = rules_declaring_a_gpu()
    assert {"distill", "measure_speed", "search_feasibility"} <= declared
    resources = yaml.safe_load((REPO / "profiles" / profile / "config.yaml").read_text())["set-resources"]
    for rule in sorted(declared):
        assert rule in resources, f"profiles/{profile}: {rule} declares a GPU but has no set-resources"
        if profile == "slurm-cpu":
            assert resources[rule].get("gpu") == 0, rule
        else:
            assert resources[rule].get("slurm_partition") == "gpu", rule


@pytest.mark.parametrize("profile", SLURM_PROFILES)
def test_slurm_profiles_run_the_short_stages_as_one_job_per_task(tmp_path, profile):
    needs_slurm_plugin()
    default_workflow(tmp_path)
    text = dry_run(tmp_path, "--profile", f"profiles/{profile}", "--", "results/tweets/report.md",
                   "results/sst2/report.md")
    groups, alone = planned_jobs(text)
    exports = ["export_teacher_layers"] * 3                # bert_pkd, bert_pkd_nokd, theseus
    tweets_data = ["ofrecord_bert", "ofrecord_lstm", "ofrecord_transfer", "ofrecord_transfer",
                   "prepare_builtin", "transfer_set"]            # the default's transfer set, tweets only
    assert sorted(groups) == [("data", ["download_glue", "ofrecord_bert", "ofrecord_lstm"]),
                              ("data", tweets_data), ("export_sst2", exports), ("export_tweets", exports)]
    assert sorted(set(alone)) == ["cache_teacher_logits", "cache_transfer_logits", "distill",
                                  "evaluate_student", "evaluate_teacher", "finetune_teacher",
                                  "measure_speed", "report"]


def readme_commands(profile: str) -> list[list[str]]:
    """The commands of docs/scaling.md that run with ``--profile profiles/<profile>``, as argument
    lists."""
    prefix = f".venv/bin/snakemake --profile profiles/{profile} "
    lines = (REPO / "docs/scaling.md").read_text().splitlines()
    return [shlex.split(line, comments=True)[1:] for line in lines if line.startswith(prefix)]


def test_the_readme_slurm_commands_plan_without_cores(tmp_path):
    needs_slurm_plugin()
    default_workflow(tmp_path)
    commands = {profile: readme_commands(profile) for profile in SLURM_PROFILES}
    assert all(commands.values()), f"docs/scaling.md gives no command for a profile: {commands}"
    for profile, profile_commands in commands.items():
        for args in profile_commands:
            if "backend=oneflow" in args and not ONEFLOW_PYTHON.exists():
                continue
            text = dry_run(tmp_path, *args)
            assert "rule finetune_teacher:" in text, args
            # a plan without --cores counts one core (-n implies --cores 1): no job asks for more
            # threads; a Slurm job gets its CPUs from cpus_per_task, its stage the job's CPUs
            assert set(re.findall(r"--threads (\d+)", text)) == {"1"}, args
            if profile == "slurm-cpu":
                for rule in GPU_RULES:
                    for block in text.split(f"rule {rule}:")[1:]:
                        resources = block.split("resources: ")[1].split("\n")[0].split(", ")
                        assert "gpu=0" in resources and "slurm_partition=gpu" not in resources, rule


# ---- runs without a core count: --report, and the Slurm profiles for real -----------------------

@pytest.fixture
def tiny(tmp_path_factory):
    """The end-to-end test's tiny workflow (sst2 from a mirror that is never asked), with the profiles."""
    if not HAS_SNAKEMAKE:
        pytest.skip("needs Snakemake (the workflow runtime, .venv)")
    work = make_workdir(tmp_path_factory, "http://127.0.0.1:9")
    shutil.copytree(REPO / "profiles", work / "profiles")
    return work


def snakemake(work, *args, env=None) -> subprocess.CompletedProcess:
    """``.venv/bin/snakemake ARGS`` in ``work``, as a user types it there: no --cores."""
    return subprocess.run([str(REPO / ".venv" / "bin" / "snakemake"), *args], cwd=work, env=env,
                          capture_output=True, text=True, timeout=300)


CORES_ERROR = "Workflow requires a total number of cores"


def test_the_report_command_needs_no_cores(tiny):
    for name in ("report.md", "report.csv", "report.html", "accuracy_vs_speedup.png",
                 "training_curves.png"):
        path = tiny / "results" / "sst2" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"stand-in for {name}\n")
    out = snakemake(tiny, "--report", "report.html")                  # docs/configuring.md, "Where things land"
    assert CORES_ERROR not in out.stderr
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tiny / "report.html").stat().st_size > 0


# What the Slurm plugin runs: sbatch to submit (it prints the job id), sacct for the states (and to
# guess an account), sinfo for the default partition. These stand-ins log each submission and
# status query with its time, accept every job, and report it FAILED at the first status query.
FAKE_SLURM = {
    "sbatch": 'echo "$(date +%s.%N) sbatch $*" >> "$FAKE_SLURM_LOG"; echo 4242\n',
    "sacct": 'case "$*" in *--name*) echo "$(date +%s.%N) status" >> "$FAKE_SLURM_LOG";'
             ' echo "4242|FAILED";; esac\n',
    "sinfo": "printf 'PARTITION\\ncpu*\\n'\n",
}


def fake_slurm(tmp_path) -> dict:
    """An environment whose PATH finds FAKE_SLURM first; its log is ``tmp_path / 'slurm.log'``."""
    bin_dir = tmp_path / "fake-slurm"
    bin_dir.mkdir()
    for name, body in FAKE_SLURM.items():
        (bin_dir / name).write_text("#!/bin/sh\n" + body)
        (bin_dir / name).chmod(0o755)
    return dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
                FAKE_SLURM_LOG=str(tmp_path / "slurm.log"))


def with_teacher_inputs(work) -> None:
    """The records the teacher trains on, as if the data job had run (written in order: each file is
    at least as new as those it comes from)."""
    from kdlib.data import tasks

    task = tasks.get_task("sst2")
    files = [work / tasks.glue_file("data/glue", task, split) for split in task.splits]
    files += [work / "data/ofrecord/sst2/bert16" / name for name in ("train.of_record-0", "meta.json")]
    for path in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("stand-in\n")


@pytest.mark.parametrize("profile", SLURM_PROFILES)
def test_slurm_profiles_submit_without_cores(tiny, tmp_path, profile):
    needs_slurm_plugin()
    with_teacher_inputs(tiny)
    target = "results/sst2/teacher/model.safetensors"
    plan = snakemake(tiny, "--profile", f"profiles/{profile}", "-n", "--", target)
    assert plan.returncode == 0 and job_counts(plan.stdout) == {"finetune_teacher": 1}, plan.stdout[-2000:]

    # docs/scaling.md's command without -n (and without a retry), against the stand-ins
    out = snakemake(tiny, "--profile", f"profiles/{profile}", "--retries", "0", "--", target,
                    env=fake_slurm(tmp_path))
    assert CORES_ERROR not in out.stderr
    assert "SLURM-job '4242' failed, SLURM status is: 'FAILED'" in out.stderr, out.stderr[-3000:]
    log = (tmp_path / "slurm.log").read_text().splitlines()
    submitted = [line.split(" ", 2)[2] for line in log if line.split()[1] == "sbatch"]
    assert len(submitted) == 1
    call, job_command = submitted[0].split("--wrap=", 1)
    assert "--comment rule_finetune_teacher" in call and "--cpus-per-task=16" in call
    if profile == "slurm":
        assert " -p gpu " in call and "--gpus=1" in call
    else:                                                  # no GPU request a CPU cluster refuses
        assert " -p cpu " in call and "--gpus" not in call and "--gres" not in call
    # the job's own Snakemake takes the CPUs of its allocation, which set the stage's --threads
    assert "--target-jobs 'finetune_teacher:task=sst2'" in job_command
    assert "--cores 'all'" in job_command
    # the first status query: 10 s after the submission (the plugin's default would be 40 s)
    first = {}
    for line in log:
        seconds, what = line.split()[:2]
        first.setdefault(what, float(seconds))
    assert first["status"] - first["sbatch"] < 20
