"""Distil to a budget, piece by piece (kdlib.search and the Plan's search section): a task's search
settings and whether a figure meets its target; the grid of candidates, their names, the shapes
that are none and the seeded sample; the recipes a search may take; a candidate's baseline; the
Plan's candidates beside the configured students (which they must not change); the pick; the
figures judged from given timings, and one real measurement of untrained shapes; the report's
Pareto front and re-measured figures. tests/test_workflow_search.py runs the whole search."""
from __future__ import annotations

import copy
import json
import re
import shlex
import tempfile
from pathlib import Path
from types import SimpleNamespace as W

import pytest
import tinydata

from kdlib import config, plan
from kdlib.errors import ConfigError, DataError
from kdlib.search import feasibility, pick, report, space

BERT = {"model": "bert", "layers": 1, "hidden": 16, "heads": 4, "intermediate": 32}
LSTM = {"model": "bilstm", "hidden": 16, "intermediate": 16, "embedding": 16}
TEACHER = tinydata.hf_config()                # the tiny BERT: 2 layers, hidden 32, 4 heads
SIZE = {"metric": "size_mb", "bound": 1.0, "runtime": "kdlib"}
SPEEDUP = {"metric": "speedup_batch1", "bound": 4.0, "runtime": "onnx_int8"}


def validated(students: dict, search: dict | None = None, **top) -> dict:
    return config.validate({"tasks": ["sst2"], "students": students, **({"search": search} if search else {}),
                            **top})


def names(kept) -> list[str]:
    return [c.name for c in kept]


# ---- settings and targets -------------------------------------------------------------------------

def test_a_tasks_own_target_or_space_replaces_the_searchs_and_no_target_is_no_search():
    students = {"kd": {"algorithm": "kd", "architecture": BERT}}
    own_target = {"metric": "latency_ms_batch1", "bound": 5, "runtime": "kdlib"}
    own_space = {"recipes": ["kd"], "bert": {"layers": [3]}}
    cfg = validated(students, {"target": SIZE, "space": {"recipes": ["kd"]},
                               "per_task": {"rte": {"target": own_target}, "mrpc": {"space": own_space},
                                            "cola": {"target": None}}})
    searched = space.settings(cfg, "sst2")
    assert searched["target"] == SIZE and searched["space"] == cfg["search"]["space"]
    assert space.settings(cfg, "rte") == {"target": own_target, "space": cfg["search"]["space"]}
    mrpc = space.settings(cfg, "mrpc")
    assert mrpc["target"] == SIZE and mrpc["space"]["bert"]["layers"] == [3]
    assert mrpc["space"] == cfg["search"]["per_task"]["mrpc"]["space"] != cfg["search"]["space"]
    assert space.settings(cfg, "cola") is None                       # the task's own null target
    # no target at all: no search, except for a task that has a target of its own
    off = validated(students, {"space": {"recipes": ["kd"]}, "per_task": {"rte": {"target": own_target}}})
    assert off["search"]["target"] is None
    assert space.settings(off, "sst2") is None
    assert space.settings(off, "rte")["target"] == own_target


@pytest.mark.parametrize("metric, bound, value, expected", [
    ("speedup_batch1", 4.0, 4.0, True),            # a minimum: the bound itself meets it
    ("speedup_batch1", 4.0, 6.0, True),
    ("speedup_batch1", 4.0, 3.0, False),
    ("speedup_batch32", 2.0, 1.0, False),
    ("throughput_batch32", 500.0, 500.0, True),
    ("throughput_batch32", 500.0, 800.0, True),
    ("throughput_batch32", 500.0, 300.0, False),
    ("latency_ms_batch1", 10.0, 10.0, True),       # a maximum: the bound itself meets it
    ("latency_ms_batch1", 10.0, 5.0, True),
    ("latency_ms_batch1", 10.0, 20.0, False),
    ("size_mb", 20.0, 20.0, True),
    ("size_mb", 20.0, 2.0, True),
    ("size_mb", 20.0, 40.0, False),
])
def test_a_figure_meets_a_minimum_or_a_maximum_bound(metric, bound, value, expected):
    assert space.meets({"metric": metric, "bound": bound, "runtime": "kdlib"}, value) is expected


# ---- the grid and the candidates -----------------------------------------------------------------

def test_a_candidate_is_named_after_its_recipe_its_shape_and_the_transfer_set_tried():
    students = {"kd": {"algorithm": "kd", "architecture": BERT},
                "distilled_lstm": {"algorithm": "distilled_lstm", "architecture": LSTM}}
    shapes = {"recipes": ["kd", "distilled_lstm"], "bert": {"layers": [2], "hidden": [16], "intermediate": [32],
                                                            "heads": [4]},
              "bilstm": {"hidden": [100], "embedding": [300]}}
    cfg = validated(students, {"target": SIZE, "space": shapes},
                    transfer={"extra": {"unlabeled": "texts.txt"}})
    assert names(space.grid(cfg, space.settings(cfg, "sst2")["space"])) == [
        "search_kd_l2_h16_i32_a4", "search_distilled_lstm_h100_e300"]
    varied = validated(students, {"target": SIZE, "space": {**shapes, "transfer": ["extra", None]}},
                       transfer={"extra": {"unlabeled": "texts.txt"}})
    grid = space.grid(varied, space.settings(varied, "sst2")["space"])
    assert names(grid) == ["search_kd_l2_h16_i32_a4_xextra", "search_kd_l2_h16_i32_a4_xnone",
                           "search_distilled_lstm_h100_e300_xextra", "search_distilled_lstm_h100_e300_xnone"]
    assert [c.student["transfer"] for c in grid] == ["extra", None, "extra", None]
    assert [c.recipe for c in grid] == ["kd", "kd", "distilled_lstm", "distilled_lstm"]
    assert grid[0].baseline == "search_kd_l2_h16_i32_a4_xextra_nokd" == space.baseline_name(grid[0].name)


