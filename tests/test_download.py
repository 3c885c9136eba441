"""kdlib.data.download and the download_glue stage, against a local http.server started by each test."""
from __future__ import annotations

import io
import os
import random
import re
import socket
import stat
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import pytest
from localhttp import dead_port, serve

import kdlib.data.download as dl
from kdlib.data.download import DownloadError, fetch_glue
from kdlib.data.tasks import get_task, read_split
from kdlib.errors import ConfigError, DataError, KdflowError
from workflow_scripts import download_glue

WORDS = "the a movie film plot actor great awful boring fine tender dull witty slow bright".split()


# --------------------------------------------------------------------------- helpers


def sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9)))


def sst2_files(seed: int = 0) -> dict[str, str]:
    rng = random.Random(seed)
    train = "sentence\tlabel\n" + "".join(f"{sentence(rng)}\t{rng.randint(0, 1)}\n"
                                          for _ in range(40))
    dev = "sentence\tlabel\n" + "".join(f"{sentence(rng)}\t{rng.randint(0, 1)}\n"
                                        for _ in range(12))
    test = "index\tsentence\n" + "".join(f"{i}\t{sentence(rng)}\n" for i in range(7))
    return {"SST-2/train.tsv": train, "SST-2/dev.tsv": dev, "SST-2/test.tsv": test,
            "SST-2/original/README.txt": "the original trees\n"}


def mnli_files(seed: int = 1) -> dict[str, str]:
    rng = random.Random(seed)
    labels = ["contradiction", "entailment", "neutral"]

    def table(n):
        return "index\tsentence1\tsentence2\tgold_label\n" + "".join(
            f"{i}\t{sentence(rng)}\t{sentence(rng)}\t{rng.choice(labels)}\n" for i in range(n))
    return {"MNLI/train.tsv": table(30), "MNLI/dev_matched.tsv": table(9),
            "MNLI/dev_mismatched.tsv": table(8), "MNLI/test_matched.tsv": table(5)}


def make_zip(path: Path, members: dict[str, str], *, dirs: bool = True,
             compression: int = zipfile.ZIP_DEFLATED) -> Path:
    """A zip holding ``members`` (name -> text), with folder entries like GLUE's zips."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression) as zf:
        if dirs:
            for folder in sorted({m.split("/")[0] + "/" for m in members if "/" in m}):
                zf.writestr(folder, "")
        for name, text in members.items():
            zf.writestr(name, text)
    return path


def declare(path: Path, member: str, size: int, crc: int) -> None:
    """Rewrite ``member``'s local and central headers to declare ``size`` bytes and ``crc``."""
    data = bytearray(path.read_bytes())
    name = member.encode()
    with zipfile.ZipFile(path) as zf:
        local = zf.getinfo(member).header_offset
    central = next(m.start() for m in re.finditer(rb"PK\x01\x02", data)
                   if data[m.start() + 46:m.start() + 46 + len(name)] == name)
    for crc_at, size_at in ((local + 14, local + 22), (central + 16, central + 24)):
        struct.pack_into("<I", data, crc_at, crc)
        struct.pack_into("<I", data, size_at, size)
    path.write_bytes(bytes(data))


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


@pytest.fixture
def no_sleep(monkeypatch):
    """Record the backoff sleeps instead of sleeping."""
    sleeps = []
    monkeypatch.setattr(dl.time, "sleep", sleeps.append)
    return sleeps


# --------------------------------------------------------------------------- success


@pytest.mark.parametrize("task, members", [("sst2", sst2_files()), ("mnli", mnli_files())])
def test_download_extracts_needed_splits(tmp_path, task, members, capsys):
    site, out = tmp_path / "site", tmp_path / "glue"
    make_zip(site / get_task(task).archive, members)
    with serve(site) as (server, url):
        paths = fetch_glue(task, out, url + "/", mrpc_url=url, log=lambda m: None)
    glue_dir = get_task(task).glue_dir
    assert server.requests == [f"/{get_task(task).archive}"]
    assert paths == [out / glue_dir / f"{s}.tsv" for s in get_task(task).splits]
    for p in paths:
        assert p.read_text(encoding="utf-8") == members[f"{glue_dir}/{p.name}"]
    # only the needed splits, and no temp file (zip or partial output) left behind
    assert files_under(out) == sorted(paths)
    assert [p.name for p in out.iterdir()] == [glue_dir]
    for p in paths:  # the files read as the task expects
        assert sum(len(c) for c in read_split(get_task(task), p)) == \
            members[f"{glue_dir}/{p.name}"].count("\n") - 1
    assert get_task(task).archive in capsys.readouterr().err  # tqdm's bar names the download


