"""Bring your own teacher (teacher.finetuned): tiny fine-tuned classifiers of five encoder families
(RoBERTa with a byte-level BPE tokenizer, DeBERTa-v2 with a Unigram one, ELECTRA and DistilBERT
and BERT with WordPiece), built in the test (tests/hfteachers.py); their labels matched to the
task's by name; the one-line refusals (label mismatch, un-fine-tuned, pickle-only, a layer-based
recipe on a non-BERT teacher); and kd and distilled_lstm distilled from each by the workflow.

Runs in the workflow runtime (.venv): it needs transformers."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("transformers")

import hfteachers  # noqa: E402
from conftest import ONEFLOW_PYTHON, TORCH_PYTHON, error_lines  # noqa: E402
from workflows import (  # noqa: E402
    BERT_STUDENT,
    DROP,
    LSTM_STUDENT,
    copy_workflow,
    merged,
    planned,
    snakemake,
    write_config,
)

from kdlib import backend  # noqa: E402
from kdlib.errors import ConfigError  # noqa: E402
from kdlib.models import families  # noqa: E402
from kdlib.models.checkpoint import load_checkpoint  # noqa: E402
from kdlib.models.pretrained import resolve_pretrained, resolve_tokenizer  # noqa: E402
from workflow_scripts import import_teacher, ofrecord_bert  # noqa: E402

NON_BERT = ("roberta", "deberta-v2", "electra", "distilbert")
KDLIB_RUN = ("bert", "roberta")                    # families kdlib's BERT runs (every recipe, both backends)
REVERSED = {0: "POSITIVE", 1: "NEGATIVE"}          # another order and case than the task's


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The task's files and a fine-tuned teacher of every family (ELECTRA's labels reversed)."""
    root = tmp_path_factory.mktemp("byo")
    task = hfteachers.write_task(root / "task")
    teachers = {family: hfteachers.build_teacher(family, root / family, root / "task",
                                                 id2label=REVERSED if family == "electra" else None)
                for family in (*NON_BERT, "bert")}
    return root, task, teachers


def records_of(built, family, tmp_path, max_length=16):
    """The task's records, made with ``family``'s tokenizer.json by the record stage."""
    root, task, teachers = built
    out = tmp_path / f"bert{max_length}"
    assert ofrecord_bert.main(["--task", "reviews", "--custom", json.dumps(task), "--glue-root", "x",
                               "--validation-fraction", "0.1", "--validation-max-rows", "100",
                               "--validation-seed", "0", "--out-dir", str(out), "--tokenizer",
                               str(teachers[family] / "tokenizer.json"), "--max-length", str(max_length)]) == 0
    return out


def hf_logits(folder, texts, max_length=16):
    """The folder's logits for ``texts`` through transformers and tokenizers alone (fp32)."""
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModelForSequenceClassification

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length=max_length)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    rows = []
    for text in texts:
        ids = torch.tensor([tok.encode(text).ids])
        with torch.no_grad():
            rows.append(model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0].numpy())
    return np.stack(rows)


def texts_of(built, split):
    root = built[0]
    return [line.split(",")[0] for line in (root / "task" / f"{split}.csv").read_text().splitlines()[1:]]


# ---- labels, folders -----------------------------------------------------------------------------

def test_labels_match_by_name_in_any_order_and_case():
    config = {"id2label": {"0": "POSITIVE", "1": "Negative"}}
    assert families.label_order(config, ["negative", "positive"], False) == [1, 0]
    renamed = {"id2label": {"0": "LABEL_0", "1": "LABEL_1"}}
    assert families.label_order(renamed, ["neg", "pos"], False, {"LABEL_0": "pos", "label_1": "neg"}) == [1, 0]


@pytest.mark.parametrize("config, task_labels, regression, says", [
    ({"id2label": {"0": "neg", "1": "pos"}}, ["negative", "positive"], False,
     "the teacher's labels [neg, pos] are not the task's [negative, positive]; rename them with teacher.label_map"),
    ({"id2label": {"0": "a", "1": "b", "2": "c"}}, ["a", "b"], False, "the teacher's labels [a, b, c] are not"),
    ({"id2label": {"0": "a", "1": "b"}}, [], True, "the task is a regression (one score), but the teacher "
                                                   "is a classifier of 2 labels (a, b)"),
    ({"id2label": {"0": "LABEL_0"}, "problem_type": "regression"}, ["a", "b"], False,
     "the teacher regresses one score, but the task classifies 2 labels (a, b)"),
    ({"id2label": {"1": "a", "2": "b"}}, ["a", "b"], False, "id2label ids must be 0..1"),
])
def test_a_label_mismatch_is_one_line_naming_both_lists(config, task_labels, regression, says):
    with pytest.raises(ConfigError, match=None) as err:
        families.label_order(config, task_labels, regression)
    assert says in str(err.value) and "\n" not in str(err.value)


