"""kdlib.evaluate.speed.side_by_side and the measure_speed stage: every model timed in one
process, interleaved, on the same dev examples, with the rounds kept; bad input is one line. A
figure whose rounds disagree, or that a busy machine measured, is flagged (from given numbers, never
from measured ones), and the stages bound every library's spin-waiting before torch loads."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tinydata
from conftest import HAS_TORCH, REPO, error_lines

from kdlib.data.ofrecord import record_file
from kdlib.evaluate import speed
from kdlib.export import card
from kdlib.models import checkpoint
from kdlib.models.bert import BertConfig, build_bert
from workflow_scripts import measure_speed

BACKEND = "torch" if HAS_TORCH else "oneflow"


@pytest.fixture(scope="module")
def models(tmp_path_factory, B):
    root = tmp_path_factory.mktemp("speed")
    tinydata.write_records(root / "records", n_train=8, n_dev=48, seed=1)
    for name, layers in (("teacher", 2), ("a", 1), ("b", 1)):
        B.seed(layers)
        checkpoint.save_checkpoint(build_bert(B, BertConfig(**{**tinydata.TINY_BERT,
                                                               "num_hidden_layers": layers})), root / name)
    return root


def test_side_by_side_times_every_model_on_the_same_examples(models, B):
    loaded = {name: (checkpoint.load_checkpoint(B, models / name)[0], record_file(models / "records", "dev"))
              for name in ("teacher", "a", "b")}
    result = speed.side_by_side(B, loaded, rounds=3, latency_examples=20, throughput_examples=20, seed=0)
    assert set(result["models"]) == {"teacher", "a", "b"}
    # throughput: whole batches of 32 drawn from the two that 48 examples make; one holds 20
    assert result["throughput_examples"] in (32, 16)
    assert (result["rounds"], result["latency_examples"], result["dev_examples"]) == (3, 20, 48)
    assert result["backend"] == B.name and result["precision"] == B.precision
    for timing in result["models"].values():
        assert len(timing["latency_rounds"]) == len(timing["throughput_rounds"]) == 3
        assert min(timing["latency_rounds"]) <= timing["latency_ms_batch1"] <= max(timing["latency_rounds"])
        assert timing["throughput_batch32"] > 0
        # each figure's spread and flag are those of its own rounds (whatever the machine did)
        assert timing["latency_spread"] == pytest.approx(speed.spread(timing["latency_rounds"]), abs=1e-4)
        assert timing["unreliable"] == speed.unreliable_figures(timing, result["machine"])
    machine = result["machine"]
    assert machine["usable_cpus"] >= 1 and len(machine["load_average_start"]) == 3
    assert machine["others_cpu_share"] is None or 0 <= machine["others_cpu_share"] <= 1
    assert machine["busy"] == (machine["others_cpu_share"] is not None
                               and machine["others_cpu_share"] > speed.BUSY_BOUND)
    # more examples than the dev split holds, or 0 for throughput: all of them, once each
    every = speed.side_by_side(B, loaded, rounds=1, latency_examples=500, throughput_examples=0)
    assert every["latency_examples"] == every["throughput_examples"] == 48


def test_the_throughput_sample_is_seeded_whole_batches_in_file_order(tmp_path):
    tinydata.write_records(tmp_path, n_train=4, n_dev=100, seed=2)
    path = record_file(tmp_path, "dev")
    every = list(speed.batching.batches(path, 8))                 # 13 batches: 12 of 8, then 4
    sample = speed._sampled_batches(path, 8, 20, seed=5)
    assert len(sample) == 3                                       # ceil(20 / 8) whole batches
    firsts = [int(b["index"][0]) for b in sample]
    assert firsts == sorted(firsts) and all(f % 8 == 0 for f in firsts)
    for batch in sample:                                          # each one exactly as evaluation cuts it
        same = every[int(batch["index"][0]) // 8]
        assert all(np.array_equal(batch[k], same[k]) for k in same)
    assert [int(b["index"][0]) for b in speed._sampled_batches(path, 8, 20, seed=5)] == firsts
    assert [int(b["index"][0]) for b in speed._sampled_batches(path, 8, 20, seed=6)] != firsts
    assert len(speed._sampled_batches(path, 8, 0, seed=5)) == len(every) == 13
    assert len(speed._sampled_batches(path, 8, 10_000, seed=5)) == 13


def test_the_models_take_turns_input_by_input_in_a_random_order():
    calls = []

    class Model:
        def __init__(self, name):
            self.name = name

        def __call__(self, inputs):
            calls.append((self.name, inputs["x"]))

    names = ["m0", "m1", "m2", "m3"]
    feeds = {name: (Model(name), [{"x": i} for i in range(20 if name != "m3" else 21)]) for name in names}
    total = speed._interleaved(feeds, np.random.default_rng(0), sync=lambda: None)
    assert set(total) == set(names) and all(t >= 0 for t in total.values())
    # every model runs input i before any model runs input i + 1; the longer list finishes alone
    assert [x for _, x in calls] == sorted(x for _, x in calls)
    assert calls[-1] == ("m3", 20)
    turns = [tuple(name for name, x in calls if x == i) for i in range(20)]
    assert all(sorted(t) == names for t in turns)
    # the order is drawn per input: every model follows m0 at some point
    after = {t[t.index("m0") + 1] for t in turns if t.index("m0") < 3}
    assert after == {"m1", "m2", "m3"}


def test_the_stage_writes_the_speed_json_and_refuses_bad_input(models, tmp_path, capsys):
    runtime = ["--eval-batch-size", "16", "--backend", BACKEND, "--device", "cpu", "--precision", "fp32",
               "--threads", "0"]
    out = tmp_path / "speed.json"
    argv = ["--task", "sst2", "--models", *[str(models / n) for n in ("teacher", "a", "b")],
            "--records", *[str(models / "records")] * 3, "--rounds", "2", "--latency-examples", "8",
            "--throughput-examples", "32", "--out", str(out), *runtime]
    assert measure_speed.main(argv) == 0
    result = speed.read_speed(out)
    assert set(result["models"]) == {"teacher", "a", "b"} and result["threads"]
    assert "speed of 3 models on sst2" in capsys.readouterr().err
    # the tensor library was loaded before the stage ran here, so its threads kept their defaults
    assert result["machine"]["no_spin_waiting"] is False

    bad = list(argv)
    bad[bad.index("--records") + 1:bad.index("--records") + 4] = [str(models / "records")]
    assert measure_speed.main(bad) == 1
    [line] = error_lines(capsys)
    assert "--models gives 3 folders, --records 1" in line

    (tmp_path / "bad.json").write_text(json.dumps({"models": {"a": {}}}))
    with pytest.raises(speed.DataError, match="not the speed stage's JSON"):
        speed.read_speed(tmp_path / "bad.json")


def test_a_model_size_counts_the_model_not_its_training_log_or_card(tmp_path):
    folder = tmp_path / "kd"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"w" * 1000)
    (folder / "config.json").write_text("{}")
    (folder / "vocab.txt").write_text("[PAD]\n")
    model = speed.folder_size(folder)
    assert model == 1000 + 2 + 6
    for name, size in (("train_log.csv", 10), ("train_summary.json", 20), ("README.md", 30)):
        (folder / name).write_text("x" * size)            # a run's timings, the card
        assert speed.folder_size(folder) == model


# ---- figures that know when they are unreliable (synthetic rounds: nothing here is timed) ---------

def timing(latency, throughput=(100.0, 100.0, 100.0)) -> dict:
    return {"latency_rounds": list(latency), "throughput_rounds": list(throughput)}


def test_the_spread_of_a_figure_is_its_rounds_range_over_their_median():
    assert speed.spread([10, 10, 10]) == 0
    assert speed.spread([10, 30, 10]) == pytest.approx(2.0)
    assert speed.spread([9, 10, 11, 10, 10]) == pytest.approx(0.2)
    assert speed.spread([7.5]) == 0


def test_rounds_that_agree_are_sound_and_rounds_that_disagree_are_flagged():
    assert speed.unreliable_figures(timing([10, 10, 10])) == []
    assert speed.unreliable_figures(timing([10, 30, 10])) == ["latency"]
    assert speed.unreliable_figures(timing([10, 10, 10], [100, 100, 50])) == ["throughput"]
    # the bound: a spread just under it is sound, just over it is not
    under, over = 1 + speed.SPREAD_BOUND - 0.01, 1 + speed.SPREAD_BOUND + 0.01
    assert speed.unreliable_figures(timing([1, under, 1])) == []
    assert speed.unreliable_figures(timing([1, over, 1])) == ["latency"]


def reading(wall, own, busy, load=(0.5, 0.4, 0.3)) -> dict:
    return {"wall": wall, "own": own, "busy": busy, "cpus": 2, "load": list(load)}


def test_a_machine_busy_with_other_processes_makes_every_figure_unreliable():
    # 10 s on 2 CPUs: 20 CPU-seconds; this process used 10 of them, the CPUs were busy for 16
    busy = speed.machine_during(reading(0, 0, 100), reading(10, 10, 116, load=(2.5, 1.0, 0.5)))
    assert busy["others_cpu_share"] == pytest.approx(0.3) and busy["busy"] is True
    assert busy["load_average_start"] == [0.5, 0.4, 0.3] and busy["load_average_end"] == [2.5, 1.0, 0.5]
    assert busy["usable_cpus"] == 2
    assert speed.unreliable_figures(timing([10, 10, 10]), busy) == ["latency", "throughput"]
    quiet = speed.machine_during(reading(0, 0, 100), reading(10, 10, 110.5))
    assert quiet["others_cpu_share"] == pytest.approx(0.025) and quiet["busy"] is False
    assert speed.unreliable_figures(timing([10, 10, 10]), quiet) == []
    unknown = speed.machine_during(reading(0, 0, None), reading(10, 10, None))    # no /proc/stat
    assert unknown["others_cpu_share"] is None and unknown["busy"] is False


def test_the_reasons_name_the_busy_machine_and_the_rounds_that_disagree():
    busy = speed.machine_during(reading(0, 0, 100), reading(10, 10, 116))
    reasons = speed.unreliable_reasons({"teacher": timing([10, 30, 10]), "kd": timing([5, 5, 5])}, busy)
    assert reasons[0].startswith("other processes used 30% of the 2 usable CPUs' time")
    assert "the rounds of teacher latency 200% disagree by more than 25%" in reasons[1]
    assert "kd" not in reasons[1]
    assert speed.unreliable_reasons({"kd": timing([5, 5, 5])}) == []
    assert "1-minute load average was 0.50 at the start" in speed.machine_words(busy)
    assert speed.machine_words(None) == ""


def test_an_ensemble_run_in_turn_is_flagged_from_its_summed_rounds():
    result = {"models": {"teacher_0": {**timing([10, 10, 10])}, "teacher_1": {**timing([10, 30, 10])}},
              "machine": {"busy": False}}
    speed.run_in_turn(result, ["teacher_0", "teacher_1"])
    teacher = result["models"]["teacher"]
    assert teacher["latency_rounds"] == [20, 40, 20] and teacher["latency_spread"] == pytest.approx(1.0)
    assert teacher["unreliable"] == ["latency"] and teacher["members"] == ["teacher_0", "teacher_1"]


def test_the_model_card_says_when_its_speed_figures_are_unreliable():
    def speed_json(teacher_rounds):
        models = {"teacher": timing(teacher_rounds), "kd": timing([5, 5, 5], [200, 200, 200])}
        for t in models.values():
            t["latency_ms_batch1"], t["throughput_batch32"] = t["latency_rounds"][0], t["throughput_rounds"][0]
        return {"models": models, "backend": "torch", "precision": "fp32", "device": "cpu", "threads": 2}

    assert "unreliable" not in card._speed(speed_json([10, 10, 10]), "kd")
    text = card._speed(speed_json([10, 30, 10]), "kd")              # the teacher's rounds: kd's speed-up
    assert "WARNING: unreliable figures" in text and "teacher latency 200%" in text


# ---- no spin-waiting -----------------------------------------------------------------------------

def test_no_spin_waiting_leaves_the_environment_alone_once_the_library_is_loaded(B, monkeypatch):
    for key in speed.NO_SPIN:
        monkeypatch.delenv(key, raising=False)
    assert speed.no_spin_waiting() is False                 # B loaded torch or OneFlow already
    assert not any(key in os.environ for key in speed.NO_SPIN)


# Run a stage's module with an import hook that, when torch or OneFlow is first imported, prints
# the no-spin settings in the environment at that moment and ends the process.
TRAP = """
import importlib.abc, json, os, runpy, sys
class Trap(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name in ("torch", "oneflow"):
            print(json.dumps({"library": name, **{k: os.environ.get(k) for k in %r},
                              "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY")}), flush=True)
            os._exit(0)
