"""Issue 24's size limits on the production code (``benchmarks/``, ``methods/``), read from the
source with ``ast``: no file over 400 lines, no function over 60 lines, ``cli.py`` under 150
lines. The permutohedral lattice's constructor is one algorithm (Adams et al.'s construction) and
may stay longer; it says so in a comment."""

import ast
from pathlib import Path

from conftest import ROOT

MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60
MAX_CLI_LINES = 150
ONE_ALGORITHM = {("benchmarks/crf/permutohedral.py", "__init__")}


def _production_files() -> list[Path]:
    return sorted(p for package in ("benchmarks", "methods") for p in (ROOT / package).rglob("*.py"))


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines())


def test_no_production_file_is_over_400_lines_and_cli_is_under_150():
    long = {str(p.relative_to(ROOT)): n for p in _production_files() if (n := _lines(p)) > MAX_FILE_LINES}
    assert not long, f"files over {MAX_FILE_LINES} lines: {long}"
    assert _lines(ROOT / "benchmarks" / "cli.py") < MAX_CLI_LINES


def test_no_function_is_over_60_lines():
    long = {}
    for path in _production_files():
        name = str(path.relative_to(ROOT))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and (name, node.name) not in ONE_ALGORITHM:
                if (length := node.end_lineno - node.lineno + 1) > MAX_FUNCTION_LINES:
                    long[f"{name}: {node.name} (line {node.lineno})"] = length
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"

