"""A fine-tuned classifier as the teacher (config ``teacher.finetuned``): what its HuggingFace
folder must hold, its labels against the task's, which encoder families kdlib runs itself, and the
BERT widths a student from scratch follows. Pure Python: the Snakefile asks it before any job runs.

A folder is ``config.json`` (``model_type``, ``id2label``), ``model.safetensors`` and a tokenizer
that the ``tokenizers`` library reads (``tokenizer.json``, or a BERT ``vocab.txt``). kdlib's own
BERT runs a ``bert``, ``roberta`` or ``xlm-roberta`` folder on either backend (so the layer-based
recipes can use it); every other family runs through
``transformers.AutoModelForSequenceClassification`` in the torch runtime
(:mod:`kdlib.models.hf_teacher`).
"""
from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError, DataError
from ..io import folder_tokenizer, read_json

KDLIB_FAMILIES = ("bert", "roberta", "xlm-roberta")    # model_type values kdlib's BERT loads
ROBERTA_FAMILIES = ("roberta", "xlm-roberta")          # positions from pad_token_id + 1, no pooler
# what the HuggingFace configs of other families call BERT's widths
_ALIASES = {"hidden_size": ("hidden_size", "dim", "d_model"),
            "num_attention_heads": ("num_attention_heads", "n_heads", "encoder_attention_heads"),
            "intermediate_size": ("intermediate_size", "hidden_dim", "encoder_ffn_dim"),
            "num_hidden_layers": ("num_hidden_layers", "n_layers", "encoder_layers")}
_PICKLES = ("pytorch_model.bin", "tf_model.h5", "model.ckpt.index", "flax_model.msgpack")


def check_folder(folder: str | Path, where: str = "teacher.finetuned") -> dict:
    """The folder's config.json, once the folder holds what a fine-tuned teacher needs; each
    problem is one ConfigError line: no folder, no config, pickle-only weights (never unpickled),
    no tokenizer, no labels."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"{where}: {folder} is not a folder")
    if not (folder / "config.json").is_file():
        raise ConfigError(f"{where}: {folder} has no config.json; give the folder that "
                          "save_pretrained() wrote")
    if not (folder / "model.safetensors").is_file():
        pickles = [name for name in _PICKLES if (folder / name).exists()]
        if pickles:
            raise ConfigError(
                f"{where}: {folder} holds {pickles[0]} but no model.safetensors; kdflow never "
                "unpickles weights: convert it once with transformers, AutoModelForSequenceClassification"
                f".from_pretrained('{folder}').save_pretrained('{folder}', safe_serialization=True)")
        raise ConfigError(f"{where}: {folder} has no model.safetensors")
    write_one = f"AutoTokenizer.from_pretrained('{folder}').save_pretrained('{folder}')"
    if folder_tokenizer(folder) is None:
        raise ConfigError(f"{where}: {folder} has no tokenizer.json (or BERT vocab.txt); write one with {write_one}")
    if not (folder / "tokenizer.json").is_file() and _cased(folder):
        raise ConfigError(f"{where}: {folder} has a cased vocab.txt but no tokenizer.json, and kdflow reads a "
                          f"bare vocab.txt as uncased WordPiece; write a tokenizer.json with {write_one}")
    try:
        config = read_json(folder / "config.json")
    except DataError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        raise ConfigError(f"{where}: {folder / 'config.json'} names no model_type; "
                          "is it a HuggingFace model folder?")
    teacher_labels(config, folder, where)
    return config


def _cased(folder: Path) -> bool:
    """Whether the folder's tokenizer_config.json says its WordPiece keeps case."""
    path = folder / "tokenizer_config.json"
    try:
        return path.is_file() and read_json(path).get("do_lower_case") is False
    except (DataError, AttributeError):
        return False


def teacher_labels(config: dict, folder: str | Path = "", where: str = "teacher.finetuned") -> list[str]:
    """The teacher's output columns by name, from config.json's ``id2label`` (ids 0..C-1)."""
    id2label = config.get("id2label")
    if not isinstance(id2label, dict) or not id2label:
        raise ConfigError(f"{where}: {Path(folder) / 'config.json'} has no id2label; "
                          "a fine-tuned classifier names its labels there")
    try:
        by_id = {int(k): str(v) for k, v in id2label.items()}
    except ValueError:
        raise ConfigError(f"{where}: {Path(folder) / 'config.json'}: id2label keys must be integers") from None
    if sorted(by_id) != list(range(len(by_id))):
        raise ConfigError(f"{where}: {Path(folder) / 'config.json'}: id2label ids must be 0..{len(by_id) - 1}")
    return [by_id[i] for i in range(len(by_id))]