def test_a_folder_without_safetensors_or_tokenizer_is_refused_in_one_line(built, tmp_path):
    source = built[2]["roberta"]
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(source / "config.json", pickled / "config.json")
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x02not to be unpickled")
    with pytest.raises(ConfigError) as err:
        families.check_folder(pickled)
    assert "holds pytorch_model.bin but no model.safetensors; kdflow never unpickles weights" in str(err.value)
    assert "save_pretrained(" in str(err.value) and "safe_serialization=True" in str(err.value)
    untokenized = tmp_path / "untokenized"
    shutil.copytree(source, untokenized)
    (untokenized / "tokenizer.json").unlink()
    with pytest.raises(ConfigError, match="has no tokenizer.json"):
        families.check_folder(untokenized)
    with pytest.raises(ConfigError, match="is not a folder"):
        families.check_folder(tmp_path / "nowhere")


def test_a_non_bert_teacher_gives_a_student_its_widths_and_vocabulary(built):
    config = json.loads((built[2]["distilbert"] / "config.json").read_text())
    shape = families.student_shape(config, 123)
    assert shape["hidden_size"] == 32 and shape["num_attention_heads"] == 4 and shape["intermediate_size"] == 64
    assert shape["num_hidden_layers"] == 2 and shape["vocab_size"] == 123


# ---- the import stage ----------------------------------------------------------------------------

@pytest.mark.parametrize("family", [*NON_BERT, "bert"])
def test_the_imported_teacher_gives_transformers_logits_in_the_tasks_label_order(built, family, tmp_path, capsys):
    records = records_of(built, family, tmp_path)
    out = tmp_path / "teacher"
    assert import_teacher.main(["--task", "reviews", "--finetuned", str(built[2][family]), "--records",
                                str(records), "--label-map", "{}", "--out", str(out), "--eval-batch-size", "8",
                                "--backend", "torch", "--device", "cpu", "--precision", "fp32",
                                "--threads", "1"]) == 0
    assert "validation accuracy" in capsys.readouterr().err
    config = json.loads((out / "config.json").read_text())
    assert config["labels"] == ["negative", "positive"] and (out / "tokenizer.json").is_file()
    assert config.get("kdflow_runtime") == (None if family in KDLIB_RUN else "transformers")
    B = backend.load("torch", "cpu", "fp32")
    model, _ = load_checkpoint(B, out)
    texts = texts_of(built, "dev")[:12]
    from kdlib.data.convert import bert_arrays, subword
    arrays = bert_arrays(subword(out / "tokenizer.json", 16), texts)
    with B.no_grad():
        ours = model(input_ids=B.tensor(arrays["input_ids"]), attention_mask=B.tensor(arrays["input_mask"]),
                     token_type_ids=B.tensor(arrays["segment_ids"]))["logits"].numpy()
    theirs = hf_logits(built[2][family], texts)
    if family == "electra":                    # its columns are POSITIVE, NEGATIVE: reordered
        theirs = theirs[:, ::-1]
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


def test_an_un_fine_tuned_teacher_stops_the_import_in_one_line(built, tmp_path, capsys):
    raw = hfteachers.build_teacher("distilbert", tmp_path / "raw", built[0] / "task", steps=0)
    records = records_of(built, "distilbert", tmp_path)
    assert import_teacher.main(["--task", "reviews", "--finetuned", str(raw), "--records", str(records),
                                "--label-map", "{}", "--out", str(tmp_path / "teacher"), "--eval-batch-size", "8",
                                "--backend", "torch", "--device", "cpu", "--precision", "fp32",
                                "--threads", "1"]) == 1
    [line] = error_lines(capsys)
    assert "no better than always answering the majority label" in line and "looks un-fine-tuned" in line
    assert not (tmp_path / "teacher").exists()


