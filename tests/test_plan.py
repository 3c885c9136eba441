"""kdlib.plan: which files each job reads and which arguments it gets, without Snakemake. The
workflow tests run the same methods through the rules; these pin the planning itself."""
from __future__ import annotations

import json
import shlex
from types import SimpleNamespace as W

import pytest

from kdlib import config, plan
from kdlib.errors import ConfigError

BERT = {"model": "bert", "layers": 1, "hidden": 16, "heads": 4, "intermediate": 32}
LSTM = {"model": "bilstm", "hidden": 16, "intermediate": 16, "embedding": 16}


def make_plan(students: dict, **top) -> plan.Plan:
    cfg = config.validate({"tasks": ["sst2"], "students": students, **top})
    return plan.Plan(cfg, backend="torch", precision="fp32", train_python="train-py", data_python="data-py",
                     job_threads=3)


@pytest.fixture(scope="module")
def default():
    """The plan of the shipped config.yaml."""
    cfg = config.load("config.yaml")
    return plan.Plan(cfg, backend="torch", precision="bf16", train_python="train-py", data_python="data-py")


def test_each_recipe_reads_what_it_needs_and_nothing_else(default):
    def inputs(student):
        return default.distill_inputs(W(task="tweets", student=student))

    assert inputs("distilled_lstm") == {"records": "data/ofrecord/tweets/lstm32+tweets_raw/meta.json",
                                        "logits": "results/tweets/teacher_logits+tweets_raw.npz"}
    assert inputs("tinybert")["teacher"] == plan.TEACHER_WEIGHTS.format(task="tweets")
    assert inputs("bert_pkd")["init"] == "results/tweets/init/bert_pkd/model.safetensors"
    assert "logits" not in inputs("bert_pkd") and "init" not in inputs("tinybert")
    # a baseline trains on the records without the transfer set and reads its students' row counts
    assert inputs("lstm_nokd") == {"records": "data/ofrecord/tweets/lstm32/meta.json",
                                   "compared": ["data/ofrecord/tweets/lstm32+tweets_raw/meta.json"]}


def test_a_baseline_matches_the_steps_of_its_students_only_under_equal_steps():
    students = {"kd": {"algorithm": "kd", "architecture": BERT, "train": {"epochs": 3, "batch_size": 4}},
                "base": {"algorithm": "none", "architecture": BERT}}
    matched = make_plan(students).match_steps(W(task="sst2", student="base"))
    assert matched.startswith("--match-steps ")
    assert json.loads(shlex.split(matched)[1]) == [
        {"student": "kd", "records": "data/ofrecord/sst2/bert128", "phases": [{"epochs": 3, "batch_size": 4}]}]
    assert make_plan(students).match_steps(W(task="sst2", student="kd")) == ""
    assert make_plan(students, equal_steps=False).match_steps(W(task="sst2", student="base")) == ""


def test_a_two_phase_students_steps_hold_both_phases_first_phase_first():
    """Theseus trains a replacement phase before its successor phase: the baseline's --match-steps
    must carry both phases' epochs and batch sizes (first_phase_train, then train), or the
    baseline would match only the last phase's steps."""
    students = {"theseus": {"algorithm": "theseus", "architecture": {"model": "bert", "layers": 3, "init": "teacher"},
                            "hyperparameters": {"compress_ratio": 2},
                            "first_phase_train": {"epochs": 2, "batch_size": 4},
                            "train": {"epochs": 3, "batch_size": 16}},
                "base": {"algorithm": "none", "architecture": {"model": "bert", "layers": 3, "init": "pretrained"}}}
    matched = make_plan(students).match_steps(W(task="sst2", student="base"))
    (theseus,) = json.loads(shlex.split(matched)[1])
    assert theseus["student"] == "theseus"
    assert theseus["phases"] == [{"epochs": 2, "batch_size": 4}, {"epochs": 3, "batch_size": 16}]


def test_seed_runs_are_wildcards_and_train_with_their_own_seed():
    p = make_plan({"kd": {"algorithm": "kd", "architecture": BERT}}, seeds=3)
    assert p.runs == ["kd", "kd_seed1", "kd_seed2"] and p.models == ["teacher", "kd"]
    assert p.constraints["student"] == "kd|kd_seed1|kd_seed2"
    seeds = [json.loads(str(p.student_spec_json(W(task="sst2", student=r))))["train"]["seed"] for r in p.runs]
    assert seeds == [seeds[0], seeds[0] + 1, seeds[0] + 2]