def test_a_shape_the_recipe_cannot_take_is_listed_with_why_and_is_no_candidate():
    students = {"kd": {"algorithm": "kd", "architecture": BERT},
                "tiny": {"algorithm": "tinybert", "architecture": BERT}}
    cfg = validated(students, {"target": SIZE, "space": {
        "recipes": ["kd", "tiny"], "bert": {"layers": [1], "hidden": [16, 18], "intermediate": [32], "heads": [4, 2]}}})
    kept, skipped = space.candidates(cfg, "sst2", TEACHER)
    assert sorted(names(kept)) == sorted(["search_kd_l1_h16_i32_a4", "search_kd_l1_h16_i32_a2",
                                          "search_kd_l1_h18_i32_a2", "search_tiny_l1_h16_i32_a4"])
    assert sorted(skipped) == sorted(["search_kd_l1_h18_i32_a4", "search_tiny_l1_h18_i32_a4",
                                      "search_tiny_l1_h16_i32_a2", "search_tiny_l1_h18_i32_a2"])
    assert "not a multiple of num_attention_heads" in skipped["search_kd_l1_h18_i32_a4"]   # 18 / 4 heads
    assert "teacher's 4 heads, not 2" in skipped["search_tiny_l1_h16_i32_a2"]                # tinybert
    assert not set(skipped) & set(names(kept))
    assert all(not why.startswith("student ") for why in skipped.values())        # the name is the key


def test_a_sample_of_n_is_the_first_n_of_one_seeded_order_of_the_candidates():
    students = {"kd": {"algorithm": "kd", "architecture": BERT}}
    grid = {"recipes": ["kd"], "bert": {"layers": [1, 2, 3], "hidden": [16, 18, 32], "intermediate": [32, 64],
                                        "heads": [4]}}

    def sample(n: int, seed: int = 0):
        cfg = validated(students, {"target": SIZE, "space": {**grid, "candidates": n, "seed": seed}})
        return space.candidates(cfg, "sst2", TEACHER)

    whole, skipped = sample(0)                                            # 0: every candidate
    cfg = validated(students, {"target": SIZE, "space": grid})
    in_grid = [n for n in names(space.grid(cfg, space.settings(cfg, "sst2")["space"])) if "_h18_" not in n]
    assert len(whole) == 12 and sorted(names(whole)) == sorted(in_grid)
    assert len(skipped) == 6 and all("_h18_" in n for n in skipped)       # hidden 18, 4 heads: none
    assert names(whole) != in_grid                                        # the order is seeded, not the grid's
    previous = []
    for n in range(1, len(whole) + 1):
        kept, again = sample(n)
        assert names(kept) == names(whole)[:n]                    # N counts candidates, not skipped shapes
        assert set(previous) < set(names(kept)) and again == skipped      # N + 1 keeps the N
        previous = names(kept)
    assert names(sample(20)[0]) == names(whole)                           # more than there are: all
    assert names(sample(0)[0]) == names(whole)                            # the same order every time
    assert names(sample(0, seed=1)[0]) != names(whole)                    # another seed, another order


def test_a_candidate_keeps_its_recipe_and_takes_only_the_shape():
    extra = {"unlabeled": "texts.txt"}
    students = {"kd": {"algorithm": "kd", "architecture": {**BERT, "init_layers": None},
                       "hyperparameters": {"alpha": 0.3, "temperature": 2},
                       "train": {"epochs": 2, "lr": 1e-3, "batch_size": 4}, "transfer": "extra"},
                "lstm": {"algorithm": "distilled_lstm", "architecture": LSTM,
                         "hyperparameters": {"alpha": 0.7, "logit_loss": "soft_ce"}, "train": {"epochs": 5}}}
    cfg = validated(students, {"target": SIZE, "space": {
        "recipes": ["kd", "lstm"], "bert": {"layers": [2], "hidden": [64], "intermediate": [128], "heads": [8]},
        "bilstm": {"hidden": [100], "embedding": [50]}}}, transfer={"extra": extra})
    before = copy.deepcopy(cfg["students"])
    kept, _ = space.candidates(cfg, "sst2", TEACHER)
    by_name = {c.name: c for c in kept}
    bert = by_name["search_kd_l2_h64_i128_a8"]
    assert bert.recipe == "kd"
    raw = cfg["students"]["kd"]
    assert bert.student == {**raw, "architecture": {**raw["architecture"], "layers": 2, "hidden": 64,
                                                    "intermediate": 128, "heads": 8}}
    assert bert.student["transfer"] == "extra" and bert.student["hyperparameters"]["alpha"] == 0.3
    assert bert.student["train"]["epochs"] == 2 and bert.student["architecture"]["embedding"] == raw[
        "architecture"]["embedding"]
    lstm = by_name["search_lstm_h100_e50"]
    raw = cfg["students"]["lstm"]
    assert lstm.student == {**raw, "architecture": {**raw["architecture"], "hidden": 100, "embedding": 50}}
    assert lstm.student["architecture"]["intermediate"] == 16                  # its FC width stays the recipe's
    assert cfg["students"] == before                                            # the recipes are not changed


# ---- the recipes a search may take ---------------------------------------------------------------

