"""``prepare-data --coco``: COCO instances -> VOC label maps, checked pixel for pixel against an
independent rasterisation written here (polygons: pixel centres inside the polygon, by
matplotlib's Path; uncompressed RLE: column-major runs decoded with numpy; compressed RLE: the
mask it was encoded from)."""

import json

import numpy as np
import pytest
from matplotlib.path import Path as Polygon
from PIL import Image
from pycocotools import mask as coco_mask

from benchmarks.cli import main
from benchmarks.data.coco import prepare_coco
from benchmarks.data.voc import DataError, VOCSplit, read_label

H, W = 10, 12
CATEGORIES = [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 5, "name": "airplane"},
              {"id": 25, "name": "giraffe"}, {"id": 63, "name": "couch"}, {"id": 72, "name": "tv"}]
TRIANGLE = [1, 1, 9, 1, 1, 7]  # vertices chosen off pixel centres: every rasteriser agrees
L_SHAPE = [0, 0, 12, 0, 12, 4, 4, 4, 4, 10, 0, 10]
BAR = [6, 5, 12, 5, 12, 8, 6, 8]


def polygon(points):
    yy, xx = np.mgrid[0:H, 0:W]
    centres = np.c_[xx.ravel() + 0.5, yy.ravel() + 0.5]
    return Polygon(np.reshape(points, (-1, 2))).contains_points(centres).reshape(H, W)


def uncompressed_rle(mask):
    flat = mask.T.ravel().astype(np.int64)  # column-major, starting with a run of zeros
    edges = np.flatnonzero(np.diff(np.r_[0, flat, 1 - flat[-1]]))
    return {"counts": np.diff(np.r_[0, edges]).tolist(), "size": [H, W]}


def decode_uncompressed(rle):
    values = np.arange(len(rle["counts"])) % 2
    return np.repeat(values, rle["counts"]).reshape(W, H).T.astype(bool)


def box(y0, y1, x0, x1):
    mask = np.zeros((H, W), bool)
    mask[y0:y1, x0:x1] = True
    return mask


CROWD = box(5, 10, 2, 12)
TV = box(1, 4, 2, 9)
COUCH = box(6, 10, 0, 8)


def annotations():
    """(image id, category, segmentation, iscrowd). Image 1: a car (L shape) under a person
    (triangle, smaller, so on top), a person crowd region partly under the car, a giraffe (not a
    VOC class) over everything. Image 2: a tv as uncompressed RLE, a couch as compressed RLE, an
    airplane polygon over the couch. Image 3: a giraffe and a person crowd only. Image 4: nothing."""
    compressed = coco_mask.encode(np.asfortranarray(COUCH.astype(np.uint8)))
    compressed["counts"] = compressed["counts"].decode()
    return [(1, 1, [TRIANGLE], 0), (1, 3, [L_SHAPE], 0), (1, 1, uncompressed_rle(CROWD), 1), (1, 25, [BAR], 0),
            (2, 72, uncompressed_rle(TV), 0), (2, 63, compressed, 0), (2, 5, [BAR], 0),
            (3, 25, [TRIANGLE], 0), (3, 1, uncompressed_rle(CROWD), 1)]


def expected_labels():
    first = np.zeros((H, W), np.uint8)
    first[decode_uncompressed(uncompressed_rle(CROWD))] = 255
    first[polygon(L_SHAPE)] = 7  # car: the larger instance, drawn first
    first[polygon(TRIANGLE)] = 15  # person
    second = np.zeros((H, W), np.uint8)
    second[COUCH] = 18  # sofa, 32 px
    second[decode_uncompressed(uncompressed_rle(TV))] = 20  # tvmonitor, 21 px
    second[polygon(BAR)] = 1  # aeroplane, 18 px: on top of the sofa
    return {"000000000001": first, "000000000002": second}


