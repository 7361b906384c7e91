"""Receptive fields (SPEC section 3): analytic from the module graph, empirical from gradients,
both against numbers worked by hand."""

import json

import pytest
import torch
from measured_receptive_field import empirical_receptive_field
from torch import nn

import methods
from benchmarks.cli import main
from benchmarks.receptive_field import (
    analytic_geometry,
    dilated_stack,
    receptive_field,
    stack_table,
    unit_receptive_field,
)
from methods.dilation import BASIC_MULTIPLIERS, LARGE_MULTIPLIERS, ContextModule


def test_stacked_dilations_cumulative_fields():
    rows = stack_table([1, 2, 4, 8, 16, 32])
    assert [r["receptive_field"] for r in rows] == [3, 7, 15, 31, 63, 127]
    # a 3x3 filter with dilation r covers (2r+1)x(2r+1) with 9 parameters
    assert [r["filter_span"] for r in rows] == [2 * d + 1 for d in (1, 2, 4, 8, 16, 32)]
    assert {r["filter_params"] for r in rows} == {9}


@pytest.mark.parametrize(("dilations", "expected"), [([1, 2, 4, 8, 16, 32], 127), ([2, 4], 13), ([1], 3)])
def test_stack_fields_measured_by_gradient(dilations, expected):
    measured = empirical_receptive_field(dilated_stack(dilations), 2 * expected + 1, in_channels=1)
    assert measured.size == (expected, expected)


def test_context_module_fields_table_1():
    module = ContextModule(21, BASIC_MULTIPLIERS, buffer="none")
    convs = [g for g in analytic_geometry(module) if g.kind == "Conv2d"]
    assert [g.geometry.size for g in convs] == [3, 5, 9, 17, 33, 65, 67, 67]
    assert [g.kernel for g in convs] == [3, 3, 3, 3, 3, 3, 3, 1]  # only layer 8 is 1x1
    assert [g.dilation for g in convs] == [1, 1, 2, 4, 8, 16, 1, 1]


@pytest.mark.parametrize("multipliers", [BASIC_MULTIPLIERS, LARGE_MULTIPLIERS])
def test_context_module_fields_measured_layer_by_layer(multipliers):
    module = ContextModule(3, multipliers, buffer="none")
    convs = [m for m in module.children() if isinstance(m, nn.Conv2d)]
    measured = []
    for depth in range(1, 9):
        prefix = nn.Sequential(*[layer for conv in convs[:depth] for layer in (conv, nn.ReLU())])
        measured.append(empirical_receptive_field(prefix, 71, in_channels=3, seeds=(0,)).size[0])
    assert measured == [3, 5, 9, 17, 33, 65, 67, 67]


def test_frontend_field_is_380_px():
    # Sec 4 front end: conv1-3 with 2x2 pools give 44 px at stride 8; conv4 +48; conv5 (dilation
    # 2) +96; fc6 7x7 dilation 4 +192: 380.
    assert receptive_field(methods.create("frontend", width=1 / 32), "score_map") == 380


@pytest.mark.parametrize("name", methods.list_methods())
def test_analytic_field_of_a_unit_equals_the_gradient_support(name):
    model = methods.create(name, width=1 / 32)
    if receptive_field(model) == "global":  # one corner pixel changes the opposite corner's scores, 448 px away
        torch.manual_seed(0)  # (farther than half of any finite field here: at most 436 px, mmseg_fcn's)
        model.eval()
        with torch.no_grad():  # positive / fan-in: every ReLU passes, no softmax saturates, DANet's gates open
            for parameter in model.parameters():
                parameter.uniform_(0.5, 1.5).div_(parameter[0].numel() if parameter.dim() > 1 else 1)
        image = torch.rand(1, 3, 449, 449, dtype=torch.float64)
        moved = image.clone()
        moved[..., 0, 0] += 1
        with torch.no_grad():
            model.double()
            assert not torch.equal(model(image)[..., -1, -1], model(moved)[..., -1, -1])
        return
    size = receptive_field(model) + 24
    measured = empirical_receptive_field(model, size, seeds=(0, 1))
    lo, hi = unit_receptive_field(model, measured.unit)
    assert measured.rows == (lo, hi) and measured.cols == (lo, hi)


def test_largest_fcn8s_field_over_phases_is_measured_too():
    model = methods.create("fcn8s", width=1 / 32)
    size = receptive_field(model) + 64
    sizes = {u: (lambda lo_hi: lo_hi[1] - lo_hi[0] + 1)(unit_receptive_field(model, u)) for u in range(224, 256)}
    widest = max(sizes, key=sizes.get)
    assert sizes[widest] == receptive_field(model) > min(sizes.values())
    assert empirical_receptive_field(model, size, unit=widest, seeds=(0, 1)).size[0] == sizes[widest]