def test_file_url_and_archive_renaming_to_glue_dir(tmp_path):
    """QQP-clean.zip holds QQP/...; a file:// base URL (no trailing slash) works too."""
    site, out = tmp_path / "site", tmp_path / "glue"
    header = "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
    members = {"QQP/train.tsv": header + "0\t1\t2\twhy a\twhy b\t1\n",
               "QQP/dev.tsv": header + "1\t3\t4\thow a\thow b\t0\n",
               "QQP/test.tsv": "id\tquestion1\tquestion2\n0\tq\tr\n"}
    make_zip(site / "QQP-clean.zip", members)
    paths = fetch_glue("qqp", out, site.as_uri(), mrpc_url="unused", log=lambda m: None)
    assert [p.relative_to(out).as_posix() for p in paths] == ["QQP/train.tsv", "QQP/dev.tsv"]
    assert [p.read_text() for p in paths] == [members["QQP/train.tsv"], members["QQP/dev.tsv"]]
    # a bare local folder works as a base too
    again = fetch_glue("qqp", tmp_path / "glue2", str(site), mrpc_url="unused", log=lambda m: None)
    assert [p.read_text() for p in again] == [p.read_text() for p in paths]


def test_files_placed_by_hand_make_no_request(tmp_path):
    site, out = tmp_path / "site", tmp_path / "glue"
    make_zip(site / "SST-2.zip", sst2_files())
    (out / "SST-2").mkdir(parents=True)
    (out / "SST-2" / "train.tsv").write_text("sentence\tlabel\nmine\t1\n")
    (out / "SST-2" / "dev.tsv").write_text("sentence\tlabel\nmine too\t0\n")
    logs = []
    with serve(site) as (server, url):
        paths = fetch_glue("sst2", out, url, mrpc_url=url, log=logs.append)
    assert server.requests == []
    assert len(logs) == 1 and "nothing downloaded" in logs[0]
    assert paths[0].read_text() == "sentence\tlabel\nmine\t1\n"


def test_a_missing_split_triggers_the_download(tmp_path):
    site, out = tmp_path / "site", tmp_path / "glue"
    members = mnli_files()
    make_zip(site / "MNLI.zip", members)
    (out / "MNLI").mkdir(parents=True)
    (out / "MNLI" / "train.tsv").write_text("stale\n")
    with serve(site) as (server, url):
        fetch_glue("mnli", out, url, mrpc_url=url, log=lambda m: None)
    assert server.requests == ["/MNLI.zip"]
    assert (out / "MNLI" / "train.tsv").read_text() == members["MNLI/train.tsv"]
    assert (out / "MNLI" / "dev_mismatched.tsv").read_text() == members["MNLI/dev_mismatched.tsv"]


# --------------------------------------------------------------------------- MRPC