@pytest.mark.parametrize("given, key, words", [
    ({"recipes": []}, "search.space.recipes", "name the students"),
    ({"recipes": ["kd", "nobody"]}, "search.space.recipes", "no student 'nobody'"),
    ({"recipes": ["base"]}, "search.space.recipes", "base is a baseline"),
    ({"recipes": ["pkd"]}, "search.space.recipes", "init: teacher"),
    ({"recipes": ["kd"], "transfer": ["extra", "nowhere"]}, "search.space.transfer", "no transfer set 'nowhere'"),
])
def test_a_recipe_the_search_cannot_take_is_one_error_naming_the_key(given, key, words):
    students = {"kd": {"algorithm": "kd", "architecture": BERT},
                "base": {"algorithm": "none", "architecture": BERT},
                "pkd": {"algorithm": "bert_pkd", "architecture": {"model": "bert", "layers": 1, "init": "teacher"}}}
    cfg = validated(students, {"target": SIZE, "space": given}, transfer={"extra": {"unlabeled": "texts.txt"}})
    with pytest.raises(ConfigError) as caught:
        space.check_recipes(cfg, space.settings(cfg, "sst2")["space"])
    message = str(caught.value)
    assert message.startswith(f"config error at {key}: ") and words in message and "\n" not in message
    with pytest.raises(ConfigError, match=f"^config error at search.per_task.rte.space.{key.split('.')[-1]}: "):
        space.check_recipes(cfg, space.settings(cfg, "sst2")["space"], "search.per_task.rte.space")


def test_recipes_of_distilled_students_from_random_weights_pass():
    students = {"kd": {"algorithm": "kd", "architecture": BERT},
                "lstm": {"algorithm": "distilled_lstm", "architecture": LSTM}}
    cfg = validated(students, {"target": SIZE, "space": {"recipes": ["kd", "lstm"], "transfer": ["extra", None]}},
                    transfer={"extra": {"unlabeled": "texts.txt"}})
    space.check_recipes(cfg, space.settings(cfg, "sst2")["space"])


# ---- a candidate's baseline ----------------------------------------------------------------------

def test_a_candidates_baseline_is_its_shape_on_hard_labels_with_its_familys_first_random_baseline_settings():
    students = {"kd": {"algorithm": "kd", "architecture": BERT, "transfer": "extra",
                       "train": {"epochs": 2, "lr": 1e-3}},
                "lstm": {"algorithm": "distilled_lstm", "architecture": LSTM, "transfer": "extra"},
                "pre": {"algorithm": "none", "architecture": {"model": "bert", "layers": 1, "init": "pretrained"},
                        "train": {"lr": 1e-5}},                       # copied layers: not the peer
                "lbase": {"algorithm": "none", "architecture": LSTM, "train": {"lr": 3e-3, "epochs": 4}},
                "base": {"algorithm": "none", "architecture": BERT, "train": {"lr": 7e-4, "batch_size": 16}},
                "base2": {"algorithm": "none", "architecture": BERT, "train": {"lr": 9e-4}}}
    cfg = validated(students, {"target": SIZE, "space": {
        "recipes": ["kd", "lstm"], "bert": {"layers": [2], "hidden": [64], "intermediate": [128], "heads": [8]},
        "bilstm": {"hidden": [100], "embedding": [50]}}}, transfer={"extra": {"unlabeled": "texts.txt"}})
    before = copy.deepcopy(cfg["students"])
    kept, _ = space.candidates(cfg, "sst2", TEACHER)
    by_name = {c.name: c for c in kept}
    bert = space.baseline_student(cfg, by_name["search_kd_l2_h64_i128_a8"])
    assert bert["algorithm"] == "none" and bert["transfer"] is None
    assert bert["architecture"] == by_name["search_kd_l2_h64_i128_a8"].student["architecture"]
    assert bert["train"] == cfg["students"]["base"]["train"]                   # base, not pre nor base2
    assert bert["first_phase_train"] == cfg["students"]["base"]["first_phase_train"]
    lstm = space.baseline_student(cfg, by_name["search_lstm_h100_e50"])
    assert lstm["algorithm"] == "none" and lstm["transfer"] is None
    assert lstm["architecture"] == by_name["search_lstm_h100_e50"].student["architecture"]
    assert lstm["train"] == cfg["students"]["lbase"]["train"]
    assert cfg["students"] == before                                    # neither peer nor recipe changed
    bert["architecture"]["hidden"] = 1
    assert by_name["search_kd_l2_h64_i128_a8"].student["architecture"]["hidden"] == 64     # a copy


def test_a_candidate_of_a_family_without_a_configured_baseline_trains_with_the_shared_settings():
    cfg = validated({"kd": {"algorithm": "kd", "architecture": BERT, "train": {"epochs": 2}},
                     "lbase": {"algorithm": "none", "architecture": LSTM, "train": {"lr": 3e-3}}},
                    {"target": SIZE, "space": {"recipes": ["kd"], "bert": {"layers": [1], "hidden": [16],
                                                                          "intermediate": [32], "heads": [4]}}})
    (candidate,), _ = space.candidates(cfg, "sst2", TEACHER)
    baseline = space.baseline_student(cfg, candidate)
    assert baseline["algorithm"] == "none" and baseline["transfer"] is None
    assert baseline["architecture"] == candidate.student["architecture"]
    assert baseline["train"] == {} and baseline["first_phase_train"] == {}              # students_train alone


# ---- the Plan ------------------------------------------------------------------------------------

