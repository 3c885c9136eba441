"""kdlib.evaluate.speed.side_by_side and the measure_speed stage: every model timed in one
process, interleaved, on the same dev examples, with the rounds kept; bad input is one line."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tinydata
from conftest import HAS_TORCH, error_lines

from kdlib.data.ofrecord import record_file
from kdlib.evaluate import speed
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