def test_mrpc_split_by_dev_ids(tmp_path):
    rng = random.Random(7)
    header = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"
    rows = [f"{rng.randint(0, 1)}\t{1000 + i}\t{2000 + i}\t{sentence(rng)}\t{sentence(rng)}"
            for i in range(30)]
    test_rows = [f"{rng.randint(0, 1)}\t{3000 + i}\t{4000 + i}\t{sentence(rng)}\t{sentence(rng)}"
                 for i in range(6)]
    dev_idx = sorted(rng.sample(range(30), 9))
    senteval, glue_site, out = tmp_path / "senteval", tmp_path / "glue_site", tmp_path / "glue"
    senteval.mkdir()
    glue_site.mkdir()
    # like the real corpus: a UTF-8 BOM and CRLF line ends
    (senteval / "msr_paraphrase_train.txt").write_bytes(
        ("\ufeff" + "\r\n".join([header, *rows]) + "\r\n").encode("utf-8"))
    (senteval / "msr_paraphrase_test.txt").write_bytes(
        ("\ufeff" + "\r\n".join([header, *test_rows]) + "\r\n").encode("utf-8"))
    (glue_site / "mrpc_dev_ids.tsv").write_text(
        "".join(f"{1000 + i}\t{2000 + i}\n" for i in dev_idx))
    # a pair whose ids appear only swapped is not a dev pair
    (glue_site / "mrpc_dev_ids.tsv").write_text(
        (glue_site / "mrpc_dev_ids.tsv").read_text() + "2000\t1000\n")

    with serve(senteval) as (s1, mrpc_url), serve(glue_site) as (s2, base_url):
        paths = fetch_glue("mrpc", out, base_url, mrpc_url=mrpc_url + "/", log=lambda m: None)
    assert sorted(s1.requests) == ["/msr_paraphrase_test.txt", "/msr_paraphrase_train.txt"]
    assert s2.requests == ["/mrpc_dev_ids.tsv"]
    train, dev = (p.read_text(encoding="utf-8") for p in paths)
    assert train == "\n".join([header] + [r for i, r in enumerate(rows) if i not in dev_idx]) + "\n"
    assert dev == "\n".join([header] + [rows[i] for i in dev_idx]) + "\n"
    test = (out / "MRPC" / "test.tsv").read_text().splitlines()
    assert test[0] == "index\t#1 ID\t#2 ID\t#1 String\t#2 String"
    assert test[1:] == [f"{i}\t" + r.split("\t", 1)[1] for i, r in enumerate(test_rows)]
    task = get_task("mrpc")
    labels = [int(r.split("\t")[0]) for i, r in enumerate(rows) if i in dev_idx]
    assert list(next(read_split(task, paths[1]))["label"]) == labels


def test_mrpc_missing_corpus_file_is_a_download_error(tmp_path):
    (tmp_path / "site").mkdir()
    with pytest.raises(DownloadError, match=r"msr_paraphrase_train\.txt \(HTTP 404"):
        with serve(tmp_path / "site") as (server, url):
            fetch_glue("mrpc", tmp_path / "glue", url, mrpc_url=url, log=lambda m: None)
    assert files_under(tmp_path / "glue") == []


# --------------------------------------------------------------------------- unsafe / bad archives


def _escaping_zip(path: Path, kind: str) -> str:
    members = {"SST-2/train.tsv": "sentence\tlabel\nok\t1\n", "SST-2/dev.tsv": "sentence\tlabel\n"}
    make_zip(path, members)
    with zipfile.ZipFile(path, "a") as zf:
        if kind == "dotdot":
            name = "../evil.tsv"
            zf.writestr(name, "pwned\n")
        elif kind == "absolute":
            name = str(path.parent.parent / "abs_evil.tsv")  # an absolute path
            zf.writestr(name, "pwned\n")
        else:  # a symlink pointing out of the folder
            name = "SST-2/link"
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "../../outside")
    return name


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_escaping_member_is_refused_and_nothing_written(tmp_path, kind):
    site, out = tmp_path / "site", tmp_path / "glue"
    name = _escaping_zip(site / "SST-2.zip", kind)
    assert name.startswith("/") == (kind == "absolute")
    with serve(site) as (server, url):
        with pytest.raises(DataError) as err:
            fetch_glue("sst2", out, url, mrpc_url=url, log=lambda m: None)
    msg = str(err.value)
    assert "SST-2.zip" in msg and repr(name) in msg and "\n" not in msg
    assert files_under(out) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["glue", "site"]  # nothing outside


