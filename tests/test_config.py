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
    """Each key in config.yaml has a comment line right above it or on the same line
    (nested keys under a commented parent block count as commented by their own comment)."""
    lines = open("config.yaml").read().splitlines()
    keys = yaml.safe_load("\n".join(lines))
    assert keys
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or ":" not in stripped:
            continue
        above = lines[i - 1].strip() if i else ""
        assert above.startswith("#") or "#" in line or _is_parent(lines, i), \
            f"config.yaml line {i + 1} ({stripped}) has no comment"


def _is_parent(lines, i):
    """A mapping key whose children are indented below it (its block has a comment above)."""
    indent = len(lines[i]) - len(lines[i].lstrip())
    return lines[i].rstrip().endswith(":") and i + 1 < len(lines) and \
        len(lines[i + 1]) - len(lines[i + 1].lstrip()) > indent