def test_rf_command_shows_13_and_reports_the_design_note(capsys):
    assert main(["rf", "--dilations", "2,4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["receptive_field"] for r in out["layers"]] == [5, 13]
    verdicts = {c["id"]: c for c in out["design_note_claims"]}
    assert verdicts["dilation_2_4_span"]["computed"] == 13 and not verdicts["dilation_2_4_span"]["holds"]
    assert verdicts["dilations_1_to_16_span"]["computed"] == 63
    assert verdicts["context_last_two_1x1"]["computed"] == [3, 1]
    assert main(["rf", "--dilations", "2,4"]) == 0
    text = capsys.readouterr().out
    assert "WRONG" in text and "13" in text


def test_rf_command_rejects_bad_dilations(capsys):
    with pytest.raises(SystemExit):
        main(["rf", "--dilations", "2,x"])
    assert "comma-separated integers" in capsys.readouterr().err


def test_list_command_json(capsys):
    assert main(["list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(methods.list_methods()) <= set(rows)
    for name in ("fcn8s", "deeplab_v1", "frontend", "context_basic", "context_large"):
        crf = rows[f"{name}+crf"]
        assert crf["crf"] and not rows[name]["crf"]
        assert {k: v for k, v in crf.items() if k not in ("name", "crf", "kind", "what", "in_run_all")} == {
            k: v for k, v in rows[name].items() if k not in ("name", "crf", "kind", "what", "in_run_all")}
        assert (crf["kind"], rows[f"{name}+crfrnn"]["kind"], rows[name]["kind"]) == ("+crf", "+crfrnn", "network")
    for staged in ("frontend_coco_stage1", "frontend_coco", "context_large_coco", "context_basic_joint"):
        assert (rows[staged]["kind"] == "staged recipe" and f"{staged}+crf" in rows) or "coco" not in staged[-5:]
    assert rows["context_large_coco"]["score_stride"] == rows["context_large"]["score_stride"]
    assert rows["context_large_coco+crfrnn"]["in_run_all"] and not rows["context_large+crfrnn"]["in_run_all"]
    assert "from the trained frontend_coco" in rows["context_large_coco"]["what"]
    assert "fcn32s+crf" not in rows
    assert rows["deeplab_v1"]["params"] == 20_505_429
    assert rows["frontend"]["score_receptive_field"] == 380
    assert rows["fcn32s"]["score_stride"] == 32 and rows["fcn32s"]["receptive_field"] == 436
    assert set(rows["fcn8s"]) >= {"name", "paper", "params", "score_stride", "receptive_field", "crf"}


def test_identity_initialisation_basic_is_exact():
    module = methods.create("context_basic", width=1 / 16).context
    x = torch.rand(2, 21, 30, 41) * 5
    with torch.no_grad():
        assert torch.equal(module(x), x)


def test_identity_initialisation_large_is_close():
    # the paper's full-width module (2C ... 32C), identity of Eq. 5 plus N(0, sigma^2) noise
    x = torch.rand(2, 21, 30, 41) * 5

    def relative_error(noise_std):
        module = ContextModule(21, LARGE_MULTIPLIERS, noise_std=noise_std, seed=3)
        with torch.no_grad():
            return ((module(x) - x).abs().max() / x.abs().max()).item()

    assert relative_error(0.0) < 1e-6
    default = relative_error(1e-3)
    assert 0 < default < 0.05
    # the error is the noise term alone: it shrinks in proportion to sigma
    assert 5 < default / relative_error(1e-4) < 20


def test_effective_receptive_field_of_a_known_kernel():
    from torch import nn

    from benchmarks.receptive_field import effective_receptive_field

    # a 5x5 averaging conv: the gradient of one unit is uniform on its 5x5 window (half-width 2);
    # 50% of a 5x5 square of equal weights needs the 3x3 centre (9/25 < 0.5), so half-width 2 too
    conv = nn.Conv2d(3, 2, 5, padding=2, bias=False)
    nn.init.constant_(conv.weight, 1.0)
    with torch.no_grad():
        conv.weight[1] = 0.5
    radii = effective_receptive_field(conv, torch.randn(2, 3, 21, 21), 10, 10, (0.3, 0.5, 1.0))
    assert radii == {0.3: 1, 0.5: 2, 1.0: 2}
