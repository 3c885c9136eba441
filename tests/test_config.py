"""config.yaml and its schema: defaults, unknown keys, wrong types, key paths in errors."""
import pytest
import yaml

from kdlib import config
from kdlib.errors import ConfigError


def test_shipped_config_is_valid_and_documented():
    cfg = config.load("config.yaml")
    assert cfg["backend"] in ("auto", "oneflow", "torch")
    assert config.max_length(cfg, "tweets") == 64
    assert config.max_length(cfg, "sst2") == 128


def _walk(schema, path=""):
    if schema.get("type") == "object" or "properties" in schema:
        for key, sub in schema.get("properties", {}).items():
            yield f"{path}{key}", sub
            yield from _walk(sub, f"{path}{key}.")


def test_every_schema_key_has_description_and_default_and_objects_are_closed():
    schema = config.schema()
    assert schema["additionalProperties"] is False
    for key, sub in _walk(schema):
        assert sub.get("description"), f"{key} has no description"
        assert "default" in sub, f"{key} has no default"
        if sub.get("type") == "object" and "properties" in sub:
            assert sub.get("additionalProperties") is False, f"{key} accepts unknown keys"


def test_empty_config_gets_defaults():
    cfg = config.validate({})
    assert cfg["backend"] == "auto" and cfg["data"]["lstm"]["vocab_size"] == 10000


@pytest.mark.parametrize("override, path", [
    ({"backend": "jax"}, "backend"),
    ({"data": {"retries": "many"}}, "data.retries"),
    ({"data": {"max_length": {"tweets": "long"}}}, "data.max_length.tweets"),
    ({"data": {"bogus": 1}}, "data"),
    ({"tasks": ["sst3"]}, "tasks.0"),
    ({"compile": "yes"}, "compile"),
    ({"students_train": {"save_seconds": -1}}, "students_train.save_seconds"),
    ({"speed": {"throughput_examples": -5}}, "speed.throughput_examples"),
])
def test_bad_values_name_the_key_path(override, path):
    with pytest.raises(ConfigError, match=rf"config error at {path}:"):
        config.load("config.yaml", override)


def test_unreadable_config_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        config.load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("backend: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load(bad)


def test_config_yaml_comments_every_key():
    """Each key in config.yaml has a comment: on its line, right above it, or (for the keys of an
    override block such as teacher.per_task.tweets) on the block's own line."""
    lines = open("config.yaml").read().splitlines()
    assert yaml.safe_load("\n".join(lines))
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or ":" not in stripped:
            continue
        assert _commented(lines, i) or _commented(lines, _parent(lines, i)), \
            f"config.yaml line {i + 1} ({stripped}) has no comment"


def _commented(lines, i):
    return i is not None and ("#" in lines[i] or (i > 0 and lines[i - 1].strip().startswith("#")))


def _parent(lines, i):
    """The nearest key line above with a smaller indent (the block that holds line i)."""
    indent = len(lines[i]) - len(lines[i].lstrip())
    for j in range(i - 1, -1, -1):
        text = lines[j]
        if text.strip() and not text.strip().startswith("#") and len(text) - len(text.lstrip()) < indent:
            return j
    return None


def test_command_line_strings_are_retyped():
    """Nested `snakemake --config` values arrive as strings; they must validate as numbers."""
    raw = {"data": {"retries": "0", "timeout_s": "2.5", "glue_url": "http://127.0.0.1:8000"},
           "teacher": {"per_task": {"sst2": {"lr": "3e-5", "epochs": "null"}}}}
    cfg = config.validate(config.retype(raw))
    assert cfg["data"]["retries"] == 0 and cfg["data"]["timeout_s"] == 2.5
    assert cfg["data"]["glue_url"] == "http://127.0.0.1:8000"
    assert cfg["teacher"]["per_task"]["sst2"]["lr"] == 3e-5
    assert config.teacher_train(cfg, "sst2")["epochs"] == cfg["teacher"]["train"]["epochs"]