PLAN_STUDENTS = {"kd": {"algorithm": "kd", "architecture": BERT, "train": {"epochs": 2, "batch_size": 4}},
                 "lstm": {"algorithm": "distilled_lstm", "architecture": LSTM, "train": {"epochs": 3}},
                 "base": {"algorithm": "none", "architecture": BERT, "train": {"lr": 7e-4}},
                 "lbase": {"algorithm": "none", "architecture": LSTM, "train": {"lr": 3e-3}}}
PLAN_SPACE = {"recipes": ["kd", "lstm"], "bert": {"layers": [1, 2], "hidden": [16], "intermediate": [32],
                                                  "heads": [4]},
              "bilstm": {"hidden": [8], "embedding": [8]}}
PLAN_CANDIDATES = ["search_kd_l1_h16_i32_a4", "search_kd_l2_h16_i32_a4", "search_lstm_h8_e8"]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return tinydata.write_pretrained(tmp_path_factory.mktemp("search_plan") / "tiny_bert")


@pytest.fixture(scope="module")
def make_plan(tiny_bert):
    def make(students=PLAN_STUDENTS, search=None, **top) -> plan.Plan:
        cfg = validated(copy.deepcopy(students), search, teacher={"pretrained": str(tiny_bert)}, **top)
        return plan.Plan(cfg, backend="torch", precision="fp32", train_python="train-py", data_python="data-py")
    return make


def _steps(matched: str) -> list[dict]:
    assert matched.startswith("--match-steps ")
    return json.loads(shlex.split(matched)[1])


def test_candidates_and_their_baselines_are_students_of_the_plan(make_plan):
    p = make_plan(search={"target": SIZE, "space": PLAN_SPACE})
    kept, skipped = p.candidates["sst2"]
    assert sorted(names(kept)) == PLAN_CANDIDATES and skipped == {}
    assert names(kept) != PLAN_CANDIDATES                                  # a seeded order, not the names'
    assert sorted(p.searched) == sorted([*PLAN_CANDIDATES, *(space.baseline_name(n) for n in PLAN_CANDIDATES)])
    for name in PLAN_CANDIDATES:
        w, wb = W(task="sst2", student=name), W(task="sst2", student=space.baseline_name(name))
        settings, base = json.loads(p.student_settings(w)), json.loads(p.student_settings(wb))
        recipe = "kd" if name.startswith("search_kd_") else "lstm"
        assert settings["algorithm"] == PLAN_STUDENTS[recipe]["algorithm"]
        assert base["algorithm"] == "none" and base["architecture"] == settings["architecture"]
        assert "transfer" not in base
        peer = "base" if recipe == "kd" else "lbase"
        assert base["train"] == json.loads(p.student_settings(W(task="sst2", student=peer)))["train"]
        assert p.match_steps(w) == ""                                      # a candidate trains its own budget
        (steps,) = _steps(p.match_steps(wb))                               # its baseline: exactly its steps
        assert steps["student"] == name and steps["records"] == p.records_dir("sst2", name)
        assert steps["phases"] == [{"epochs": settings["train"]["epochs"],
                                    "batch_size": settings["train"]["batch_size"]}]
    assert json.loads(p.student_settings(W(task="sst2", student="search_kd_l2_h16_i32_a4")))["architecture"][
        "layers"] == 2
    assert p.is_lstm("search_lstm_h8_e8") and p.is_lstm("search_lstm_h8_e8_nokd")
    given = json.loads(p.search_candidates_json(W(task="sst2")))["candidates"]
    assert {c["name"] for c in given} == set(PLAN_CANDIDATES)
    # under equal_steps: false a candidate's baseline matches nothing
    off = make_plan(search={"target": SIZE, "space": PLAN_SPACE}, equal_steps=False)
    assert off.match_steps(W(task="sst2", student="search_kd_l1_h16_i32_a4_nokd")) == ""


def test_the_feasibility_stage_gets_the_candidates_in_the_searchs_seeded_order(make_plan):
    p = make_plan(search={"target": SIZE, "space": PLAN_SPACE})
    kept = names(p.candidates["sst2"][0])
    assert kept != sorted(kept)                       # (the seeded order is not the names' order)
    given = json.loads(p.search_candidates_json(W(task="sst2")))["candidates"]
    assert [c["name"] for c in given] == kept         # pick.feasible() and choose()'s ties follow this order


def test_an_empty_list_of_transfer_sets_is_an_error_that_names_it(make_plan):
    try:
        p = make_plan(search={"target": SIZE, "space": {**PLAN_SPACE, "transfer": []}})
    except ConfigError as exc:                        # refused by the schema, or
        message = str(exc)
    else:                                             # said when a search is asked for
        with pytest.raises(ConfigError) as caught:
            p.search_targets(W())
        message = str(caught.value)
    assert "search.space.transfer" in message


def test_a_search_changes_nothing_that_the_configured_students_train(make_plan):
    plain, searched = make_plan(), make_plan(search={"target": SIZE, "space": PLAN_SPACE})
    assert plain.search_tasks == [] and searched.search_tasks == ["sst2"]
    assert plain.runs == searched.runs and plain.models == searched.models
    assert list(searched.config["students"]) == list(PLAN_STUDENTS)           # the config keeps its students
    for student in PLAN_STUDENTS:
        w = W(task="sst2", student=student)
        assert plain.match_steps(w) == searched.match_steps(w)
        assert plain.student_settings(w) == searched.student_settings(w)
        assert plain.distill_inputs(w) == searched.distill_inputs(w)
    # the configured baselines still match their configured students alone
    assert [s["student"] for s in _steps(searched.match_steps(W(task="sst2", student="base")))] == ["kd"]
    assert [s["student"] for s in _steps(searched.match_steps(W(task="sst2", student="lbase")))] == ["lstm"]