def write_coco(root, *, categories=CATEGORIES, images=(1, 2, 3, 4), layout="2017"):
    (root / "annotations").mkdir(parents=True)
    folder = root / f"train{layout}"
    folder.mkdir()
    listed = []
    for image_id in (1, 2, 3, 4):
        name = f"{image_id:012d}.jpg"
        listed.append({"id": image_id, "file_name": name, "height": H, "width": W})
        if image_id in images:
            Image.fromarray(np.full((H, W, 3), 40 * image_id, np.uint8)).save(folder / name)
    found = [{"id": 100 + n, "image_id": image, "category_id": category, "segmentation": segmentation,
              "iscrowd": crowd, "area": 1.0, "bbox": [0, 0, 1, 1]}
             for n, (image, category, segmentation, crowd) in enumerate(annotations())]
    content = {"images": listed, "annotations": found, "categories": categories}
    (root / "annotations" / f"instances_train{layout}.json").write_text(json.dumps(content))


@pytest.fixture
def voc(tmp_path):
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    for folder in ("JPEGImages", "ImageSets/Segmentation"):
        (voc / folder).mkdir(parents=True)
    return voc


def test_labels_match_an_independent_rasterisation(voc, tmp_path):
    assert (polygon(L_SHAPE).sum(), polygon(TRIANGLE).sum()) == (72, 24)  # the overlap order of the fixture
    assert (COUCH.sum(), TV.sum(), polygon(BAR).sum()) == (32, 21, 18) and (COUCH & polygon(BAR)).any()
    write_coco(tmp_path / "coco")
    done = prepare_coco(voc, tmp_path / "coco")
    assert (done.kept, done.skipped, done.crowd_only, done.written, done.already_there) == (2, 2, 1, 2, 0)
    expected = expected_labels()
    split = VOCSplit(tmp_path, "coco")
    assert split.ids == sorted(expected)
    for sample in (split[0], split[1]):
        np.testing.assert_array_equal(sample.label, expected[sample.image_id])
        assert sample.image.shape == (H, W, 3)  # the image, read through its symlink
    again = prepare_coco(voc, tmp_path / "coco")
    assert (again.written, again.already_there) == (0, 2)
    annotation_file = tmp_path / "coco" / "annotations" / "instances_train2017.json"
    content = json.loads(annotation_file.read_text())
    content["annotations"] = [a for a in content["annotations"] if a["category_id"] != 5]  # image 2 loses its airplane
    annotation_file.write_text(json.dumps(content))
    third = prepare_coco(voc, tmp_path / "coco")  # issue 26: a changed annotation rewrites that label only
    assert (third.written, third.already_there) == (1, 1)
    without = expected["000000000002"].copy()
    without[without == 1] = 0
    without[COUCH] = 18  # the sofa under the airplane shows again
    np.testing.assert_array_equal(read_label(voc / "SegmentationClassCOCO" / "000000000002.png"), without)


def test_2014_layout_and_the_cli(voc, tmp_path, capsys):
    write_coco(tmp_path / "coco", layout="2014")
    assert main(["prepare-data", "--data", str(tmp_path), "--coco", str(tmp_path / "coco")]) == 0
    assert "coco split 2 images with a VOC category (2 without, skipped, 1 of them with VOC crowd regions only)" \
        in capsys.readouterr().out
    np.testing.assert_array_equal(read_label(voc / "SegmentationClassCOCO" / "000000000001.png"),
                                  expected_labels()["000000000001"])


@pytest.mark.parametrize("problem, message", [
    ("no annotations", "holds no COCO annotation file"),
    ("image missing", "1 COCO images with VOC categories are missing"),
    ("no VOC category", "no category of"),
])
def test_bad_input_is_one_clear_error(voc, tmp_path, capsys, problem, message):
    coco = tmp_path / "coco"
    if problem == "no annotations":
        coco.mkdir()
    else:
        write_coco(coco, images=(1, 3, 4) if problem == "image missing" else (1, 2, 3, 4),
                   categories=[{**c, "name": f"x{c['name']}"} for c in CATEGORIES] if problem == "no VOC category"
                   else CATEGORIES)
    with pytest.raises(DataError, match=message):
        prepare_coco(voc, coco)
    assert main(["prepare-data", "--data", str(tmp_path), "--coco", str(coco)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