def test_non_zip_archive_is_refused(tmp_path):
    site, out = tmp_path / "site", tmp_path / "glue"
    site.mkdir()
    (site / "SST-2.zip").write_bytes(b"<html>not found, but served with 200</html>\n" * 50)
    with serve(site) as (server, url):
        with pytest.raises(DataError, match=r"SST-2\.zip from http://.* is not a zip archive.*"
                                             r"by hand"):
            fetch_glue("sst2", out, url, mrpc_url=url, log=lambda m: None)
    assert files_under(out) == []


def test_crc_corrupt_archive_is_refused(tmp_path):
    site, out = tmp_path / "site", tmp_path / "glue"
    site.mkdir()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("SST-2/train.tsv", "sentence\tlabel\nUNIQUEMARKER\t1\n")
        zf.writestr("SST-2/dev.tsv", "sentence\tlabel\nx\t0\n")
    data = buf.getvalue().replace(b"UNIQUEMARKER", b"UNIQUEMARKEX")
    (site / "SST-2.zip").write_bytes(data)
    assert zipfile.is_zipfile(site / "SST-2.zip")
    with serve(site) as (server, url):
        with pytest.raises(DataError, match=r"corrupt: member SST-2/train\.tsv fails its CRC"):
            fetch_glue("sst2", out, url, mrpc_url=url, log=lambda m: None)
    assert files_under(out) == []


def test_archive_without_a_needed_split(tmp_path):
    site, out = tmp_path / "site", tmp_path / "glue"
    make_zip(site / "SST-2.zip", {"SST-2/train.tsv": "sentence\tlabel\na\t1\n"})
    with serve(site) as (server, url):
        with pytest.raises(DataError, match=r"has no SST-2/dev\.tsv"):
            fetch_glue("sst2", out, url, mrpc_url=url, log=lambda m: None)
    assert files_under(out) == []


def test_failure_while_writing_leaves_no_partial_file(tmp_path, monkeypatch):
    site, out = tmp_path / "site", tmp_path / "glue"
    make_zip(site / "SST-2.zip", sst2_files())

    def half_copy(src, dst, length=0):
        dst.write(src.read(5))
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(dl.shutil, "copyfileobj", half_copy)  # file:// does not use it
    with pytest.raises(OSError, match="No space"):
        fetch_glue("sst2", out, site.as_uri(), mrpc_url="unused", log=lambda m: None)
    assert files_under(out) == []


def test_member_declaring_more_than_the_ceiling_is_refused(tmp_path):
    """A header that declares a huge member (here 3 GiB for a few bytes) is refused before any
    member is inflated, even a member that is not needed."""
    site, out = tmp_path / "site", tmp_path / "glue"
    members = sst2_files()
    zip_path = make_zip(site / "SST-2.zip", members)
    declare(zip_path, "SST-2/test.tsv", 3 << 30, zlib.crc32(members["SST-2/test.tsv"].encode()))
    with serve(site) as (server, url):
        with pytest.raises(DataError) as err:
            fetch_glue("sst2", out, url, mrpc_url=url, log=lambda m: None)
    msg = str(err.value)
    assert f"member SST-2/test.tsv declares {3 << 30} bytes" in msg and "\n" not in msg
    assert "by hand" in msg
    assert files_under(out) == []


def test_ceiling_bounds_every_member(tmp_path, monkeypatch):
    site = tmp_path / "site"
    members = sst2_files()
    make_zip(site / "SST-2.zip", members, compression=zipfile.ZIP_STORED)
    largest = max(len(text.encode()) for text in members.values())
    monkeypatch.setattr(dl, "MAX_MEMBER_BYTES", largest)
    paths = fetch_glue("sst2", tmp_path / "ok", site.as_uri(), mrpc_url="unused",
                       log=lambda m: None)
    assert paths[0].read_text() == members["SST-2/train.tsv"]
    monkeypatch.setattr(dl, "MAX_MEMBER_BYTES", largest - 1)
    with pytest.raises(DataError, match=rf"SST-2/train\.tsv declares {largest} bytes, more than "
                                        rf"any GLUE file \({largest - 1} at most\)"):
        fetch_glue("sst2", tmp_path / "refused", site.as_uri(), mrpc_url="unused",
                   log=lambda m: None)
    assert files_under(tmp_path / "refused") == []