def test_the_student_and_model_wildcards_accept_the_candidates(make_plan):
    p = make_plan(search={"target": SIZE, "space": PLAN_SPACE}, seeds=2)
    student, model = p.constraints["student"], p.constraints["model"]
    for name in PLAN_CANDIDATES:
        for run in (name, f"{name}_seed1", space.baseline_name(name), f"{space.baseline_name(name)}_seed1"):
            assert re.fullmatch(student, run), run
        assert re.fullmatch(model, name) and re.fullmatch(model, space.baseline_name(name))
    for configured in ("kd", "kd_seed1", "base"):
        assert re.fullmatch(student, configured)
    assert re.fullmatch(model, "teacher") and re.fullmatch(model, "kd")
    assert not re.fullmatch(student, "search_kd_l3_h16_i32_a4")                 # not of the space
    assert not re.fullmatch(model, "search_kd_l3_h16_i32_a4")
    plain = make_plan()
    assert not any(re.fullmatch(plain.constraints["student"], n) for n in PLAN_CANDIDATES)
    assert not any(re.fullmatch(plain.constraints["model"], n) for n in PLAN_CANDIDATES)


def test_a_configured_student_named_like_a_candidate_is_a_config_error(make_plan):
    with pytest.raises(ConfigError, match=r"^students\.search_x: the name is reserved"):
        make_plan({**PLAN_STUDENTS, "search_x": {"algorithm": "kd", "architecture": BERT}})


def test_the_search_target_without_a_target_says_what_to_set(make_plan):
    with pytest.raises(ConfigError, match=r"search\.target") as caught:
        make_plan(search={"space": PLAN_SPACE}).search_targets(W())
    assert "search.space.recipes" in str(caught.value) and "\n" not in str(caught.value)
    assert make_plan(search={"target": SIZE, "space": PLAN_SPACE}).search_targets(W()) == ["results/sst2/search.md"]


def test_a_mistake_in_a_tasks_own_space_or_a_space_without_candidates_is_said_by_the_search(make_plan):
    own = make_plan(search={"target": SIZE, "space": PLAN_SPACE,
                            "per_task": {"sst2": {"space": {"recipes": ["nobody"]}}}})
    assert own.searched == [] and own.runs == make_plan().runs             # a run that does not search goes on
    with pytest.raises(ConfigError, match=r"^config error at search\.per_task\.sst2\.space\.recipes: .*'nobody'"):
        own.search_targets(W())
    with pytest.raises(ConfigError, match=r"^config error at search\.space\.recipes: base is a baseline"):
        make_plan(search={"target": SIZE, "space": {**PLAN_SPACE, "recipes": ["base"]}}).search_targets(W())
    odd = {"recipes": ["kd"], "bert": {"layers": [1], "hidden": [18], "intermediate": [32], "heads": [4]}}
    with pytest.raises(ConfigError, match=r"no student of the space can learn from the teacher: "
                                          r"search_kd_l1_h18_i32_a4: hidden_size 18"):
        make_plan(search={"target": SIZE, "space": odd}).search_targets(W())


# ---- the pick ------------------------------------------------------------------------------------

def judged(target: dict, values: dict[str, tuple[float, bool]]) -> dict:
    """A feasibility JSON of candidates name -> (value of the target's metric, feasible), in order."""
    return {"target": target, "candidates": {n: {"value": v, "feasible": ok} for n, (v, ok) in values.items()}}


def scored(**scores) -> dict:
    return {n: {"score": s, "metric": "accuracy", "split": "validation", "collapsed": False}
            for n, s in scores.items()}


def test_the_pick_is_the_best_validation_score_among_the_feasible():
    feas = judged(SPEEDUP, {"search_a": (5.0, True), "search_b": (2.0, False), "search_c": (4.5, True)})
    chosen = pick.choose(feas, scored(search_a=0.80, search_b=0.95, search_c=0.85))
    assert chosen["pick"] == "search_c"                              # not b: it misses the target
    assert chosen["baseline"] == "search_c_nokd" and chosen["metric"] == "accuracy"
    assert list(chosen["scores"]) == ["search_a", "search_c"]        # the trained ones, in order
    assert pick.feasible(feas) == ["search_a", "search_c"]


def test_a_collapsed_candidate_cannot_be_the_pick():
    feas = judged(SPEEDUP, {"search_a": (5.0, True), "search_c": (4.5, True)})
    scores = scored(search_a=0.70, search_c=0.90)
    scores["search_c"]["collapsed"] = True
    assert pick.choose(feas, scores)["pick"] == "search_a"
    scores["search_a"]["collapsed"] = True
    with pytest.raises(DataError, match="predicts one class"):
        pick.choose(feas, scores)


def test_a_tie_goes_to_the_candidate_first_in_the_searchs_order():
    scores = scored(search_a=0.85, search_c=0.85, search_d=0.80)
    first_c = judged(SPEEDUP, {"search_c": (5.0, True), "search_d": (5.0, True), "search_a": (4.5, True)})
    assert pick.choose(first_c, scores)["pick"] == "search_c"
    first_a = judged(SPEEDUP, {"search_d": (5.0, True), "search_a": (4.5, True), "search_c": (5.0, True)})
    assert pick.choose(first_a, scores)["pick"] == "search_a"