def test_what_reruns_a_job_leaves_out_how_it_runs():
    p = make_plan({"kd": {"algorithm": "kd", "architecture": BERT, "train": {"save_seconds": 5}}})
    w = W(task="sst2", student="kd")
    assert "save_seconds" not in json.loads(p.student_settings(w))["train"]
    assert json.loads(str(p.student_spec_json(w)))["train"]["save_seconds"] == 5
    assert isinstance(p.student_spec_json(w), plan.Untracked) and isinstance(p.teacher_spec(w), plan.Untracked)
    assert "save_seconds" not in json.loads(p.teacher_settings(w))


def test_records_follow_the_architecture_and_the_transfer_set(default):
    assert default.records_dir("tweets", "kd") == "data/ofrecord/tweets/bert64+tweets_raw"
    assert default.records_dir("tweets", "kd", transfer=False) == "data/ofrecord/tweets/bert64"
    assert default.eval_records_of(W(task="tweets", student="lstm_nokd")) == "data/ofrecord/tweets/lstm32/meta.json"
    models = default.speed_models(W(task="tweets"))
    records = default.speed_records(W(task="tweets"))
    assert models[0] == "results/tweets/teacher" and len(models) == len(records) == 1 + len(default.students)
    assert records[models.index("results/tweets/distilled_lstm")] == "data/ofrecord/tweets/lstm32"
    assert default.speed_record_files(W(task="tweets")) == ["data/ofrecord/tweets/bert64/meta.json",
                                                            "data/ofrecord/tweets/lstm32/meta.json"]


def test_the_default_target_is_each_report_model_card_and_model(default):
    targets = default.default_targets(W())
    assert "results/tweets/report.md" in targets and "results/tweets/kd/README.md" in targets
    assert "results/tweets/kd/model.safetensors" in targets      # a model a failed rerun removed is missed
    assert len(targets) == len(default.config["tasks"]) * (1 + len(default.models) + 1 + len(default.runs))


def test_runtime_arguments_follow_the_teacher():
    p = make_plan({"kd": {"algorithm": "kd", "architecture": BERT}})
    w = W(task="sst2")
    assert p.teacher_runtime(w) == "--backend torch --device auto --precision fp32" == p.runtime_args()
    assert p.teacher_python(w) == "train-py"
    lstm = make_plan({"l": {"algorithm": "none", "architecture": LSTM}})
    assert lstm.is_lstm("l") and lstm.bert_models == ["teacher"]


def test_a_task_reads_files_placed_by_hand_else_downloaded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = make_plan({"kd": {"algorithm": "kd", "architecture": BERT}})
    w = W(task="sst2")
    assert p.task_tsvs(w) == ["data/download/SST-2/train.tsv", "data/download/SST-2/dev.tsv"]
    for split in ("train", "dev"):
        (tmp_path / "data/glue/SST-2").mkdir(parents=True, exist_ok=True)
        (tmp_path / f"data/glue/SST-2/{split}.tsv").write_text("sentence\tlabel\n")
    assert p.task_tsvs(w) == ["data/glue/SST-2/train.tsv", "data/glue/SST-2/dev.tsv"]
    assert str(p.validation_args(w)).startswith("--validation-fraction 0.1 ")
    assert not isinstance(p.validation_args(w), plan.Untracked)          # SST-2 carves it: tracked


@pytest.mark.parametrize("name", ["teacher", "report", "kd_seed2", "teacher_3"])
def test_a_reserved_student_name_is_one_error_naming_it(name):
    with pytest.raises(ConfigError, match=f"students.{name}: the name is reserved"):
        make_plan({name: {"algorithm": "kd", "architecture": BERT}})


def test_a_missing_pretrained_folder_or_tokenizer_is_one_error_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match="^teacher.pretrained: "):
        make_plan({"kd": {"algorithm": "kd", "architecture": BERT}},
                  teacher={"pretrained": str(tmp_path / "nowhere")})
    with pytest.raises(ConfigError, match="^students.kd.architecture.tokenizer: "):
        make_plan({"kd": {"algorithm": "kd", "architecture": {**BERT, "tokenizer": str(tmp_path / "none")}}})