def test_member_inflating_past_its_declared_size_is_refused(tmp_path):
    """A lying header (declared size and CRC of a prefix only) would silently give a truncated
    dev.tsv; instead nothing is written, not even the train.tsv extracted before it."""
    site, out = tmp_path / "site", tmp_path / "glue"
    members = sst2_files()
    zip_path = make_zip(site / "SST-2.zip", members)
    dev = members["SST-2/dev.tsv"].encode()
    short = len(dev) - 40
    declare(zip_path, "SST-2/dev.tsv", short, zlib.crc32(dev[:short]))
    with zipfile.ZipFile(zip_path) as zf:
        assert zf.testzip() is None  # the CRC of what the header declares holds
    with serve(site) as (server, url):
        with pytest.raises(DataError) as err:
            fetch_glue("sst2", out, url, mrpc_url=url, log=lambda m: None)
    msg = str(err.value)
    assert f"member SST-2/dev.tsv inflates to more than the {short} bytes it declares" in msg
    assert "\n" not in msg
    assert files_under(out) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["glue", "site"]


# --------------------------------------------------------------------------- network errors


def test_unreachable_server_retries_then_names_url_and_hand_placement(tmp_path, no_sleep):
    url = f"http://127.0.0.1:{dead_port()}/mirror"
    with pytest.raises(DownloadError) as err:
        fetch_glue("sst2", tmp_path / "glue", url, mrpc_url=url, retries=3, backoff=0.5,
                   timeout=2, log=lambda m: None)
    msg = str(err.value)
    assert msg.startswith(f"could not download {url}/SST-2.zip (connection refused after 4 tries)")
    assert f"place train.tsv and dev.tsv in {tmp_path / 'glue' / 'SST-2'}/ by hand" in msg
    assert "\n" not in msg
    assert no_sleep == [0.5, 1.0, 2.0]  # backoff * 2**attempt
    assert files_under(tmp_path / "glue") == []


def test_http_404_fails_at_once(tmp_path, no_sleep):
    (tmp_path / "site").mkdir()
    with serve(tmp_path / "site") as (server, url):
        with pytest.raises(DownloadError, match=r"SST-2\.zip \(HTTP 404 File not found\); place"):
            fetch_glue("sst2", tmp_path / "glue", url, mrpc_url=url, retries=3, backoff=0,
                       log=lambda m: None)
    assert server.requests == ["/SST-2.zip"]
    assert no_sleep == []


def test_http_500_is_retried_until_success(tmp_path, no_sleep):
    site, out = tmp_path / "site", tmp_path / "glue"
    members = sst2_files()
    make_zip(site / "SST-2.zip", members)
    with serve(site, failures={"/SST-2.zip": 2}) as (server, url):
        paths = fetch_glue("sst2", out, url, mrpc_url=url, retries=3, backoff=0.25,
                           log=lambda m: None)
    assert server.requests == ["/SST-2.zip"] * 3
    assert no_sleep == [0.25, 0.5]
    assert paths[1].read_text() == members["SST-2/dev.tsv"]


def test_http_500_every_time_gives_up(tmp_path, no_sleep):
    site = tmp_path / "site"
    make_zip(site / "SST-2.zip", sst2_files())
    with serve(site, failures={"/SST-2.zip": 99}) as (server, url):
        with pytest.raises(DownloadError, match=r"\(HTTP 500 .* after 2 tries\)"):
            fetch_glue("sst2", tmp_path / "glue", url, mrpc_url=url, retries=1, backoff=0,
                       log=lambda m: None)
    assert len(server.requests) == 2


def test_timeout_is_retried_and_reported(tmp_path, no_sleep):
    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(DownloadError, match=r"\(timed out after 0\.2 s after 2 tries\)"):
            fetch_glue("sst2", tmp_path / "glue", url, mrpc_url=url, retries=1, backoff=0,
                       timeout=0.2, log=lambda m: None)


