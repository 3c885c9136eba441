"""The task registry and reading GLUE-format TSVs, including every kind of bad input."""
import pandas as pd
import pytest

from kdlib.data import tasks
from kdlib.errors import ConfigError, DataError
from kdlib.evaluate import metrics


def test_registry_covers_glue_and_builtin():
    assert set(tasks.TASKS) == {"cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli",
                                "tweets", "tweets3"}
    assert tasks.GLUE_TASKS == ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli")
    assert tasks.get_task("tweets3").num_labels == 3
    assert tasks.get_task("stsb").is_regression and tasks.get_task("stsb").num_labels == 1
    assert tasks.get_task("mnli").splits == ("train", "dev_matched", "dev_mismatched")
    assert tasks.get_task("mnli").num_labels == 3
    assert tasks.get_task("cola").metric == "mcc"
    assert tasks.get_task("stsb").metrics == ("pearson", "spearman")
    assert tasks.get_task("mrpc").metrics == ("f1", "accuracy")
    for task in tasks.TASKS.values():
        assert all(m in metrics.METRICS for m in task.metrics)
    with pytest.raises(ConfigError, match="unknown task 'sst3'"):
        tasks.get_task("sst3")


def _read(task, path):
    return pd.concat(list(tasks.read_split(tasks.get_task(task), path)), ignore_index=True)


def test_reads_each_layout(tmp_path):
    sst = tmp_path / "sst.tsv"
    sst.write_text('sentence\tlabel\nit\'s "great"\t1\nbad\t0\n')
    df = _read("sst2", sst)
    assert df["text_a"].tolist() == ['it\'s "great"', "bad"] and df["label"].tolist() == [1, 0]
    assert df["text_b"].isna().all()
    cola = tmp_path / "cola.tsv"
    cola.write_text("gj04\t1\t\tThe sailor dogs the hatch.\ngj04\t0\t*\tHatch the dogs.\n")
    assert _read("cola", cola)["label"].tolist() == [1, 0]
    mnli = tmp_path / "mnli.tsv"
    mnli.write_text("index\tsentence1\tsentence2\tgold_label\n0\ta\tb\tneutral\n1\tc\td\tcontradiction\n")
    df = _read("mnli", mnli)
    assert df["label"].tolist() == [2, 0] and df["text_b"].tolist() == ["b", "d"]
    sts = tmp_path / "sts.tsv"
    sts.write_text("index\tsentence1\tsentence2\tscore\n0\ta\tb\t3.8\n")
    assert _read("stsb", sts)["label"].tolist() == pytest.approx([3.8])


def test_qqp_skips_malformed_rows(tmp_path):
    qqp = tmp_path / "qqp.tsv"
    qqp.write_text("id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
                   "1\t1\t2\ta?\tb?\t0\n2\t3\t4\tonly three\t1\t0\textra\n3\t5\t6\tc?\td?\t1\n")
    assert _read("qqp", qqp)["label"].tolist() == [0, 1]


QQP_HEADER = "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate"
QQP_ROWS = [
    "1\t1\t2\ta?\tb?\t0",            # line 2
    "2\t3\t4\twhy is the sky",         # line 3: a question broken by a newline ...
    "blue?\thow?\t1",                  # line 4: ... ends here (both parts lack fields)
    "3\t5\t6\tc?\t\t1",               # line 5: an empty question2 is a field, kept
    "4\t7\t8\td?\te?\t0\textra",      # line 6: a field too many
    "5\t9\t10\tf?\tg?",               # line 7: no label
    "6\t11\t12\th?\ti?\t1",           # line 8
]


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_qqp_skips_and_counts_rows_without_the_header_fields(tmp_path, newline):
    path = tmp_path / "train.tsv"
    path.write_bytes(newline.join([QQP_HEADER, *QQP_ROWS, ""]).encode())
    skipped = tasks.Skipped()
    chunks = list(tasks.read_split(tasks.get_task("qqp"), path, chunksize=2, skipped=skipped))
    df = pd.concat(chunks, ignore_index=True)
    assert df["text_a"].tolist() == ["a?", "c?", "h?"]
    assert df["text_b"].tolist() == ["b?", "", "i?"]
    assert df["label"].tolist() == [0, 1, 1]
    assert (skipped.count, skipped.first_line) == (4, 3)
    assert str(skipped) == "skipped 4 malformed rows (first at line 3)"