def test_a_label_mismatch_stops_the_import_naming_both_lists(built, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(built[2]["roberta"], other)
    config = json.loads((other / "config.json").read_text())
    config["id2label"] = {"0": "neg", "1": "pos"}
    (other / "config.json").write_text(json.dumps(config))
    records = records_of(built, "roberta", tmp_path)
    args = ["--task", "reviews", "--finetuned", str(other), "--records", str(records), "--out",
            str(tmp_path / "teacher"), "--eval-batch-size", "8", "--backend", "torch", "--device", "cpu",
            "--precision", "fp32", "--threads", "1", "--label-map"]
    assert import_teacher.main(args + ["{}"]) == 1
    [line] = error_lines(capsys)
    assert "the teacher's labels [neg, pos] are not the task's [negative, positive]" in line
    assert import_teacher.main(args + [json.dumps({"neg": "negative", "pos": "positive"})]) == 0


# ---- the workflow --------------------------------------------------------------------------------

def workflow_config(work, task, teacher, students, *, teacher_config=None, **extra) -> None:
    """The tiny config (tests/workflows.py) on the task ``reviews`` in fp32, the teacher of
    ``teacher_config`` (else the folder ``teacher``, fine-tuned) and no teacher training settings,
    ``students`` trained for 15 epochs; ``extra``, more top-level keys."""
    teacher_config = teacher_config or {"finetuned": str(teacher)}
    write_config(work, **merged({"precision": "fp32", "tasks": ["reviews"], "custom_tasks": {"reviews": task},
                                 "teacher": {"train": DROP, **teacher_config}, "students_train": {"epochs": 15},
                                 "students": students}, extra))


KD_AND_LSTM = {"kd": {"algorithm": "kd", "architecture": BERT_STUDENT},
               "lstm": {"algorithm": "distilled_lstm", "architecture": LSTM_STUDENT}}


@pytest.mark.slow
@pytest.mark.parametrize("family", NON_BERT)
def test_the_workflow_distils_kd_and_distilled_lstm_from_a_teacher_of_any_family(built, family, tmp_path):
    work = copy_workflow(tmp_path)
    workflow_config(work, built[1], built[2][family], KD_AND_LSTM)
    snakemake(work)
    results = work / "results/reviews"
    teacher = json.loads((results / "teacher_eval.json").read_text())
    assert teacher["score"] > 0.75, teacher                # the fine-tuned teacher, not a guess
    with np.load(results / "teacher_logits.npz") as cache:
        cached = cache["train"]
    theirs = hf_logits(built[2][family], texts_of(built, "train"))
    if family == "electra":
        theirs = theirs[:, ::-1]
    np.testing.assert_allclose(cached, theirs, atol=1e-4)  # row i of the cache is train row i
    scores = {s: json.loads((results / f"{s}_eval.json").read_text())["score"] for s in ("kd", "lstm")}
    assert scores["kd"] > 0.65, scores                      # learnt from it (the classes are even)
    assert (results / "kd/tokenizer.json").read_bytes() == (built[2][family] / "tokenizer.json").read_bytes()
    assert (results / "lstm/vocab.txt").is_file()
    assert "| teacher |" in (results / "report.md").read_text()
    card = (results / "teacher/README.md").read_text()
    assert ("RoBERTa, 2 layers" if family in KDLIB_RUN else f"{family} (transformers)") in card
    if family in ("roberta", "distilbert"):    # shipping: each export carries the student's tokenizer
        snakemake(work, "deploy")
        exports = results / "export"
        assert (exports / "teacher/onnx/model.onnx").is_file()
        assert (exports / "kd/onnx/tokenizer.json").is_file() and (exports / "lstm/onnx/vocab.txt").is_file()
        check_hf_export(exports / "kd/hf", results / "kd_predictions.npz", texts_of(built, "dev"))
        if family in KDLIB_RUN:                # kdlib's RoBERTa exports as one
            check_hf_export(exports / "teacher/hf", results / "teacher_predictions.npz", texts_of(built, "dev"))
        else:                                  # transformers runs it: it needs no HF export
            assert not (exports / "teacher/hf").exists()


def check_hf_export(folder, predictions, texts):
    """transformers' AutoTokenizer and AutoModel of the export give the student's dev logits."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    batch = tokenizer(texts, padding=True, truncation=True, max_length=16, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits.numpy()
    with np.load(predictions) as saved:
        np.testing.assert_allclose(logits, saved["dev_logits"], atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("student, says", [
    ({"algorithm": "tinybert", "architecture": BERT_STUDENT},
     "student s (algorithm tinybert) needs the teacher's hidden states and attentions in kdlib's BERT, but "
     "the teacher of reviews is a deberta-v2 (teacher.finetuned), which kdlib runs only through transformers"),
    ({"algorithm": "none", "architecture": {**BERT_STUDENT, "hidden": 32, "heads": 4, "intermediate": 64,
                                            "init": "pretrained"}},
     "student s (algorithm none) needs layers copied into it (init: pretrained)"),
])
def test_a_recipe_that_needs_layers_stops_before_anything_runs(built, tmp_path, student, says):
    work = copy_workflow(tmp_path)
    workflow_config(work, built[1], built[2]["deberta-v2"], {"s": student})
    out = snakemake(work, "-n", check=False)
    assert out.returncode != 0 and says in out.stdout + out.stderr
    assert not (work / "results").exists()


@pytest.mark.slow
def test_a_pickle_only_teacher_stops_the_workflow_in_one_line(built, tmp_path):
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(built[2]["roberta"] / "config.json", pickled / "config.json")
    (pickled / "pytorch_model.bin").write_bytes(b"not to be unpickled")
    (tmp_path / "work").mkdir()
    work = copy_workflow(tmp_path / "work")
    workflow_config(work, built[1], pickled, KD_AND_LSTM)
    out = snakemake(work, "-n", check=False)
    assert out.returncode != 0 and "holds pytorch_model.bin but no model.safetensors" in out.stdout + out.stderr


# ---- several teachers ----------------------------------------------------------------------------

def tokenized_name(tokenizer) -> str:
    """The record folder of another tokenizer than the teacher's (kdlib.plan, Plan.tokenized_dir)."""
    from kdlib.io import file_digest
    return f"bert16-tok_{file_digest(tokenizer)[:12]}"


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_the_ensemble_mean_is_of_probabilities_and_its_softmax_gives_them_back():
    from kdlib.evaluate.ensemble import mean_probabilities
    a = np.array([[4.0, -4.0], [0.0, 1.0]], np.float32)
    b = np.array([[0.0, 30.0], [2.0, 2.0]], np.float32)     # other scale: a mean of logits would differ
    mean = mean_probabilities([a, b], regression=False)
    np.testing.assert_allclose(softmax(mean), (softmax(a) + softmax(b)) / 2, atol=1e-6)
    assert mean[0].argmax() == 1 and not np.allclose(softmax(mean), softmax((a + b) / 2), atol=1e-2)
    np.testing.assert_allclose(mean_probabilities([a[:, :1], b[:, :1]], regression=True), (a[:, :1] + b[:, :1]) / 2)


def test_an_ensemble_runs_its_teachers_in_turn():
    from kdlib.evaluate.speed import run_in_turn
    result = {"models": {"teacher_0": {"latency_rounds": [1.0, 2.0], "throughput_rounds": [100.0, 50.0]},
                         "teacher_1": {"latency_rounds": [3.0, 2.0], "throughput_rounds": [100.0, 50.0]}}}
    both = run_in_turn(result, ["teacher_0", "teacher_1"])["models"]["teacher"]
    assert both["latency_rounds"] == [4.0, 4.0] and both["throughput_rounds"] == [50.0, 25.0]


@pytest.mark.slow
def test_an_ensemble_of_two_teachers_caches_their_mean_probabilities(built, tmp_path):
    """RoBERTa (byte-level BPE) and ELECTRA (WordPiece, its labels in the other order): each reads
    records of its own tokenizer, row i the same example."""
    work = copy_workflow(tmp_path)
    teachers = [built[2]["roberta"], built[2]["electra"]]
    own = {**BERT_STUDENT, "tokenizer": "builtin:minilm-l6"}     # a student with its own tokenizer
    students = {**KD_AND_LSTM, "kd_mini": {"algorithm": "kd", "architecture": own, "transfer": "more"}}
    workflow_config(work, built[1], None, students, teacher_config={"ensemble": [str(t) for t in teachers]},
                    transfer={"more": {"augment": "tang", "variants": 1}})
    snakemake(work)
    results = work / "results/reviews"
    records = {p.name for p in (work / "data/ofrecord/reviews").iterdir()}
    electra, mini = (tokenized_name(built[2]["electra"] / "tokenizer.json"),
                     tokenized_name(resolve_pretrained("builtin:minilm-l6") / "vocab.txt"))
    assert {electra, f"{electra}+more", f"{mini}+more", mini} <= records, records
    assert (work / f"data/ofrecord/reviews/{electra}/tokenizer.json").is_file()
    assert json.loads((results / "kd_mini/config.json").read_text())["tokenizer"] == "wordpiece"
    assert (results / "kd_mini/vocab.txt").read_bytes() == (resolve_pretrained("builtin:minilm-l6")
                                                            / "vocab.txt").read_bytes()
    with np.load(results / "teacher_logits+more.npz") as cache:    # labelled rows and the set's
        assert len(cache["train"]) > 160
    train = texts_of(built, "train")
    expected = (softmax(hf_logits(teachers[0], train)) + softmax(hf_logits(teachers[1], train)[:, ::-1])) / 2
    with np.load(results / "teacher_logits.npz") as cache:
        np.testing.assert_allclose(softmax(cache["train"].astype(np.float64)), expected, atol=1e-4)
    dev = texts_of(built, "dev")
    gold = [1 if line.endswith("positive") else 0
            for line in (built[0] / "task/dev.csv").read_text().splitlines()[1:]]
    mean_dev = (softmax(hf_logits(teachers[0], dev)) + softmax(hf_logits(teachers[1], dev)[:, ::-1])) / 2
    ensemble = json.loads((results / "teacher_eval.json").read_text())
    assert ensemble["score"] == pytest.approx(float(np.mean(mean_dev.argmax(1) == np.array(gold))))
    assert [m["model"] for m in ensemble["members"]] == ["teacher_0", "teacher_1"]
    report = (results / "report.md").read_text()
    for row in ("| teacher | teacher | ensemble | 2 teachers |", "| teacher_0 | ensemble member |",
                "| teacher_1 | ensemble member |", "| kd | distilled |", "| lstm | distilled |"):
        assert row in report
    speed = json.loads((results / "speed.json").read_text())["models"]
    assert speed["teacher"]["members"] == ["teacher_0", "teacher_1"]


@pytest.mark.slow
@pytest.mark.parametrize("teacher_config, students, says", [
    ({"ensemble": ["roberta"]}, KD_AND_LSTM, "teacher.ensemble: give two or more teachers"),
    ({"ensemble": ["roberta", "builtin"]}, KD_AND_LSTM, "(the first may be builtin"),
    ({"ensemble": ["roberta", "electra"], "finetuned": "roberta"}, KD_AND_LSTM, "leave teacher.finetuned null"),
    ({"ensemble": ["builtin", "bert"]},
     {"s": {"algorithm": "theseus", "architecture": {"layers": 1, "init": "teacher"}}},
     "student s (algorithm theseus) needs one teacher's layers, but teacher.ensemble gives the students only"),
])
def test_an_ensemble_that_cannot_work_stops_before_anything_runs(built, tmp_path, teacher_config, students, says):
    """Family names stand for the built teachers' folders."""
    work = copy_workflow(tmp_path)
    folders = {k: str(v) for k, v in built[2].items()}
    resolved = {key: [folders.get(v, v) for v in value] if isinstance(value, list) else folders[value]
                for key, value in teacher_config.items()}
    workflow_config(work, built[1], None, students, teacher_config=resolved,
                    transfer={"more": {"augment": "tang", "variants": 1}})
    out = snakemake(work, "-n", check=False)
    assert out.returncode != 0 and says in out.stdout + out.stderr, out.stdout[-2000:] + out.stderr[-2000:]


@pytest.mark.oneflow
def test_a_fine_tuned_bert_teacher_runs_in_kdlib_on_oneflow(built, tmp_path):
    """A BERT folder becomes a kdlib checkpoint: OneFlow imports it (its validation check runs
    there) and evaluates it to transformers' logits."""
    import subprocess
    if not ONEFLOW_PYTHON.exists():
        pytest.skip(f"{ONEFLOW_PYTHON} is missing (run 'make setup' to build the OneFlow runtime)")
    records = records_of(built, "bert", tmp_path)
    runtime = ["--backend", "oneflow", "--device", "cpu", "--precision", "fp32", "--threads", "1",
               "--eval-batch-size", "8"]
    for stage in (["import_teacher", "--finetuned", str(built[2]["bert"]), "--label-map", "{}",
                   "--out", str(tmp_path / "teacher")],
                  ["evaluate_model", "--name", "teacher", "--model", str(tmp_path / "teacher"),
                   "--out", str(tmp_path / "eval.json"), "--predictions", str(tmp_path / "p.npz")]):
        out = subprocess.run([str(ONEFLOW_PYTHON), "-m", f"workflow_scripts.{stage[0]}", "--task", "reviews",
                              "--records", str(records), *stage[1:], *runtime],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
    with np.load(tmp_path / "p.npz") as predictions:
        np.testing.assert_allclose(predictions["dev_logits"], hf_logits(built[2]["bert"], texts_of(built, "dev")),
                                   atol=1e-4)


def test_a_students_own_tokenizer_is_resolved_and_refused_where_it_cannot_work(built, tmp_path):
    from kdlib import config
    from kdlib.distill.spec import check_students
    assert resolve_tokenizer("builtin:minilm-l6").name == "vocab.txt"
    assert resolve_tokenizer(str(built[2]["roberta"])) == built[2]["roberta"] / "tokenizer.json"
    assert resolve_tokenizer(str(built[2]["roberta"] / "tokenizer.json")).name == "tokenizer.json"
    with pytest.raises(ConfigError, match="neither a folder nor a file"):
        resolve_tokenizer(str(tmp_path / "nowhere"))
    (tmp_path / "spm.model").write_bytes(b"")
    with pytest.raises(ConfigError, match="name a tokenizer.json or a vocab.txt"):
        resolve_tokenizer(str(tmp_path / "spm.model"))
    teacher = {"hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 64, "num_hidden_layers": 2,
               "vocab_size": 100}
    for student in ({"algorithm": "tinybert", "architecture": {"layers": 1, "tokenizer": "builtin:minilm-l6"}},
                    {"algorithm": "distilled_lstm", "architecture": {"model": "bilstm",
                                                                     "tokenizer": "builtin:minilm-l6"}}):
        cfg = config.validate({"students": {"s": student}})
        with pytest.raises(ConfigError, match="architecture.tokenizer gives a BERT from scratch records"):
            check_students(cfg, teacher)


@pytest.mark.slow
def test_a_fine_tuned_roberta_teaches_the_layer_based_recipes_in_kdlib(built, tmp_path):
    """kdlib's BERT holds a RoBERTa (positions after the padding id, its head as pooler and
    classifier), so bert_pkd, tinybert and theseus learn from its layers; a student that copied
    its embeddings exports as a RobertaForSequenceClassification."""
    work = copy_workflow(tmp_path)
    students = {"pkd": {"algorithm": "bert_pkd", "architecture": {"layers": 2, "init": "teacher"}},
                "tiny": {"algorithm": "tinybert", "architecture": BERT_STUDENT},
                "theseus": {"algorithm": "theseus", "architecture": {"layers": 1, "init": "teacher"},
                            "hyperparameters": {"compress_ratio": 2}}}
    workflow_config(work, built[1], built[2]["roberta"], students)
    snakemake(work, "results/reviews/report.md", "results/reviews/export/pkd/hf/config.json")
    results = work / "results/reviews"
    for student in students:
        assert json.loads((results / f"{student}_eval.json").read_text())["score"] > 0.65, student
    pkd = json.loads((results / "pkd/config.json").read_text())
    assert pkd["position_offset"] == 2
    assert json.loads((results / "init/pkd/config.json").read_text())["teacher_layers"] == [1, 2]
    assert json.loads((results / "export/pkd/hf/config.json").read_text())["model_type"] == "roberta"
    check_hf_export(results / "export/pkd/hf", results / "pkd_predictions.npz", texts_of(built, "dev"))


@pytest.mark.slow
def test_a_students_folder_predicts_with_its_teachers_tokenizer(built, tmp_path):
    """kdlib.predict reads the tokenizer.json a student of a BPE teacher carries, and gives the
    logits its evaluation gave the same dev texts."""
    from kdlib.predict import Predictor
    work = copy_workflow(tmp_path)
    workflow_config(work, built[1], built[2]["deberta-v2"], {"kd": KD_AND_LSTM["kd"]})
    snakemake(work, "results/reviews/kd_eval.json")
    predictor = Predictor(backend.load("torch", "cpu", "fp32"), work / "results/reviews/kd")
    logits = predictor(texts_of(built, "dev"))
    with np.load(work / "results/reviews/kd_predictions.npz") as saved:
        np.testing.assert_allclose(logits, saved["dev_logits"], atol=1e-4)


@pytest.mark.slow
def test_teachers_differ_by_task_and_a_transformers_teacher_runs_beside_oneflow_students(built, tmp_path):
    """teacher.finetuned as {task: folder}: that task imports its teacher, another fine-tunes one
    here; with backend oneflow, the stages that run a transformers teacher use the torch runtime."""
    if not ONEFLOW_PYTHON.exists():
        pytest.skip(f"{ONEFLOW_PYTHON} is missing (run 'make setup' to build the OneFlow runtime)")
    work = copy_workflow(tmp_path)
    task = built[1]
    workflow_config(work, task, None, KD_AND_LSTM,
                    teacher_config={"finetuned": {"reviews": str(built[2]["electra"])}},
                    custom_tasks={"reviews": task, "other": task}, tasks=["reviews", "other"], backend="oneflow")
    jobs = planned(work, "-p")
    assert jobs["import_teacher"] == 1 and jobs["finetune_teacher"] == 1, jobs
    plan = snakemake(work, "-n", "-p", "results/reviews/teacher_logits.npz", "results/other/teacher_logits.npz")
    commands = [line for line in plan.stdout.splitlines() if "workflow_scripts.cache_teacher_logits" in line]
    by_task = {("reviews" if "--task reviews" in c else "other"): c for c in commands}
    assert str(TORCH_PYTHON) in by_task["reviews"] and "--backend torch" in by_task["reviews"]
    assert str(ONEFLOW_PYTHON) in by_task["other"] and "--backend oneflow" in by_task["other"]


def test_a_cased_vocab_without_tokenizer_json_is_refused(built, tmp_path):
    """kdflow reads a bare vocab.txt as uncased WordPiece: a cased one needs its tokenizer.json."""
    folder = tmp_path / "cased"
    shutil.copytree(built[2]["bert"], folder)
    (folder / "tokenizer.json").unlink()
    (folder / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nGood\n", encoding="utf-8")
    assert families.check_folder(folder)["model_type"] == "bert"         # uncased: read as it is
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}))
    with pytest.raises(ConfigError, match="has a cased vocab.txt but no tokenizer.json"):
        families.check_folder(folder)