def test_missing_file_url(tmp_path):
    url = (tmp_path / "nowhere").as_uri()
    with pytest.raises(DownloadError, match=r"nowhere/SST-2\.zip \(no such file"):
        fetch_glue("sst2", tmp_path / "glue", url, mrpc_url=url, log=lambda m: None)


def test_copy_fails_once_more_bytes_come_than_declared():
    """The byte count behind the lying-header check, whatever zipfile itself checks."""
    lying = DataError("lying header")
    out = io.BytesIO()
    dl.shutil.copyfileobj(dl._Declared(io.BytesIO(b"x" * 10), 10, lying), out, 4)
    assert out.getvalue() == b"x" * 10
    with pytest.raises(DataError, match="lying header"):
        dl.shutil.copyfileobj(dl._Declared(io.BytesIO(b"x" * 10), 9, lying), io.BytesIO(), 4)


@pytest.fixture
def tries(monkeypatch):
    """The URL of every try, counted where one try happens (``_Fetcher._once``)."""
    seen = []
    once = dl._Fetcher._once

    def counted(self, url, dest):
        seen.append(url)
        return once(self, url, dest)
    monkeypatch.setattr(dl._Fetcher, "_once", counted)
    return seen


def test_a_file_url_is_tried_once(tmp_path, tries, no_sleep):
    url = (tmp_path / "nowhere").as_uri()
    with pytest.raises(DownloadError, match=r"no such file"):
        fetch_glue("sst2", tmp_path / "glue", url, mrpc_url=url, retries=3, log=lambda m: None)
    assert tries == [f"{url}/SST-2.zip"]
    assert no_sleep == []


def test_http_retries_2_means_3_tries(tmp_path, tries, no_sleep):
    site = tmp_path / "site"
    make_zip(site / "SST-2.zip", sst2_files())
    with serve(site, failures={"/SST-2.zip": 99}) as (server, url):
        with pytest.raises(DownloadError, match=r"\(HTTP 500 .* after 3 tries\)"):
            fetch_glue("sst2", tmp_path / "glue", url, mrpc_url=url, retries=2, backoff=0,
                       log=lambda m: None)
    assert tries == [f"{url}/SST-2.zip"] * 3
    assert server.requests == ["/SST-2.zip"] * 3
    assert no_sleep == [0, 0]


def test_hint_names_the_hand_root_which_is_never_written(tmp_path, no_sleep):
    url = f"http://127.0.0.1:{dead_port()}"
    hand, out = tmp_path / "hand", tmp_path / "download"
    (hand / "SST-2").mkdir(parents=True)
    (hand / "SST-2" / "train.tsv").write_text("sentence\tlabel\nmine\t1\n")
    with pytest.raises(DownloadError) as err:
        fetch_glue("sst2", out, url, mrpc_url=url, hand_root=hand, retries=0, log=lambda m: None)
    assert str(err.value).endswith(f"place train.tsv and dev.tsv in {hand / 'SST-2'}/ by hand "
                                   "and rerun")
    assert files_under(hand) == [hand / "SST-2" / "train.tsv"]
    assert (hand / "SST-2" / "train.tsv").read_text() == "sentence\tlabel\nmine\t1\n"
    assert files_under(out) == []


# --------------------------------------------------------------------------- tasks and CLI


def test_tweets_and_unknown_tasks_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="prepare_builtin"):
        fetch_glue("tweets", tmp_path, "http://127.0.0.1:9", mrpc_url="x")
    with pytest.raises(ConfigError, match="unknown task 'sst3'"):
        fetch_glue("sst3", tmp_path, "http://127.0.0.1:9", mrpc_url="x")
    assert issubclass(DownloadError, KdflowError)


def test_cli_unreachable_prints_one_error_line(tmp_path, capsys):
    url = f"http://127.0.0.1:{dead_port()}"
    rc = download_glue.main(["--task", "sst2", "--out-root", str(tmp_path / "glue"),
                             "--url", url, "--mrpc-url", url, "--retries", "0", "--timeout", "2"])
    err = capsys.readouterr().err
    assert rc == 1
    assert err.count("\n") == 1 and err.startswith(f"error: could not download {url}/SST-2.zip")
    assert "Traceback" not in err