def label_order(config: dict, task_labels: list, regression: bool, label_map: dict | None = None,
                where: str = "teacher.finetuned") -> list[int]:
    """For each of the task's labels in order, the teacher's output column that holds it: labels
    match by name, case-insensitively, after ``label_map`` (teacher name -> task name). A mismatch,
    another number of labels, or a classifier for a regression task (or back) is one ConfigError
    that names both label lists."""
    names = teacher_labels(config, where=where)
    regression_teacher = config.get("problem_type") == "regression" or (
        len(names) == 1 and config.get("problem_type") != "single_label_classification")
    if regression:
        if not regression_teacher:
            raise ConfigError(f"{where}: the task is a regression (one score), but the teacher is a "
                              f"classifier of {len(names)} labels ({', '.join(names)})")
        return [0]
    task_names = [str(label) for label in task_labels]
    if regression_teacher:
        raise ConfigError(f"{where}: the teacher regresses one score, but the task classifies "
                          f"{len(task_names)} labels ({', '.join(task_names)})")
    label_map = {str(k).lower(): str(v) for k, v in (label_map or {}).items()}
    renamed = [label_map.get(n.lower(), n).lower() for n in names]
    wanted = [n.lower() for n in task_names]
    if sorted(renamed) != sorted(wanted) or len(set(renamed)) != len(renamed):
        shown = ", ".join(names) + (f" (renamed: {', '.join(renamed)})" if label_map else "")
        raise ConfigError(f"{where}: the teacher's labels [{shown}] are not the task's "
                          f"[{', '.join(task_names)}]; rename them with teacher.label_map")
    return [renamed.index(n) for n in wanted]


def width(config: dict, key: str):
    """A BERT width (``hidden_size``, ``num_attention_heads``, ...) under any family's name."""
    for alias in _ALIASES.get(key, (key,)):
        if isinstance(config.get(alias), int):
            return config[alias]
    return None


def student_shape(config: dict, vocab_size: int) -> dict:
    """The BERT config fields a student from scratch takes from a teacher of any family: its
    widths, and the vocabulary of the tokenizer the records were made with."""
    shape = {key: width(config, key) for key in _ALIASES}
    missing = [k for k, v in shape.items() if v is None]
    if missing:
        raise ConfigError(f"the teacher's config.json (model_type {config.get('model_type')}) names no "
                          f"{', '.join(missing)}; give the student's architecture widths")
    positions = config.get("max_position_embeddings")
    return {**shape, "vocab_size": int(vocab_size), "type_vocab_size": 2,
            "max_position_embeddings": positions if isinstance(positions, int) and positions >= 64 else 512}


def tokenizer_size(path: str | Path) -> int:
    """The ids a tokenizer file can give: a tokenizer.json's vocabulary with its added tokens, or
    the lines of a vocab.txt (an embedding of this many rows holds every id)."""
    path = Path(path)
    if path.name == "tokenizer.json":
        from tokenizers import Tokenizer
        try:
            return Tokenizer.from_file(str(path)).get_vocab_size(with_added_tokens=True)
        except Exception as exc:        # tokenizers raises a bare Exception for a bad file
            raise ConfigError(f"{path}: not a tokenizer.json that the tokenizers library reads ({exc})") from None
    return len(path.read_text(encoding="utf-8").splitlines())


def vocabulary(path: str | Path) -> dict[str, int]:
    """token -> id of a tokenizer.json or a vocab.txt."""
    path = Path(path)
    if path.name == "tokenizer.json":
        from tokenizers import Tokenizer
        return Tokenizer.from_file(str(path)).get_vocab(with_added_tokens=True)
    return {t: i for i, t in enumerate(path.read_text(encoding="utf-8").splitlines())}


def kdlib_fields(config: dict) -> dict:
    """A HuggingFace config of a family kdlib runs, with what kdlib's BertConfig needs besides its
    own names: RoBERTa's ``position_offset`` (its positions start at ``pad_token_id + 1``)."""
    if config.get("model_type") in ROBERTA_FAMILIES and "position_offset" not in config:
        return {**config, "position_offset": int(config.get("pad_token_id", 1)) + 1}
    return config


def runs_in_kdlib(config: dict) -> bool:
    """Whether kdlib's own BERT loads this teacher (on either backend), else transformers does."""
    return config.get("model_type") in KDLIB_FAMILIES
