"""The command line's one error boundary (issue 24): a project error (``SegreproError`` and its
kinds) or an ``OSError`` is one ``error:`` line and exit 2; any other exception is a bug and keeps
its traceback, a ``ValueError`` from a failed ``zip(strict=True)`` included."""

import pytest

from benchmarks import cli
from benchmarks.commands import rf
from benchmarks.data.voc import DataError
from benchmarks.errors import CRFParameterError, RecipeError, SegreproError, UsageError, WeightsError
from benchmarks.records import RecordError
from methods.caffemodel import CaffeModelError
from methods.errors import MethodError


def _failing_with(monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    def main(_args: object) -> int:
        raise error

    monkeypatch.setattr(rf, "main", main)


@pytest.mark.parametrize("kind", [UsageError, WeightsError, CRFParameterError, RecipeError, DataError, RecordError,
                                  MethodError, CaffeModelError])
def test_every_project_error_is_one_line_and_exit_2(monkeypatch, capsys, kind):
    assert issubclass(kind, SegreproError)
    _failing_with(monkeypatch, kind("what went wrong; the fix"))
    assert cli.main(["rf", "--dilations", "1"]) == 2
    assert capsys.readouterr().err == "error: what went wrong; the fix\n"


def test_an_internal_value_error_keeps_its_traceback(monkeypatch):
    def internal_bug() -> None:
        list(zip([1, 2], [1], strict=True))

    monkeypatch.setattr(rf, "main", lambda _args: internal_bug())
    with pytest.raises(ValueError, match="zip"):
        cli.main(["rf", "--dilations", "1"])