@pytest.mark.parametrize("broken, shown, says", [
    ("cut after its headers", "0%", "(the connection closed {size} bytes before the end)"),
    ("not a zip", "100%", "SST-2.zip from http://127.0.0.1:"),
])
def test_a_failed_download_s_error_line_is_a_line_of_its_own_after_the_progress_bar(broken, shown, says,
                                                                                       tmp_path, capsys):
    """The progress bar (0% of a transfer cut short, or 100% of a file that is no zip) ends its
    line, so the error line starts one of its own, as the rule's tail of the log shows it."""
    site = tmp_path / "site"
    if broken == "not a zip":
        site.mkdir()
        (site / "SST-2.zip").write_bytes(b"not a zip archive\n" * 100)
    else:
        make_zip(site / "SST-2.zip", sst2_files())
    with serve(site, cut={"/SST-2.zip": 0} if broken != "not a zip" else None) as (_, url):
        rc = download_glue.main(["--task", "sst2", "--out-root", str(tmp_path / "glue"), "--url", url,
                                 "--mrpc-url", url, "--timeout", "5", "--retries", "0"])
    err = capsys.readouterr().err
    before, _, _ = err.partition("error:")
    assert rc == 1 and f"{shown}|" in before and "SST-2.zip" in before        # the bar was drawn
    errors = [line for line in err.split("\n") if "error:" in line]          # \r is no line break
    assert len(errors) == 1 and errors[0].startswith("error: "), repr(err)
    assert says.format(size=(site / "SST-2.zip").stat().st_size) in errors[0] and "Traceback" not in err


def test_cli_success(tmp_path, capsys):
    site, out = tmp_path / "site", tmp_path / "glue"
    members = sst2_files()
    make_zip(site / "SST-2.zip", members)
    with serve(site) as (server, url):
        rc = download_glue.main(["--task", "sst2", "--out-root", str(out), "--url", url,
                                 "--mrpc-url", url, "--timeout", "5", "--retries", "1"])
    assert rc == 0
    assert (out / "SST-2" / "train.tsv").read_text() == members["SST-2/train.tsv"]
    assert "sst2: wrote train.tsv, dev.tsv" in capsys.readouterr().out
    # every setting comes from config.yaml, so the workflow passes each flag; only --hand-root may go
    args = download_glue.parse_args(["--task", "cola", "--out-root", "data/download", "--url", url,
                                     "--mrpc-url", url, "--timeout", "5", "--retries", "1"])
    assert (args.out_root, args.url, args.retries) == (Path("data/download"), url, 1)
    assert args.hand_root is None
    with pytest.raises(SystemExit):
        download_glue.parse_args(["--task", "cola", "--out-root", "data/download"])


def without_unbuffered() -> dict[str, str]:
    """The environment as users have it: no PYTHONUNBUFFERED, so stdout into a file is buffered."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}


def test_cli_hand_root_and_log_order(tmp_path):
    """The stage's progress lines are flushed as they happen, so the error line is the last line
    of its log (the rule prints that line on failure)."""
    url = f"http://127.0.0.1:{dead_port()}"
    log = tmp_path / "download.log"
    repo = Path(download_glue.__file__).parents[1]
    with open(log, "w") as fh:
        done = subprocess.run([sys.executable, "-m", "workflow_scripts.download_glue", "--task",
                               "sst2", "--out-root", str(tmp_path / "download"), "--hand-root",
                               "data/glue", "--url", url, "--mrpc-url", url, "--timeout", "5",
                               "--retries", "0"],
                              stdout=fh, stderr=subprocess.STDOUT, cwd=tmp_path,
                              env={**without_unbuffered(), "PYTHONPATH": str(repo)})
    lines = log.read_text().splitlines()
    assert done.returncode == 1
    assert lines[0] == f"sst2: downloading {url}/SST-2.zip"
    assert lines[-1].startswith(f"error: could not download {url}/SST-2.zip")
    assert lines[-1].endswith("place train.tsv and dev.tsv in data/glue/SST-2/ by hand and rerun")
