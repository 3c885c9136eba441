"""Fetch one GLUE task's raw TSVs into ``<out root>/<GLUE dir>/`` (the workflow's: data/download).

Most tasks come as one zip under a base URL (a mirror, a local ``http.server`` or a ``file://``
folder can stand in for GLUE's own). The zip is checked (a valid zip, no member that declares more
than :data:`MAX_MEMBER_BYTES` or would land outside the target folder, every CRC right) before
anything is written; only the needed split files are taken, a member that inflates to more than it
declares is refused, and the outputs appear together or not at all. MRPC is built the way GLUE's own
script builds it: the MSR paraphrase corpus's train file is split into train and dev by GLUE's list
of dev id pairs.

When every needed file already exists in the output folder, nothing is downloaded. Errors tell the
user to place the files by hand in the *hand root* (the workflow: ``data/glue/<GLUE dir>/``), which
this module never writes.
"""
from __future__ import annotations

import copy
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

from ..errors import ConfigError, DataError, KdflowError
from ..io import atomic_path
from .task import Task
from .tasks import get_task, glue_file

MRPC_TRAIN = "msr_paraphrase_train.txt"
MRPC_TEST = "msr_paraphrase_test.txt"
MRPC_DEV_IDS = "mrpc_dev_ids.tsv"
MRPC_HEADER = ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]
_MRPC_HEADER_LINE = "\t".join(MRPC_HEADER)

_CHUNK = 1 << 16
# The most a member of a GLUE zip may declare: GLUE's largest files (MNLI's and QQP's train.tsv) are
# a few hundred MB, so an archive that declares more is not GLUE (e.g. a decompression bomb).
MAX_MEMBER_BYTES = 2 << 30


class DownloadError(KdflowError):
    """A file could not be fetched (offline, unreachable server, HTTP error)."""