def test_untracked_formats_as_its_value():
    assert str(plan.Untracked(3)) == "3" and f"{plan.Untracked('a b')}" == "a b"


def test_a_bert_student_that_does_not_run_the_teacher_follows_its_widths_without_its_folder(default):
    from kdlib.distill import recipes
    from kdlib.models.pretrained import read_pretrained_config
    pretrained = read_pretrained_config(default.teacher_dir)
    for student in ("bert_small_nokd", "kd"):
        spec = default.distill_spec(student, "tweets")
        assert spec["teacher_widths"]["hidden_size"] == pretrained["hidden_size"]
        assert recipes.student_config(spec, spec["teacher_widths"], 2) == recipes.student_config(spec, pretrained, 2)
        assert "teacher" not in default.distill_inputs(W(task="tweets", student=student))
    assert "teacher_widths" not in default.distill_spec("tinybert", "tweets")   # it runs the teacher
    assert "teacher_widths" not in default.distill_spec("lstm_nokd", "tweets")



# ---- the search ---------------------------------------------------------------------------------

class FakeCheckpoints:
    """Snakemake's ``checkpoints`` after both search checkpoints ran, writing into ``folder``."""

    def __init__(self, folder):
        self.search_feasibility = W(get=lambda task: W(output=[str(folder / f"{task}-feasibility.json")]))
        self.search_select = W(get=lambda task: W(output=[str(folder / f"{task}-pick.json")]))


def test_the_search_inputs_follow_the_checkpoints_jsons(tmp_path, default):
    kept = [c.name for c in default.candidates["tweets"][0]]
    bert, lstm = (next(n for n in kept if ("lstm" in n) == want) for want in (False, True))
    (tmp_path / "tweets-feasibility.json").write_text(json.dumps({"candidates": {
        bert: {"feasible": True}, lstm: {"feasible": False}}}))
    inputs = plan.SearchInputs(default, FakeCheckpoints(tmp_path))
    w = W(task="tweets")
    assert inputs.feasible_summaries(w) == [f"results/tweets/{bert}/train_summary.json"]
    for chosen, is_lstm in ((bert, False), (lstm, True)):
        (tmp_path / "tweets-pick.json").write_text(json.dumps({"pick": chosen, "baseline": chosen + "_nokd"}))
        assert inputs.speed_models(w) == ["results/tweets/teacher", f"results/tweets/{chosen}",
                                          f"results/tweets/{chosen}_nokd"]
        assert inputs.exports(w) == ["results/tweets/export/teacher/onnx", f"results/tweets/export/{chosen}/onnx"]
        assert inputs.evals(w) == [f"results/tweets/{chosen}_eval.json", f"results/tweets/{chosen}_nokd_eval.json"]
        # the default searches in onnxruntime int8: the pick's size is its int8 file
        assert inputs.pick_weights(w) == f"results/tweets/export/{chosen}/onnx/model.int8.onnx"
        shipped = inputs.shipped(w)
        assert f"results/tweets/{chosen}/README.md" in shipped
        assert (f"results/tweets/export/{chosen}/hf/config.json" in shipped) is not is_lstm   # no HF BiLSTM
        assert default.model_speed(W(task="tweets", model=chosen)) == "results/tweets/search/speed.json"
    assert default.model_speed(W(task="tweets", model="kd")) == "results/tweets/speed.json"


def test_a_mistake_in_the_search_stops_only_a_search():
    students = {"kd": {"algorithm": "kd", "architecture": BERT}}
    broken = make_plan(students, search={"target": {"metric": "size_mb", "bound": 1, "runtime": "kdlib"},
                                         "space": {"recipes": ["missing"]}})
    assert broken.default_targets(W()) == make_plan(students).default_targets(W())
    with pytest.raises(ConfigError, match="search.space.recipes: no student 'missing'"):
        broken.search_targets(W())
    with pytest.raises(ConfigError, match="needs search.target"):
        make_plan(students).search_targets(W())
    on_dev = make_plan(students, selection="dev", search={
        "target": {"metric": "size_mb", "bound": 1, "runtime": "kdlib"}, "space": {"recipes": ["kd"]}})
    with pytest.raises(ConfigError, match="selection: dev"):
        on_dev.search_targets(W())