def test_no_feasible_candidate_is_one_error_naming_the_closest():
    at_least = judged(SPEEDUP, {"search_far": (1.5, False), "search_near": (3.5, False), "search_mid": (2.5, False)})
    with pytest.raises(DataError) as caught:
        pick.choose(at_least, {})
    message = str(caught.value)
    assert "speedup_batch1 >= 4" in message and "(closest: search_near 3.5, search_mid 2.5, search_far 1.5)" \
        in message and "\n" not in message
    at_most = judged(SIZE, {"search_big": (9.0, False), "search_small": (1.2, False)})
    with pytest.raises(DataError, match=r"size_mb <= 1\.0 in kdlib \(closest: search_small 1\.2, search_big 9"):
        pick.choose(at_most, {})


def _summary(path: Path, selection) -> str:
    path.write_text(json.dumps({"best_score": 0.5, "selection": selection}), encoding="utf-8")
    return str(path)


def test_read_scores_takes_validation_selections_and_refuses_dev_or_none(tmp_path):
    good = _summary(tmp_path / "good.json", {"mode": "best", "split": "validation", "metric": "accuracy",
                                             "score": 0.875, "collapsed": True})
    assert pick.read_scores({"search_a": good}) == {
        "search_a": {"score": 0.875, "metric": "accuracy", "split": "validation", "collapsed": True}}
    dev = _summary(tmp_path / "dev.json", {"mode": "best", "split": "dev", "metric": "accuracy", "score": 0.9})
    with pytest.raises(DataError, match="search_b was selected on dev"):
        pick.read_scores({"search_a": good, "search_b": dev})
    for i, selection in enumerate(({"split": "validation", "metric": "accuracy", "score": None},
                                   {"split": "validation", "metric": "accuracy"}, None)):
        empty = _summary(tmp_path / f"empty{i}.json", selection)
        with pytest.raises(DataError, match="without a selection score; retrain search_c"):
            pick.read_scores({"search_c": empty})


# ---- feasibility: figures from given timings -----------------------------------------------------

def timing(latency: float, throughput: float, rounds: int = 3, **extra) -> dict:
    return {"latency_ms_batch1": latency, "throughput_batch32": throughput,
            "latency_rounds": [latency] * rounds, "throughput_rounds": [throughput] * rounds, **extra}


QUIET = {"busy": False, "others_cpu_share": 0.0, "usable_cpus": 2}


def measured_by_hand(machine=QUIET) -> dict:
    return {"teacher": timing(40.0, 100.0),
            "shapes": {"small": timing(10.0, 500.0, size_mb=5.0),
                       "large": {**timing(20.0, 150.0, size_mb=30.0), "latency_rounds": [20.0, 10.0, 30.0]}},
            "of": {"search_a": "small", "search_b": "large", "search_c": "small"},
            "rounds": 3, "latency_examples": 7, "throughput_examples": 32, "dev_examples": 48, "machine": machine}


def candidates_by_hand() -> dict:
    def spec(algorithm, layers, transfer=None):
        return {"algorithm": algorithm, "architecture": {**BERT, "layers": layers}, "transfer": transfer}
    return {"search_a": {"recipe": "kd", "spec": spec("kd", 1), "records": "r"},
            "search_b": {"recipe": "kd", "spec": spec("kd", 2, "extra"), "records": "r"},
            "search_c": {"recipe": "tiny", "spec": spec("tinybert", 1), "records": "r"}}


def test_figures_are_speed_ups_over_the_teacher_at_batch_1_and_32():
    teacher = timing(40.0, 100.0)
    assert feasibility.figures(timing(10.0, 500.0, size_mb=5.0), teacher) == {
        "latency_ms_batch1": 10.0, "throughput_batch32": 500.0, "speedup_batch1": 4.0, "speedup_batch32": 5.0,
        "size_mb": 5.0}
    slower = feasibility.figures(timing(80.0, 50.0, size_mb=1.0), teacher)
    assert (slower["speedup_batch1"], slower["speedup_batch32"]) == (0.5, 0.5)


@pytest.mark.parametrize("target, feasible", [
    ({"metric": "speedup_batch1", "bound": 4.0, "runtime": "kdlib"}, {"search_a", "search_c"}),   # 4.0: the bound
    ({"metric": "speedup_batch1", "bound": 1.5, "runtime": "kdlib"}, {"search_a", "search_b", "search_c"}),
    ({"metric": "speedup_batch32", "bound": 2.0, "runtime": "onnx_int8"}, {"search_a", "search_c"}),
    ({"metric": "throughput_batch32", "bound": 200.0, "runtime": "kdlib"}, {"search_a", "search_c"}),
    ({"metric": "latency_ms_batch1", "bound": 15.0, "runtime": "kdlib"}, {"search_a", "search_c"}),
    ({"metric": "latency_ms_batch1", "bound": 20.0, "runtime": "kdlib"}, {"search_a", "search_b", "search_c"}),
    ({"metric": "size_mb", "bound": 4.0, "runtime": "kdlib"}, set()),
    ({"metric": "size_mb", "bound": 30.0, "runtime": "onnx_int8"}, {"search_a", "search_b", "search_c"}),
])
def test_judge_gives_every_candidate_its_shapes_figures_and_whether_it_meets_the_target(target, feasible):
    skipped = {"search_z": "hidden_size 18 is not a multiple of num_attention_heads 4"}
    result = feasibility.judge(measured_by_hand(), candidates_by_hand(), target, skipped)
    out = result["candidates"]
    assert list(out) == ["search_a", "search_b", "search_c"]
    assert {n for n, c in out.items() if c["feasible"]} == feasible
    assert out["search_a"]["speedup_batch1"] == 4.0 and out["search_b"]["speedup_batch1"] == 2.0
    assert out["search_a"]["speedup_batch32"] == 5.0 and out["search_b"]["speedup_batch32"] == 1.5
    assert out["search_b"]["size_mb"] == 30.0 and out["search_c"]["latency_ms_batch1"] == 10.0
    for c in out.values():
        assert c["value"] == c[target["metric"]]
    assert (out["search_c"]["recipe"], out["search_c"]["algorithm"]) == ("tiny", "tinybert")
    assert out["search_b"]["transfer"] == "extra" and out["search_b"]["architecture"]["layers"] == 2
    # the large shape's latency rounds disagree (10 to 30 around 20); the rest is sound
    assert out["search_b"]["unreliable"] == ["latency"] and out["search_a"]["unreliable"] == []
    assert result["skipped"] == skipped and result["target"] == target
    assert result["reference"] == feasibility.REFERENCE[target["runtime"]]
    assert (result["validation_examples"], result["rounds"], result["latency_examples"],
            result["throughput_examples"]) == (48, 3, 7, 32)