def fetch_glue(task_name: str, out_root: str | Path, base_url: str, *, mrpc_url: str,
               hand_root: str | Path | None = None, timeout: float = 60, retries: int = 3,
               backoff: float = 1.0, log: Callable[[str], object] = print) -> list[Path]:
    """Make sure ``out_root/<glue_dir>/<split>.tsv`` exists for every split of ``task_name``.

    If some are missing, all of them are (re)written from a fresh download. Error messages tell the
    user to place the files in ``hand_root/<glue_dir>/`` (default: ``out_root``). Returns the paths
    of those files, in ``task.splits`` order. Connection errors, timeouts and HTTP 5xx are retried
    up to ``retries`` times (``retries + 1`` tries in all), sleeping ``backoff * 2**k`` seconds
    before retry ``k = 0, 1, ...``; HTTP 4xx fails at once. Raises
    :class:`DownloadError` when a file cannot be fetched, :class:`DataError` for a bad archive and
    :class:`ConfigError` for a task that is not a GLUE download.
    """
    task = get_task(task_name)
    if task.archive is None and task.name != "mrpc":
        raise ConfigError(f"task {task.name!r} is not a GLUE download; "
                          "it is built by the prepare_builtin rule")
    out_root = Path(out_root)
    outputs = [glue_file(out_root, task, split) for split in task.splits]
    if all(p.is_file() for p in outputs):
        log(f"{task.name}: using the files already in {out_root / task.glue_dir}/; "
            "nothing downloaded")
        return outputs

    hint = _hand_hint(task, Path(out_root if hand_root is None else hand_root))
    fetch = _Fetcher(timeout=timeout, tries=1 + max(0, int(retries)), backoff=backoff, hint=hint)
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
    """A failed try's reason on one line, e.g. ``HTTP 404 Not Found``, ``connection refused``."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}".strip()
    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
        exc = exc.reason
    if isinstance(exc, TimeoutError):
        return f"timed out after {timeout:g} s"
    if isinstance(exc, http.client.IncompleteRead):
        return f"the connection closed {exc.expected} bytes before the end"
    if isinstance(exc, urllib.error.URLError):
        text = str(exc.reason)
    elif isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    else:
        text = str(exc) or type(exc).__name__
    text = " ".join(text.split())
    return text[:1].lower() + text[1:]


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code >= 500
    return isinstance(exc, (OSError, http.client.HTTPException))


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
            except ValueError as exc:  # a malformed URL
                raise DownloadError(f"could not download {url} ({exc}); {self.hint}") from None
            except (OSError, http.client.HTTPException) as exc:  # URLError is an OSError
                retry = _retryable(exc)
                if not retry or attempt + 1 == tries:
                    after = f" after {tries} tries" if retry and tries > 1 else ""
                    raise DownloadError(f"could not download {url} "
                                        f"({_reason(exc, self.timeout)}{after}); {self.hint}"
                                        ) from None
                time.sleep(self.backoff * 2 ** attempt)

    def _once(self, url: str, dest: Path) -> None:
        with urllib.request.urlopen(url, timeout=self.timeout) as resp, open(dest, "wb") as fh:
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            # leave=True: the bar ends its line, so the next one (an error line above all) starts
            # a line of its own in the console and in the stage's log
            bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
                       desc=url.rsplit("/", 1)[-1], disable=total is None, leave=True)
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
    """True when extracting ``info`` under ``root`` could write outside ``root``.

    Symlinks, absolute or drive-letter paths, backslashes and ``..`` parts all count as escapes.
    """
    name = info.filename
    if stat.S_ISLNK(info.external_attr >> 16):
        return True
    if name.startswith(("/", "\\")) or "\\" in name or (len(name) > 1 and name[1] == ":"):
        return True
    if ".." in PurePosixPath(name).parts:
        return True
    target = Path(os.path.normpath(root / name))
    return target != root and root not in target.parents


def _find_member(names: list[str], wanted: str) -> str | None:
    """The member named ``wanted`` or ending in ``/wanted`` (shallowest first), else None."""
    hits = [n for n in names if (n == wanted or n.endswith("/" + wanted))
            and not n.startswith("__MACOSX/")]
    return min(hits, key=lambda n: (n.count("/"), n)) if hits else None


def _extract_splits(task: Task, zip_path: Path, url: str, out_root: Path, hint: str) -> None:
    """Check ``zip_path`` whole, then write every needed split file, all of them or none."""
    archive = task.archive
    if not zipfile.is_zipfile(zip_path):
        raise DataError(f"{archive} from {url} is not a zip archive (corrupt or wrong file); "
                        f"{hint}")
    root = Path(os.path.abspath(out_root))
    staged = zip_path.parent  # a temporary folder beside the outputs
    try:
        with zipfile.ZipFile(zip_path) as zf:
            infos = zf.infolist()
            for info in infos:  # before testzip, which would inflate every member
                if info.file_size > MAX_MEMBER_BYTES:
                    raise DataError(f"{archive} from {url}: member {info.filename} declares "
                                    f"{info.file_size} bytes, more than any GLUE file "
                                    f"({MAX_MEMBER_BYTES} at most); nothing written; {hint}")
                if _member_escapes(info, root):
                    raise DataError(f"{archive}: refusing to extract member {info.filename!r}, "
                                    f"which would land outside {out_root}/; nothing written")
            bad = zf.testzip()
            if bad is not None:
                raise DataError(f"{archive} from {url} is corrupt: member {bad} fails its CRC "
                                f"check; {hint}")
            names = [i.filename for i in infos if not i.is_dir()]
            members = {}
            for split in task.splits:
                wanted = f"{task.glue_dir}/{split}.tsv"
                member = _find_member(names, wanted)
                if member is None:
                    raise DataError(f"{archive} from {url} has no {wanted}; {hint}")
                members[split] = zf.getinfo(member)
            for split, info in members.items():
                lying = DataError(f"{archive} from {url}: member {info.filename} inflates to more "
                                  f"than the {info.file_size} bytes it declares; nothing written; "
                                  f"{hint}")
                with zf.open(_one_byte_more(info)) as src, \
                        open(staged / f"{split}.tsv", "wb") as dst:
                    shutil.copyfileobj(_Declared(src, info.file_size, lying), dst, _CHUNK)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise DataError(f"{archive} from {url} is corrupt ({exc}); {hint}") from None
    for split in task.splits:
        target = glue_file(out_root, task, split)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged / f"{split}.tsv", target)


def _one_byte_more(info: zipfile.ZipInfo) -> zipfile.ZipInfo:
    """``info`` declaring one byte more, so that reading it shows whether the member holds more
    than it declares (zipfile would silently stop at the declared size)."""
    wider = copy.copy(info)
    wider.file_size += 1
    return wider


class _Declared:
    """A member's stream (opened through :func:`_one_byte_more`) that raises ``lying`` once more
    bytes come out than the member declares."""

    def __init__(self, src, size: int, lying: DataError):
        self.src, self.size, self.lying, self.seen = src, size, lying, 0

    def read(self, n: int = -1) -> bytes:
        try:
            data = self.src.read(n)
        except zipfile.BadZipFile:  # testzip checked the CRC of the declared bytes: more came
            raise self.lying from None
        self.seen += len(data)
        if self.seen > self.size:
            raise self.lying
        return data


# --------------------------------------------------------------------------- MRPC


def _lines(path: Path, url: str) -> list[str]:
    """The file's lines as UTF-8 text (a leading BOM dropped), without line ends."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{url}: bytes that are not UTF-8 ({exc})") from None
    lines = [line.rstrip("\r") for line in text.split("\n")]  # not splitlines: \x0c etc. stay
    return lines[:-1] if lines and lines[-1] == "" else lines


