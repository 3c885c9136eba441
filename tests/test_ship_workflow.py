"""Shipping the models from the workflow, on a task of the user's own files: every model folder gets
its card, `deploy` writes the HuggingFace and ONNX exports and the deployment table, rule predict
labels a configured file; the exports load where they are meant to and agree with kdlib.

Runs in the workflow runtime (.venv) only: it drives Snakemake.
"""
from __future__ import annotations

import csv
import io
import json

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("snakemake")
pytest.importorskip("onnxruntime")

from tinydata import CLASSES, write_tickets  # noqa: E402
from workflows import BERT_STUDENT, LSTM_STUDENT, copy_workflow, planned, snakemake, write_config  # noqa: E402

pytestmark = pytest.mark.slow
MODELS = ["teacher", "kd", "lstm"]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    work = copy_workflow(tmp_path_factory.mktemp("ship"))
    own = work / "own"
    own.mkdir()
    write_tickets(own / "train.csv", 120, 1)
    write_tickets(own / "dev.csv", 40, 2)
    with open(own / "dev.csv", newline="", encoding="utf-8") as fh:
        texts = [row["body"] for row in csv.DictReader(fh)]
    (own / "texts.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    write_config(work, precision="fp32", tasks=["tickets"],
                 custom_tasks={"tickets": {"train": "own/train.csv", "dev": "own/dev.csv", "text_a": "body",
                                           "label": "category"}},
                 data={"lstm": {"max_length": 16}},
                 students_train={"epochs": 2, "batch_size": 16},
                 students={"kd": {"algorithm": "kd", "architecture": BERT_STUDENT},
                           "lstm": {"algorithm": "distilled_lstm", "architecture": LSTM_STUDENT}},
                 equal_steps=False, deploy={"rounds": 1}, predict={"input": "own/texts.txt"})
    snakemake(work, "deploy", "results/tickets/predict/kd.tsv", "results/tickets/predict/lstm.tsv")
    return work


def test_every_model_folder_has_its_card_and_tokeniser(work):
    for model in MODELS:
        folder = work / "results/tickets" / model
        card = (folder / "README.md").read_text(encoding="utf-8")
        result = json.loads((work / f"results/tickets/{model}_eval.json").read_text())
        assert card.startswith(f"# {model}: tickets")
        assert f"{100 * result['score']:.2f} accuracy" in card          # the eval JSON's score
        assert "labels: " + ", ".join(sorted(CLASSES)) in card
        assert "python -m kdlib.predict" in card and "ms per text at batch 1" in card
        chosen = result["selection"]
        assert f"| selection | the best on validation ({100 * chosen['score']:.2f} accuracy) at step " \
               f"{chosen['step']:,} of {chosen['steps_run']:,} run" in card
        config = json.loads((folder / "config.json").read_text())
        assert config["labels"] == sorted(CLASSES) and config["max_length"] == 16
        assert (folder / "vocab.txt").is_file()
    assert "algorithm `distilled_lstm`" in (work / "results/tickets/lstm/README.md").read_text()


def test_rule_predict_labels_the_configured_file_like_evaluation(work):
    for model in ("kd", "lstm"):
        table = pd.read_csv(work / f"results/tickets/predict/{model}.tsv", sep="\t", keep_default_na=False)
        logits, _ = np.load(work / f"results/tickets/{model}_predictions.npz").values()
        assert len(table) == 40 and set(table["label"]) <= set(CLASSES)
        # the dev file's texts in the dev file's order: the same logits as the dev evaluation
        got = table[[f"logit_{c}" for c in sorted(CLASSES)]].to_numpy()
        np.testing.assert_allclose(got, logits, atol=1e-4)


def test_the_exports_load_and_agree_with_kdlib(work):
    transformers = pytest.importorskip("transformers")
    hf = work / "results/tickets/export/kd/hf"
    model = transformers.AutoModelForSequenceClassification.from_pretrained(hf).eval()
    tok = transformers.AutoTokenizer.from_pretrained(hf)
    assert [model.config.id2label[i] for i in range(5)] == sorted(CLASSES)
    texts = pd.read_csv(io.StringIO((work / "own/texts.txt").read_text()), header=None, sep="\t")[0][:8]
    import torch
    with torch.no_grad():
        logits = model(**tok(list(texts), padding=True, truncation=True, return_tensors="pt")).logits
    table = pd.read_csv(work / "results/tickets/predict/kd.tsv", sep="\t", keep_default_na=False)
    want = table[[f"logit_{c}" for c in sorted(CLASSES)]].to_numpy()[:8]
    np.testing.assert_allclose(logits.numpy(), want, atol=1e-4)
    assert not (work / "results/tickets/export/lstm/hf").exists()        # BERT models only
    for name in MODELS:
        check = json.loads((work / f"results/tickets/export/{name}/onnx/check.json").read_text())
        assert check["max_abs_diff_fp32"] <= 1e-4 and check["examples"] == 40
        assert (work / f"results/tickets/export/{name}/onnx/model.int8.onnx").is_file()


def test_the_deployment_table_has_every_model_in_every_runtime(work):
    table = pd.read_csv(work / "results/tickets/deployment.csv")
    rows = list(zip(table["model"], table["runtime"]))
    assert rows[0] == ("teacher", "PyTorch eager fp32")
    assert sorted(rows[1:]) == sorted((m, f"onnxruntime {p}") for m in MODELS for p in ("fp32", "int8"))
    assert (table["latency b1 (ms)"] > 0).all() and (table["throughput b32 (ex/s)"] > 0).all()
    teacher = table[table.model == "teacher"].set_index("runtime")
    assert teacher.loc["onnxruntime fp32", "x teacher b1"] == pytest.approx(1.0)
    checks = json.loads((work / "results/tickets/export/kd/onnx/check.json").read_text())["metrics"]
    kd = table[table.model == "kd"].set_index("runtime")
    assert kd.loc["onnxruntime int8", "dev accuracy"] == pytest.approx(100 * checks["onnx_int8"]["accuracy"])
    md = (work / "results/tickets/deployment.md").read_text()
    assert md.startswith("# tickets: deployment") and "| kd | onnxruntime int8 |" in md


def test_a_second_run_plans_nothing(work):
    assert planned(work, "deploy", "results/tickets/predict/kd.tsv") == {}