def test_qqp_errors_name_the_true_line_after_skipped_rows(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text("\n".join([QQP_HEADER, *QQP_ROWS[:3], "7\t13\t14\tj?\tk?\t2", ""]))
    with pytest.raises(DataError, match=r"train\.tsv:5: label '2' is not one of 0, 1"):
        _read("qqp", path)
    path.write_bytes(("\n".join([QQP_HEADER, QQP_ROWS[1], "7\t13\t14\tcaf\xe9\tk?\t1"]) + "\n")
                     .encode("latin-1"))
    with pytest.raises(DataError, match=r"train\.tsv:3: bytes that are not UTF-8"):
        _read("qqp", path)
    path.write_text("\n".join([QQP_HEADER, *QQP_ROWS[1:3], ""]))
    with pytest.raises(DataError, match=r"no rows after the header; skipped 2 malformed rows "
                                        r"\(first at line 2\)"):
        _read("qqp", path)


def test_other_tasks_keep_the_error_for_a_row_without_its_fields(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text("sentence\tlabel\nfine\t1\nno label here\n")
    skipped = tasks.Skipped()
    with pytest.raises(DataError, match=r"train\.tsv:3: label '' is not one of 0, 1"):
        list(tasks.read_split(tasks.get_task("sst2"), path, skipped=skipped))
    assert skipped.count == 0


@pytest.mark.parametrize("content, message", [
    ("text\tlabel\nfine\t1\n", r"missing column\(s\) sentence"),
    ("sentence\tlabel\nfine\t1\nodd\t7\n", r":3: label '7' is not one of 0, 1"),
    ("sentence\tlabel\n", "no rows"),
    ("", "empty"),
    ("sentence\tlabel\nfine\t1\na\t1\tb\tc\n", "malformed TSV.*line 3"),
])
def test_bad_tsv_is_one_clear_line(tmp_path, content, message):
    path = tmp_path / "train.tsv"
    path.write_text(content)
    with pytest.raises(DataError, match=message) as info:
        _read("sst2", path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_non_utf8_names_the_line(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_bytes(b"sentence\tlabel\nok\t1\ncaf\xe9\t0\n")
    with pytest.raises(DataError, match=r"train.tsv:3: bytes that are not UTF-8"):
        _read("sst2", path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        _read("sst2", tmp_path / "nope.tsv")


def test_bad_regression_label(tmp_path):
    path = tmp_path / "dev.tsv"
    path.write_text("index\tsentence1\tsentence2\tscore\n0\ta\tb\thigh\n")
    with pytest.raises(DataError, match="is not a number"):
        _read("stsb", path)


def test_metrics_on_known_values():
    gold = [1, 0, 1, 1, 0, 0]
    pred = [1, 0, 0, 1, 1, 0]
    import numpy as np
    gold, pred = np.array(gold), np.array(pred)
    assert metrics.accuracy(pred, gold) == pytest.approx(4 / 6)
    assert metrics.f1(pred, gold) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert metrics.mcc(pred, gold) == pytest.approx((2 * 2 - 1 * 1) / 9)   # tp=2 tn=2 fp=1 fn=1
    # macro-F1: the mean of each class's F1, over the classes in the gold labels or predictions
    gold3, pred3 = np.array([0, 0, 1, 1, 2, 2]), np.array([0, 1, 1, 1, 2, 0])
    assert metrics.macro_f1(pred3, gold3) == pytest.approx((2 / 4 + 4 / 5 + 2 / 3) / 3)
    assert metrics.macro_f1(np.array([0, 2, 1]), np.array([0, 0, 1])) == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert metrics.macro_f1(np.array([0, 2]), np.array([0, 2])) == 1.0       # class 1 occurs nowhere
    binary = (metrics.f1(pred, gold) + metrics.f1(1 - pred, 1 - gold)) / 2
    assert metrics.macro_f1(pred, gold) == pytest.approx(binary)
    x = np.array([1.0, 2.0, 3.0, 4.0])
    assert metrics.pearson(x, 2 * x + 1) == pytest.approx(1.0)
    assert metrics.spearman(x, x ** 3) == pytest.approx(1.0)