sys.meta_path.insert(0, Trap())
sys.argv = [%r] + sys.argv[1:]
runpy.run_module(%r, run_name="__main__")
"""


def environment_at_import(module: str, argv: list[str]) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in speed.NO_SPIN}
    env["OMP_WAIT_POLICY"] = "ACTIVE"                       # the user's values are overridden
    env["GOMP_SPINCOUNT"] = "INFINITY"
    code = TRAP % (list(speed.NO_SPIN), module, module)
    out = subprocess.run([sys.executable, "-c", code, *argv], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=300)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    assert lines, f"{module} never imported a tensor library: {out.stderr[-2000:]}"
    return json.loads(lines[0])


def test_the_speed_stage_sets_the_no_spin_settings_before_the_tensor_library_loads(models, tmp_path):
    seen = environment_at_import("workflow_scripts.measure_speed", [
        "--task", "sst2", "--models", str(models / "teacher"), str(models / "a"),
        "--records", *[str(models / "records")] * 2, "--rounds", "1", "--latency-examples", "4",
        "--throughput-examples", "32", "--out", str(tmp_path / "speed.json"), "--eval-batch-size", "16",
        "--backend", BACKEND, "--device", "cpu", "--precision", "fp32", "--threads", "0"])
    assert seen.pop("library") == BACKEND
    assert seen == {**speed.NO_SPIN, "OMP_WAIT_POLICY": None}


@pytest.mark.skipif(not HAS_TORCH, reason="the deployment stage runs the eager teacher in torch")
def test_the_deployment_stage_sets_the_no_spin_settings_before_torch_loads(models, tmp_path):
    seen = environment_at_import("workflow_scripts.measure_deployment", [
        "--task", "sst2", "--teacher", str(models / "teacher"),
        "--exports", str(tmp_path / "export/teacher/onnx"), "--records", str(models / "records"),
        "--rounds", "1", "--latency-examples", "4", "--throughput-examples", "32", "--threads", "1",
        "--json", str(tmp_path / "d.json"), "--md", str(tmp_path / "d.md"), "--csv", str(tmp_path / "d.csv")])
    assert seen.pop("library") == "torch"
    assert seen == {**speed.NO_SPIN, "OMP_WAIT_POLICY": None}
