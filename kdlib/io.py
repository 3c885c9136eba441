"""Atomic file and folder writes: a crash never leaves a half-written output behind."""
from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import shutil
import sys
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    On any exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())   # mkstemp makes 0600; outputs get the usual permissions
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _usual_permissions(folder: Path) -> None:
    """Give every file under ``folder`` the permissions the umask allows (rw for all it lets
    through): some writers, safetensors among them, create their files 0600."""
    mode = 0o666 & ~_umask()
    for root, _, files in os.walk(folder):
        for name in files:
            os.chmod(os.path.join(root, name), mode)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike):
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` whole, its files
    with the usual permissions."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        _usual_permissions(tmp)
        if path.exists() or path.is_symlink():
            old = path.with_name(f".{path.name}.old")
            remove(old)
            os.replace(path, old)               # a link is moved as a link, and then unlinked
            os.replace(tmp, path)
            remove(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_json(path: str | os.PathLike):
    """A JSON file's content; a missing or unreadable file is one DataError naming it."""
    import json

    from .errors import DataError
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable JSON file ({exc})") from None


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def remove(path: str | os.PathLike) -> None:
    """Delete ``path`` without ever following a link: a link (to a folder too) is unlinked and what
    it points to is left alone; a folder goes with everything in it (``shutil.rmtree`` unlinks the
    links inside, never entering them). Nothing there is fine."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def own_folder(path: str | os.PathLike) -> bool:
    """Make ``path`` a folder of its own, to write and later delete: a link there (to a folder
    elsewhere, or to nothing) is unlinked, never followed, and a real folder made in its place.
    Returns whether a link was replaced."""
    path = Path(path)
    linked = path.is_symlink()
    if linked:
        print(f"{path} was a link to {os.readlink(path)}; replaced by a folder of its own (what the "
              "link points to is left alone)", file=sys.stderr)
        remove(path)
    path.mkdir(parents=True, exist_ok=True)
    return linked


def remove_orphans(folder: str | os.PathLike) -> None:
    """Delete what killed atomic writes left in ``folder``: ``.<name>.*.tmp`` files and folders.
    Only for a folder that one job owns (a training job's work folder, :func:`own_folder`); a
    link is never entered."""
    folder = Path(folder)
    if folder.is_symlink():
        return
    for item in folder.glob(".*.tmp"):
        remove(item)


LOCK_FILE = ".lock"


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike):
    """Hold ``folder`` (a job's work folder, made :func:`own_folder`) for as long as the block
    runs: an exclusive ``flock`` on its ``.lock`` file, which the system releases when this process
    ends, however it ends. While another process holds it this is one KdflowError naming the
    folder and that process's id (written into the file): two jobs never share a work folder."""
    import fcntl

    from .errors import KdflowError
    folder = Path(folder)
    own_folder(folder)
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise KdflowError(f"{folder} is in use by another running job (pid {pid}); wait for it "
                              "or stop it (docs/configuring.md, Troubleshooting)") from None
        except OSError as exc:                   # a file system without locks (Lustre without flock)
            print(f"warning: cannot lock {folder} ({exc.strerror}); nothing stops a second job from "
                  "using it at the same time", file=sys.stderr)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)                             # releases the lock


def check_writable(folder: str | os.PathLike, what: str = "output folder") -> None:
    """Fail early, as one DataError line, when ``folder`` (or the folder beside which it will be
    written atomically) cannot be created or written: before hours of training, not after."""
    from .errors import DataError

    folder = Path(folder)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        if folder.exists() and not folder.is_dir():
            raise DataError(f"{folder}: the {what} is a file, not a folder; remove it and rerun")
        for place in (folder.parent, folder) if folder.exists() else (folder.parent,):
            probe = tempfile.mkdtemp(prefix=".kdflow-write-check.", suffix=".tmp", dir=place)
            os.rmdir(probe)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise DataError(f"{folder}: cannot write the {what} there ({reason})") from None


def start_over(folder: str | os.PathLike) -> None:
    """Remove the model folder a stage is about to replace whole, so that a job that fails leaves
    none of the old one (Snakemake removes only the files a rule declares; a folder's tokenizer
    file is not among them). A link there is unlinked, never followed (:func:`remove`)."""
    remove(folder)


def file_digest(path: str | os.PathLike) -> str:
    """The SHA-256 digest (hex) of a file's content (what ``sha256sum`` prints); remembered per
    process for a file whose size and modification time have not changed."""
    path = Path(path)
    info = path.stat()
    return _digest(str(path.resolve()), info.st_size, info.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def portable_path(path: str | os.PathLike) -> str:
    """``path`` relative to the working directory when it lies under it, else its file name: a
    name that stays true when the checkout moves or is shared (records' metadata)."""
    full, here = Path(os.path.abspath(path)), Path(os.path.abspath(os.curdir))
    return full.relative_to(here).as_posix() if here in full.parents else full.name


def folder_tokenizer(folder: str | Path) -> Path | None:
    """The tokenizer file of a HuggingFace model folder: its ``tokenizer.json`` (exactly what the
    model was trained with), else its ``vocab.txt``; None when it has neither. (Here, not in
    ``data`` or ``models``: both read model folders' tokenizers, and neither imports the other.)"""
    return next((Path(folder) / n for n in ("tokenizer.json", "vocab.txt") if (Path(folder) / n).is_file()), None)
