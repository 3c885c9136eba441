"""Fetch one GLUE task's raw TSVs into ``data/glue/<GLUE dir>/``.

Most tasks come as one zip under a base URL (a mirror, a local ``http.server`` or a ``file://``
folder can stand in for GLUE's own). The zip is checked (a valid zip, every CRC right, no member
that would land outside the target folder) before anything is written, only the needed split files
are taken, and each output is written atomically. MRPC is built the way GLUE's own script builds it:
the MSR paraphrase corpus's train file is split into train and dev by GLUE's list of dev id pairs.

Files placed by hand are used as they are: when every needed file exists, nothing is downloaded.
"""
from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import stat
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath
from typing import Callable

from tqdm import tqdm

from .errors import ConfigError, DataError, KdflowError
from .io import atomic_path
from .tasks import Task, get_task, glue_file

DEFAULT_BASE_URL = "https://dl.fbaipublicfiles.com/glue/data"
DEFAULT_MRPC_URL = "https://dl.fbaipublicfiles.com/senteval/senteval_data"

MRPC_TRAIN = "msr_paraphrase_train.txt"
MRPC_TEST = "msr_paraphrase_test.txt"
MRPC_DEV_IDS = "mrpc_dev_ids.tsv"
MRPC_HEADER = ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]

_CHUNK = 1 << 16


class DownloadError(KdflowError):
    """A file could not be fetched (offline, unreachable server, HTTP error)."""


def fetch_glue(task_name: str, out_root: str | Path, base_url: str, *, mrpc_url: str,
               timeout: float = 60, retries: int = 3, backoff: float = 1.0,
               log: Callable[[str], object] = print) -> list[Path]:
    """Make sure ``out_root/<glue_dir>/<split>.tsv`` exists for every split of ``task_name``.

    Returns the paths of those files, in ``task.splits`` order. ``retries`` is the number of tries
    in all (at least one); before try ``k + 1`` it sleeps ``backoff * 2**k`` seconds. Connection
    errors, timeouts and HTTP 5xx are retried; HTTP 4xx fails at once. Raises
    :class:`DownloadError` when a file cannot be fetched, :class:`DataError` for a bad archive and
    :class:`ConfigError` for a task that is not a GLUE download.
    """
    task = get_task(task_name)
    if task.name not in ("mrpc",) and task.archive is None:
        raise ConfigError(f"task {task.name!r} is not a GLUE download; "
                          "it is built by the prepare_builtin rule")
    out_root = Path(out_root)
    outputs = [glue_file(out_root, task, split) for split in task.splits]
    if all(p.is_file() for p in outputs):
        log(f"{task.name}: using the files already in {out_root / task.glue_dir}/; "
            "nothing downloaded")
        return outputs

    hint = _hand_hint(task, out_root)
    fetch = _Fetcher(timeout=timeout, tries=max(1, int(retries)), backoff=backoff, hint=hint)
    out_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download.", dir=out_root) as tmp:
        if task.archive is None:  # MRPC
            _fetch_mrpc(task, out_root, base_url, mrpc_url, Path(tmp), fetch, hint, log)
        else:
            url = _join(base_url, task.archive)
            zip_path = Path(tmp) / task.archive
            log(f"{task.name}: downloading {url}")
            fetch(url, zip_path)
            _extract_splits(task, zip_path, url, out_root, hint)
    log(f"{task.name}: wrote {', '.join(p.name for p in outputs)} in {out_root / task.glue_dir}/")
    return outputs


# --------------------------------------------------------------------------- download


def _join(base: str, name: str) -> str:
    """``base/name`` for a URL with or without a trailing slash; a bare folder becomes file://."""
    if "://" not in base:
        base = Path(base).resolve().as_uri()
    return base.rstrip("/") + "/" + name


def _hand_hint(task: Task, out_root: Path) -> str:
    names = [f"{s}.tsv" for s in task.splits]
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return f"place {listed} in {out_root / task.glue_dir}/ by hand and rerun"


