"""Roots are closed (issue 26, item 2): a path the harness builds from a name (a record's profile,
dataset, method or run key; a registered method; a split id) is checked to stay under its root
before anything reads or writes it, whoever checked the name before."""

import os

import pytest

from benchmarks.files import OutsideRoot, under
from benchmarks.networks import run_folder
from benchmarks.records import record_path


@pytest.mark.parametrize("name", ["../../x", "../../../escaped_probe", "a/../../../x", "/etc"])
def test_a_name_that_leaves_its_root_is_refused(tmp_path, name):
    with pytest.raises(OutsideRoot, match=r"names .*, outside .*; names must be plain file names$"):
        under(tmp_path, "ok", name)


def test_names_that_stay_inside_give_the_joined_path_and_symlinked_trees_still_read(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "root").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "root" / "linked")
    assert under(tmp_path / "root", "linked", "a.png") == tmp_path / "root" / "linked" / "a.png"
    assert under(tmp_path, "a..b", "c") == tmp_path / "a..b" / "c"


@pytest.mark.parametrize(("field", "value"), [("profile", "../.."), ("dataset", "../../../z"), ("method", "../../m")])
def test_run_folders_and_record_paths_refuse_names_that_leave_their_root(tmp_path, field, value):
    names = {"profile": "quick", "dataset": "embedded", "method": "fcn8s", **{field: value}}
    with pytest.raises(OutsideRoot, match=f"outside {tmp_path}"):
        run_folder(tmp_path, names["profile"], names["dataset"], names["method"], 0, key="abc")
    with pytest.raises(OutsideRoot, match=f"outside {tmp_path}"):
        record_path(tmp_path, names["profile"], names["dataset"], names["method"], 0)
    with pytest.raises(OutsideRoot, match=f"outside {tmp_path}"):
        run_folder(tmp_path, "quick", "embedded", "fcn8s", 0, key="../../../../../k")