def test_a_busy_machine_makes_every_figure_unreliable():
    busy = {**QUIET, "busy": True, "others_cpu_share": 0.6}
    result = feasibility.judge(measured_by_hand(busy), candidates_by_hand(), SIZE, {})
    assert all(c["unreliable"] == ["latency", "throughput"] for c in result["candidates"].values())


# ---- feasibility: one real measurement of untrained shapes ---------------------------------------

SMALL = {"layers": [1], "hidden": [16], "intermediate": [32], "heads": [4]}
LARGE = {"layers": [2], "hidden": [128], "intermediate": [512], "heads": [4]}


@pytest.fixture(scope="module")
def untrained_setup(tmp_path_factory):
    """A tiny teacher checkpoint, its records (48 validation rows), and three candidates in this
    runtime's backend (torch, or OneFlow in .venv-oneflow): kd and tinybert of one small shape, kd
    of a large one."""
    import importlib.util

    from kdlib import backend
    from kdlib.data.tasks import get_task
    from kdlib.models import checkpoint
    from kdlib.models.bert import BertConfig, build_bert

    root = tmp_path_factory.mktemp("search_measure")
    B = backend.load("torch" if importlib.util.find_spec("torch") else "oneflow", "cpu", "fp32")
    tinydata.write_records(root / "records", n_train=4, n_dev=48, seed=1)
    B.seed(0)
    checkpoint.save_checkpoint(build_bert(B, BertConfig(**tinydata.TINY_BERT)), root / "teacher",
                               {"task": "sst2", "labels": ["0", "1"]})
    students = {"kd": {"algorithm": "kd", "architecture": BERT},
                "tiny": {"algorithm": "tinybert", "architecture": BERT}}
    found = {}
    for shape in (SMALL, LARGE):
        cfg = validated(students, {"target": SIZE, "space": {"recipes": ["kd", "tiny"], "bert": shape}})
        kept, _ = space.candidates(cfg, "sst2", TEACHER)
        found.update({c.name: {"recipe": c.recipe, "records": str(root / "records"),
                               "spec": {k: c.student[k] for k in ("algorithm", "architecture", "transfer")}}
                      for c in kept})
    chosen = ["search_kd_l1_h16_i32_a4", "search_tiny_l1_h16_i32_a4", "search_kd_l2_h128_i512_a4"]
    return B, get_task("sst2"), root, {n: found[n] for n in chosen}


def _measure(setup, runtime: str) -> dict:
    B, task, root, candidates = setup
    return feasibility.measure(B, task, candidates, root / "teacher", root / "records", runtime, threads=1, rounds=1,
                               latency_examples=4, throughput_examples=32)


def test_measure_times_each_shape_once_beside_the_teacher_and_sizes_its_weights(untrained_setup):
    from kdlib.models import checkpoint
    B, task, root, candidates = untrained_setup
    measured = _measure(untrained_setup, "kdlib")
    small, tiny, large = candidates
    assert measured["of"] == {n: feasibility.shape_key(c["spec"]) for n, c in candidates.items()}
    assert measured["of"][small] == measured["of"][tiny] != measured["of"][large]   # kd and tinybert: one model
    assert set(measured["shapes"]) == {measured["of"][small], measured["of"][large]}
    sizes = {n: measured["shapes"][measured["of"][n]]["size_mb"] for n in candidates}
    assert sizes[large] > 10 * sizes[small] > 0
    for name in (small, large):                       # the size: the weights file the model folder ships, in MB
        c = candidates[name]
        with tempfile.TemporaryDirectory() as folder:
            checkpoint.save_checkpoint(feasibility.untrained(B, task, c["spec"], c["records"], root / "teacher"),
                                       folder)
            assert sizes[name] == (Path(folder) / checkpoint.WEIGHTS_FILE).stat().st_size / 1e6
    for t in (measured["teacher"], *measured["shapes"].values()):
        assert t["latency_ms_batch1"] > 0 and t["throughput_batch32"] > 0
    assert (measured["rounds"], measured["latency_examples"], measured["dev_examples"]) == (1, 4, 48)
    # judged against a size between the two shapes: the small shape's candidates alone are feasible
    bound = {"metric": "size_mb", "bound": (sizes[small] + sizes[large]) / 2, "runtime": "kdlib"}
    result = feasibility.judge(measured, candidates, bound, {})
    assert {n for n, c in result["candidates"].items() if c["feasible"]} == {small, tiny}
    assert result["candidates"][large]["architecture"]["hidden"] == 128


