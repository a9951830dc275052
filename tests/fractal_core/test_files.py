"""Output paths and formats: one suffix map, one atomic writer that refuses
devices, directories and special files before writing, honours the umask and leaves the old file on error;
commands check their output path before the work and exit 2."""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from fractal_core.cli import register
from fractal_core.data import files
from fractal_core.data.io import read_records, write_records_jsonl
from fractal_core.errors import InputError
from fractal_core.fitting.estimator import FractalModel

ROW = {"id": "a", "sentences": ["One.", "Two."], "response_label": 1}


def test_one_suffix_map() -> None:
    assert [files.format_of(n) for n in ("a.JSONL", "a.json", "a.ndjson", "a.csv", "a.pq", "a.parquet")] == [
        "jsonl",
        "jsonl",
        "jsonl",
        "csv",
        "parquet",
        "parquet",
    ]
    assert files.format_of("a.txt") is None
    with pytest.raises(InputError, match="cannot tell the format"):
        files.require_format("a.txt")
    assert files.require_format("a.txt", "csv") == "csv"


def _special_paths(tmp_path: Path) -> dict[str, Path]:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    sock_path = tmp_path / "sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    sock.close()
    (tmp_path / "dir").mkdir()
    return {
        "character device": Path("/dev/null"),
        "directory": tmp_path / "dir",
        "FIFO": fifo,
        "socket": sock_path,
        "under /proc": Path("/proc/fractal-out.jsonl"),
        "under a file": tmp_path / "plain" / "out.jsonl",
    }


def test_atomic_write_refuses_special_paths_and_leaves_them_alone(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("x")
    for what, path in _special_paths(tmp_path).items():
        before = path.lstat().st_mode if path.exists() else None
        with pytest.raises(InputError) as err:
            files.atomic_write_text(path, "data\n")
        assert str(path) in str(err.value), what
        assert (path.lstat().st_mode if path.exists() else None) == before, what
    assert stat.S_ISCHR(Path("/dev/null").stat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "fifo", "plain", "sock"]  # no temp files


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_new_files_honour_the_umask_and_replaced_ones_keep_their_mode(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        new = files.atomic_write_text(tmp_path / "new.txt", "a")
        assert stat.S_IMODE(new.stat().st_mode) == 0o666 & ~umask
        kept = tmp_path / "kept.txt"
        kept.write_text("old")
        kept.chmod(0o640)
        files.atomic_write_text(kept, "new")
        assert kept.read_text() == "new" and stat.S_IMODE(kept.stat().st_mode) == 0o640
    finally:
        os.umask(old)


def test_a_failed_write_leaves_the_old_file(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text("old\n")

    def records():
        yield from read_records(_write(tmp_path / "in.jsonl", [ROW]))
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_records_jsonl(records(), out)
    assert out.read_text() == "old\n" and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    link = tmp_path / "link.jsonl"
    link.symlink_to(out)
    write_records_jsonl(read_records(tmp_path / "in.jsonl"), link)  # a link to a regular file is fine
    assert json.loads(link.read_text())["id"] == "a"


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture()
def cli() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def test_train_checks_out_before_training(cli: typer.Typer, tmp_path: Path, monkeypatch) -> None:
    def no_training(*args, **kwargs):
        raise AssertionError("trained although the output path is unusable")

    monkeypatch.setattr(FractalModel, "fit", no_training)
    data = _write(tmp_path / "train.jsonl", [ROW, {**ROW, "id": "b", "response_label": 0}])
    regular = tmp_path / "model-file"
    regular.write_text("keep")
    occupied = tmp_path / "run"
    (occupied / "weights.pt").mkdir(parents=True)
    for out in (regular, occupied, Path("/proc/fractal-run"), Path("/dev/null")):
        result = CliRunner().invoke(cli, ["train", str(data), "--out", str(out)])
        assert result.exit_code == 2, (out, result.output)
        assert result.exception is None or isinstance(result.exception, SystemExit)
        assert str(out) in result.stderr
    assert regular.read_text() == "keep"


def test_score_and_evaluate_check_out_before_working(cli: typer.Typer, tmp_path: Path) -> None:
    data = _write(tmp_path / "in.jsonl", [ROW])
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.json").write_text("{}")  # never loaded: the output is refused first
    (tmp_path / "outdir").mkdir()
    for out in (tmp_path / "outdir", Path("/dev/null"), Path("/proc/scored.jsonl")):
        result = CliRunner().invoke(cli, ["score", str(data), "--model", str(model), "--out", str(out)])
        assert result.exit_code == 2 and str(out) in result.stderr, result.output
    (tmp_path / "split").mkdir()
    result = CliRunner().invoke(
        cli, ["evaluate", "--data", str(tmp_path / "split"), "--json", str(tmp_path / "outdir")]
    )
    assert result.exit_code == 2 and "outdir" in result.stderr
    assert stat.S_ISCHR(Path("/dev/null").stat().st_mode)