def _reason(exc: BaseException, timeout: float) -> str:
    """A short lower-case reason for a failed try, on one line."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}".strip()
    if isinstance(exc, urllib.error.URLError):
        exc = exc.reason if isinstance(exc.reason, BaseException) else exc
        if not isinstance(exc, BaseException):
            return str(exc)
    if isinstance(exc, TimeoutError):
        return f"timed out after {timeout:g} s"
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    elif isinstance(exc, urllib.error.URLError):
        text = str(exc.reason)
    else:
        text = str(exc) or type(exc).__name__
    text = " ".join(text.split())
    return text[:1].lower() + text[1:]


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code >= 500
    return isinstance(exc, (urllib.error.URLError, OSError, http.client.HTTPException))


class _Fetcher:
    """Download one URL to a local file, with retries and a progress bar."""

    def __init__(self, *, timeout: float, tries: int, backoff: float, hint: str):
        self.timeout, self.tries, self.backoff, self.hint = timeout, tries, backoff, hint

    def __call__(self, url: str, dest: Path) -> None:
        local = urllib.parse.urlsplit(url).scheme == "file"
        tries = 1 if local else self.tries  # a missing local file will not appear by waiting
        for attempt in range(tries):
            try:
                self._once(url, dest)
                return
            except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
                reason = _reason(exc, self.timeout)
                if isinstance(exc, ValueError):  # malformed URL
                    raise DownloadError(f"could not download {url} ({exc}); {self.hint}") from None
                if not _retryable(exc) or attempt + 1 == tries:
                    after = f" after {tries} tries" if tries > 1 and _retryable(exc) else ""
                    raise DownloadError(
                        f"could not download {url} ({reason}{after}); {self.hint}") from None
                time.sleep(self.backoff * 2 ** attempt)

    def _once(self, url: str, dest: Path) -> None:
        with urllib.request.urlopen(url, timeout=self.timeout) as resp, open(dest, "wb") as fh:
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
                       desc=url.rsplit("/", 1)[-1], disable=total is None, leave=False)
            with bar:
                received = 0
                while chunk := resp.read(_CHUNK):
                    fh.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            if total is not None and received != total:
                raise http.client.IncompleteRead(b"", total - received)


# --------------------------------------------------------------------------- zip archives


def _member_escapes(info: zipfile.ZipInfo, root: Path) -> bool:
    """True when extracting ``info`` under ``root`` could write outside ``root``."""
    name = info.filename
    if stat.S_ISLNK(info.external_attr >> 16):
        return True
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or "\\" in name:
        return True
    if ".." in PurePosixPath(name).parts:
        return True
    target = (root / name).resolve()
    return target != root and root not in target.parents


def _find_member(names: list[str], wanted: str) -> str | None:
    """The member named ``wanted`` or ending in ``/wanted`` (shallowest first), else None."""
    hits = [n for n in names if (n == wanted or n.endswith("/" + wanted))
            and not n.startswith("__MACOSX/")]
    return min(hits, key=lambda n: (n.count("/"), n)) if hits else None


def _extract_splits(task: Task, zip_path: Path, url: str, out_root: Path, hint: str) -> None:
    """Check ``zip_path`` whole, then write each needed split file atomically."""
    archive = task.archive
    if not zipfile.is_zipfile(zip_path):
        raise DataError(f"{archive} from {url} is not a zip archive (corrupt or wrong file); "
                        f"{hint}")
    root = out_root.resolve()
    try:
        with zipfile.ZipFile(zip_path) as zf:
            bad = zf.testzip()
            if bad is not None:
                raise DataError(f"{archive} from {url} is corrupt: member {bad} fails its CRC "
                                f"check; {hint}")
            infos = zf.infolist()
            for info in infos:
                if _member_escapes(info, root):
                    raise DataError(f"{archive}: refusing to extract member {info.filename!r}, "
                                    f"which would land outside {out_root}/; nothing written")
            names = [i.filename for i in infos if not i.is_dir()]
            members = {}
            for split in task.splits:
                wanted = f"{task.glue_dir}/{split}.tsv"
                member = _find_member(names, wanted)
                if member is None:
                    raise DataError(f"{archive} from {url} has no {wanted}; {hint}")
                members[split] = member
            for split, member in members.items():
                with atomic_path(glue_file(out_root, task, split)) as tmp, \
                        zf.open(member) as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst, _CHUNK)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise DataError(f"{archive} from {url} is corrupt ({exc}); {hint}") from None


# --------------------------------------------------------------------------- MRPC


def _read_lines(path: Path, url: str) -> list[str]:
    """The file's lines, decoded as UTF-8 (a leading BOM dropped), without line ends."""
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"{url}: bytes that are not UTF-8 ({exc})") from None


def _fetch_mrpc(task: Task, out_root: Path, base_url: str, mrpc_url: str, tmp: Path,
                fetch: _Fetcher, hint: str, log: Callable[[str], object]) -> None:
    """Split the MSR paraphrase train file into GLUE's MRPC train.tsv and dev.tsv.

    A train row goes to dev.tsv when its ``(#1 ID, #2 ID)`` pair is in ``mrpc_dev_ids.tsv``.
    """
    sources = {MRPC_TRAIN: _join(mrpc_url, MRPC_TRAIN), MRPC_TEST: _join(mrpc_url, MRPC_TEST),
               MRPC_DEV_IDS: _join(base_url, MRPC_DEV_IDS)}
    for name, url in sources.items():
        log(f"{task.name}: downloading {url}")
        fetch(url, tmp / name)

    dev_ids = set()
    for lineno, line in enumerate(_read_lines(tmp / MRPC_DEV_IDS, sources[MRPC_DEV_IDS]), 1):
        if not line.strip():
            continue
        fields = line.strip().split("\t")
        if len(fields) != 2:
            raise DataError(f"{sources[MRPC_DEV_IDS]}:{lineno}: expected 'id1<TAB>id2', "
                            f"got {len(fields)} field(s)")
        dev_ids.add((fields[0], fields[1]))

    train_url = sources[MRPC_TRAIN]
    lines = _read_lines(tmp / MRPC_TRAIN, train_url)
    if not lines or lines[0].split("\t") != MRPC_HEADER:
        raise DataError(f"{train_url}: expected the header {chr(92)}t-separated "
                        f"{', '.join(MRPC_HEADER)}; {hint}")
    header = "\t".join(MRPC_HEADER) + "\n"
    train, dev = [header], [header]
    for lineno, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != len(MRPC_HEADER):
            raise DataError(f"{train_url}:{lineno}: expected {len(MRPC_HEADER)} tab-separated "
                            f"fields, got {len(fields)}")
        (dev if (fields[1], fields[2]) in dev_ids else train).append(line + "\n")
    if len(dev) == 1:
        raise DataError(f"{train_url}: none of the id pairs in {MRPC_DEV_IDS} occur in it; {hint}")
    if len(train) == 1:
        raise DataError(f"{train_url}: every row is a dev row, none left for train; {hint}")

    for split, rows in (("train", train), ("dev", dev)):
        with atomic_path(glue_file(out_root, task, split)) as out:
            with open(out, "w", encoding="utf-8", newline="\n") as fh:
                fh.writelines(rows)