def _msr_rows(path: Path, url: str, hint: str) -> list[list[str]]:
    """The data rows of an MSR paraphrase file (the five-column header checked and dropped)."""
    lines = _lines(path, url)
    if not lines or lines[0].split("\t") != MRPC_HEADER:
        raise DataError(f"{url}: the first line is not the MSR corpus header "
                        f"{_MRPC_HEADER_LINE!r}; {hint}")
    rows = []
    for lineno, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != len(MRPC_HEADER):
            raise DataError(f"{url}:{lineno}: expected {len(MRPC_HEADER)} tab-separated fields, "
                            f"got {len(fields)}")
        rows.append(fields)
    return rows


def _dev_ids(path: Path, url: str) -> set[tuple[str, str]]:
    """GLUE's MRPC dev id pairs: one ``id1<TAB>id2`` a line, no header."""
    ids = set()
    for lineno, line in enumerate(_lines(path, url), 1):
        fields = line.strip().split("\t")
        if fields == [""]:
            continue
        if len(fields) != 2:
            raise DataError(f"{url}:{lineno}: expected 'id1<TAB>id2', got {len(fields)} field(s)")
        ids.add((fields[0], fields[1]))
    return ids


def _write_tsv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as fh:
        fh.writelines("\t".join(r) + "\n" for r in [header, *rows])


def _fetch_mrpc(task: Task, out_root: Path, base_url: str, mrpc_url: str, tmp: Path,
                fetch: _Fetcher, hint: str, log: Callable[[str], object]) -> None:
    """Build GLUE's MRPC ``train.tsv``, ``dev.tsv`` and ``test.tsv`` from the MSR corpus.

    A row of ``msr_paraphrase_train.txt`` goes to dev.tsv when its ``(#1 ID, #2 ID)`` pair is in
    ``mrpc_dev_ids.tsv``, else to train.tsv; both keep the corpus's header. test.tsv is the test
    file with GLUE's ``index`` column in place of the label.
    """
    urls = {MRPC_TRAIN: _join(mrpc_url, MRPC_TRAIN), MRPC_TEST: _join(mrpc_url, MRPC_TEST),
            MRPC_DEV_IDS: _join(base_url, MRPC_DEV_IDS)}
    for name, url in urls.items():
        log(f"{task.name}: downloading {url}")
        fetch(url, tmp / name)

    dev_ids = _dev_ids(tmp / MRPC_DEV_IDS, urls[MRPC_DEV_IDS])
    rows = _msr_rows(tmp / MRPC_TRAIN, urls[MRPC_TRAIN], hint)
    test = _msr_rows(tmp / MRPC_TEST, urls[MRPC_TEST], hint)
    dev = [r for r in rows if (r[1], r[2]) in dev_ids]
    train = [r for r in rows if (r[1], r[2]) not in dev_ids]
    if not dev:
        raise DataError(f"{urls[MRPC_TRAIN]}: none of the id pairs in {MRPC_DEV_IDS} occur in it; "
                        f"{hint}")
    if not train:
        raise DataError(f"{urls[MRPC_TRAIN]}: every row is a dev row, none left for train; {hint}")

    _write_tsv(glue_file(out_root, task, "train"), MRPC_HEADER, train)
    _write_tsv(glue_file(out_root, task, "dev"), MRPC_HEADER, dev)
    _write_tsv(glue_file(out_root, task, "test"), ["index", *MRPC_HEADER[1:]],
               [[str(i), *r[1:]] for i, r in enumerate(test)])
