"""Hostile input at the command line (issue 12): every expected failure is one line on stderr that
names the file or argument and the fix, with exit status 2; a traceback is a bug. Each case fails
before any data is generated or any network trained; most run ``main`` in this process, those that
need a fresh one (a hang, ``python -m``) a subprocess."""

from pathlib import Path

import pytest

from benchmarks import cli
from benchmarks.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def no_data(tmp_path, monkeypatch):
    """The embedded dataset's cache in ``tmp_path``, no VOC data from the environment."""
    monkeypatch.setenv("SEGREPRO_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SEGREPRO_DATA", raising=False)


def run_main(capsys, *args: object) -> tuple[int, str]:
    """``main(args)`` in this process: its exit status (argparse's included) and stderr."""
    try:
        status = main([str(a) for a in args])
    except SystemExit as exit_:
        status = exit_.code
    return status, capsys.readouterr().err


def assert_one_line_error(status: int, err: str, *words: str) -> None:
    """Exit status 2, no traceback, and a last line ``error: ...`` (argparse: ``PROG CMD: error: ...``)
    holding every one of ``words``."""
    assert status == 2, err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: ") or ": error: " in line, err
    for word in words:
        assert word in line, (word, line)


@pytest.mark.parametrize(("args", "words"), [
    (["run"], ["name methods to run", "--all"]),
    (["compare", "no_such_head", "--baseline", "deeplab_v1"], ["unknown method 'no_such_head'", "--import"]),
    (["prepare-data"], ["--sbd PATH"]),
])
def test_usage_mistakes_are_one_line(capsys, args, words):
    assert_one_line_error(*run_main(capsys, *args), *words)


def test_report_without_records_names_the_folder(capsys, tmp_path):
    status, err = run_main(capsys, "report", "--results", tmp_path / "r", "--reports", tmp_path / "p")
    assert_one_line_error(status, err, str(tmp_path / "r" / "records"), "run")


def test_an_unexpected_exception_still_raises(capsys, monkeypatch):
    """Only the expected failures are turned into one line; a bug keeps its traceback."""
    def broken() -> list[dict[str, object]]:
        raise RuntimeError("a bug")

    monkeypatch.setattr(cli, "list_rows", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["list"])