def test_measure_in_onnxruntime_int8_sizes_the_int8_graph(untrained_setup):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from kdlib.export.onnx import write_model
    B, task, root, candidates = untrained_setup
    small, tiny, large = candidates
    int8 = _measure(untrained_setup, "onnx_int8")
    fp32 = _measure(untrained_setup, "kdlib")
    assert set(int8["of"]) == set(candidates) and int8["of"] == fp32["of"]
    size = {n: int8["shapes"][int8["of"][n]]["size_mb"] for n in candidates}
    assert size[large] > size[small]
    c = candidates[large]
    with tempfile.TemporaryDirectory() as folder:
        written = write_model(feasibility.untrained(B, task, c["spec"], c["records"], root / "teacher"), folder)
    assert size[large] == pytest.approx(written["int8_bytes"] / 1e6, rel=0.01)
    # int8 weights: well under the fp32 safetensors of the same shape
    assert size[large] < 0.5 * fp32["shapes"][fp32["of"][large]]["size_mb"]
    for t in (int8["teacher"], *int8["shapes"].values()):
        assert t["latency_ms_batch1"] > 0 and t["throughput_batch32"] > 0


# ---- the report ----------------------------------------------------------------------------------

POINTS = [(10.0, 80.0, "a"), (20.0, 90.0, "b"), (15.0, 70.0, "c"), (30.0, 85.0, "d"), (20.0, 60.0, "e"),
          (25.0, 90.0, "f")]


def test_the_pareto_front_keeps_the_points_no_other_beats_in_both():
    # higher figure is better (a speed-up): f beats a, b (as accurate, faster), c and e; d is faster, less accurate
    assert report.pareto(POINTS, higher_is_better=True) == [(25.0, 90.0), (30.0, 85.0)]
    # lower is better (latency, size): a beats c, b beats d, e and f (as accurate, smaller)
    assert report.pareto(POINTS, higher_is_better=False) == [(10.0, 80.0), (20.0, 90.0)]
    assert report.pareto([(1.0, 50.0, "x"), (1.0, 50.0, "y")], True) == [(1.0, 50.0)]   # a tie: kept once
    assert report.pareto([(5.0, 50.0, "x")], False) == [(5.0, 50.0)]


def test_the_pick_is_remeasured_in_the_targets_runtime():
    speed_json = {"models": {"teacher": timing(40.0, 100.0), "search_a": timing(10.0, 300.0),
                             "search_a_nokd": timing(11.0, 280.0)}, "machine": QUIET}
    deployment = {"models": {"teacher": {"torch_fp32": timing(60.0, 80.0), "onnx_int8": timing(30.0, 160.0)},
                             "search_a": {"onnx_fp32": timing(12.0, 400.0), "onnx_int8": timing(6.0, 640.0)}},
                  "machine": QUIET}
    kdlib = report.remeasured({"metric": "speedup_batch1", "bound": 4.0, "runtime": "kdlib"}, "search_a",
                              speed_json, deployment, 2_500_000)
    assert (kdlib["speedup_batch1"], kdlib["speedup_batch32"], kdlib["latency_ms_batch1"]) == (4.0, 3.0, 10.0)
    assert kdlib["size_mb"] == 2.5 and kdlib["value"] == 4.0 and kdlib["meets"] is True
    assert kdlib["unreliable"] == []
    onnx = report.remeasured({"metric": "speedup_batch1", "bound": 12.0, "runtime": "onnx_int8"}, "search_a",
                             speed_json, deployment, 700_000)
    # the int8 pick over the eager PyTorch fp32 teacher (not the teacher's int8 graph, not the speed JSON)
    assert (onnx["speedup_batch1"], onnx["speedup_batch32"], onnx["throughput_batch32"]) == (10.0, 8.0, 640.0)
    assert onnx["size_mb"] == 0.7 and onnx["value"] == 10.0 and onnx["meets"] is False
    size = report.remeasured({"metric": "size_mb", "bound": 0.7, "runtime": "onnx_int8"}, "search_a",
                             speed_json, deployment, 700_000)
    assert size["value"] == 0.7 and size["meets"] is True
    busy = report.remeasured({"metric": "size_mb", "bound": 5, "runtime": "kdlib"}, "search_a",
                             {**speed_json, "machine": {**QUIET, "busy": True}}, deployment, 2_500_000)
    assert busy["unreliable"] == ["latency", "throughput"]


def test_the_page_warns_when_a_figure_measured_before_training_is_unreliable():
    teacher = {"latency_ms_batch1": 5.0, "throughput_batch32": 200.0, "latency_rounds": [5.0, 5.0],
               "throughput_rounds": [200.0, 200.0]}
    quiet = {"teacher": teacher, "machine": {"others_cpu_share": 0.01, "busy": False, "usable_cpus": 2},
             "target": {"metric": "speedup_batch1", "bound": 4, "runtime": "kdlib"},
             "candidates": {"a": {"unreliable": []}, "b": {"unreliable": []}}}
    assert report.caution(quiet) == ""
    busy = {**quiet, "machine": {"others_cpu_share": 0.5, "busy": True, "usable_cpus": 2},
            "candidates": {"a": {"unreliable": ["latency"]}, "b": {"unreliable": []}}}
    warning = report.caution(busy)
    assert "1 of 2 candidates" in warning and "50%" in warning and "--forcerun search_feasibility" in warning
    assert "which candidates met the target" in warning
    sized = report.caution({**busy, "target": {"metric": "size_mb", "bound": 4, "runtime": "kdlib"}})
    assert "does not depend on them" in sized and "which candidates met" not in sized