@pytest.mark.parametrize("regression, logits, labels, fine", [
    (False, [[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], [1, 0, 1, 0], True),     # 3/4 > majority 2/4
    (False, [[0.0, 1.0]] * 4, [1, 1, 1, 0], False),                                      # 3/4, the majority's
    (True, [[0.1], [0.9], [0.5], [0.4]], [0.0, 1.0, 0.5, 0.5], True),                   # beats the mean
    (True, [[0.9], [0.1], [0.5], [0.5]], [0.0, 1.0, 0.5, 0.5], False),                  # worse than the mean
])
def test_the_un_fine_tuned_check_compares_with_the_majority_label_or_the_mean(monkeypatch, regression, logits,
                                                                             labels, fine):
    from kdlib.data.task import Task
    from kdlib.distill import teacher
    task = Task(name="t", glue_dir="t", archive=None, text_a="a", text_b=None, label="y",
                labels=None if regression else ("neg", "pos"), metrics=("pearson",) if regression else ("accuracy",))
    monkeypatch.setattr(teacher, "load_checkpoint", lambda B, folder: (None, {}))
    monkeypatch.setattr(teacher, "predict", lambda B, model, path, batch_size: (
        np.array(logits, np.float32), np.array(labels, np.float32 if regression else np.int64)))
    if fine:
        assert teacher.check_fine_tuned(None, task, None, "records", 8, "folder")
    else:
        with pytest.raises(ConfigError, match="looks un-fine-tuned"):
            teacher.check_fine_tuned(None, task, None, "records", 8, "folder")
