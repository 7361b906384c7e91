"""Hostile COCO instances files for ``prepare-data --coco`` (issue 26): each fault is one
``error: ...`` line naming the JSON file, the image or annotation id and the fix, exit 2, nothing
written; the documented non-faults (invalid polygons dropped as detectron2 drops them, vertices
outside the image clipped as pycocotools clips them, crowd-only images skipped) give the labels
an independent rasterisation gives. Fixture of ``test_coco``: annotation ids 100..103 are image
1's (person triangle, car, person crowd RLE, giraffe), 104..106 image 2's, 107..108 image 3's."""

import json

import numpy as np
import pytest
from PIL import Image
from test_coco import BAR, COUCH, CROWD, L_SHAPE, H, W, polygon, write_coco

from benchmarks.cli import main
from benchmarks.data.voc import read_label

FIX = "correct that entry or extract the annotations archive again"


@pytest.fixture
def coco(tmp_path):
    """The fixture's COCO folder, its VOC tree beside it, and the path of its JSON."""
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    for folder in ("JPEGImages", "ImageSets/Segmentation"):
        (voc / folder).mkdir(parents=True)
    write_coco(tmp_path / "coco")
    return tmp_path / "coco" / "annotations" / "instances_train2017.json"


def edit(path, change) -> None:
    content = json.loads(path.read_text())
    change(content)
    path.write_text(json.dumps(content))


def annotation(content, ident):
    return next(a for a in content["annotations"] if a["id"] == ident)


def prepare(capsys, json_path) -> tuple[int, str, str]:
    root = json_path.parents[2]
    status = main(["prepare-data", "--data", str(root), "--coco", str(root / "coco")])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def set_image(ident, key, value):
    return lambda c: c["images"][ident - 1].__setitem__(key, value)


def set_annotation(ident, key, value):
    return lambda c: annotation(c, ident).__setitem__(key, value)


def crowd_size(c):
    annotation(c, 102)["segmentation"]["size"] = [H + 1, W]


def crowd_runs(c):
    annotation(c, 102)["segmentation"]["counts"][-1] -= 1


def all_crowd(c):
    for a in c["annotations"]:
        a["iscrowd"] = 1


FAULTS = {
    "empty object": (lambda c: c.clear(), "{json} holds no 'images' list (a COCO instances file has 'images', "
                     "'annotations' and 'categories'); pass the folder of instances_train2014.json (or 2017)"),
    "no images key": (lambda c: c.pop("images"), "{json} holds no 'images' list (a COCO instances file has 'images', "
                      "'annotations' and 'categories'); pass the folder of instances_train2014.json (or 2017)"),
    "NaN height": (set_image(1, "height", float("nan")), "{json}: image 1: height nan is not a positive integer; "
                   + FIX),
    "negative height": (set_image(2, "height", -10), "{json}: image 2: height -10 is not a positive integer; " + FIX),
    "integer file_name": (set_image(1, "file_name", 1), "{json}: image 1: file_name 1 is not the name of a .jpg file; "
                          + FIX),
    "shared file_name": (set_image(2, "file_name", "000000000001.jpg"), "{json}: images 1 and 2: both are the file "
                         "000000000001.jpg (one label each would be written over the other); " + FIX),
    "RLE size": (crowd_size, "{json}: annotation 102 (image 1): RLE size [11, 12] is not its image's [height, width] "
                 "[10, 12]; " + FIX),
    "RLE runs": (crowd_runs, "{json}: annotation 102 (image 1): RLE runs cover 119 pixels, not the image's 120; "
                 + FIX),
    "far-out polygon": (set_annotation(100, "segmentation", [[1, 1, 1e9, 1, 1, 7]]), "{json}: annotation 100 (image "
                        "1): polygon vertex (1e+09, 1) lies more than the image's size outside its 12x10 pixels; "
                        + FIX),
    "NaN polygon": (set_annotation(100, "segmentation", [[1, 1, float("nan"), 1, 1, 7]]), "{json}: annotation 100 "
                    "(image 1): a polygon holds NaN or infinite coordinates; " + FIX),
    "unknown image": (set_annotation(100, "image_id", 99), "{json}: annotation 100: image_id 99 is not the id of a "
                      "listed image; " + FIX),
    "object image_id": (set_annotation(100, "image_id", {"id": 1}), "{json}: annotation 100: image_id {{'id': 1}} is "
                        "not the id of a listed image; " + FIX),
    "crowd only": (all_crowd, "{json}: no image has a non-crowd instance of a VOC class (of 4 images), so the coco "
                   "split would be empty; pass the COCO training set's instances file"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_faulty_instances_file_is_one_line_and_writes_nothing(capsys, coco, fault):
    change, message = FAULTS[fault]
    edit(coco, change)
    status, out, err = prepare(capsys, coco)
    assert (status, out, err) == (2, "", f"error: {message.format(json=coco)}\n")
    voc = coco.parents[2] / "VOCdevkit" / "VOC2012"
    assert not (voc / "SegmentationClassCOCO").exists() and not (voc / "ImageSets/Segmentation/coco.txt").exists()


@pytest.mark.parametrize(("content", "message"), [
    ("", "{json} is not JSON (JSONDecodeError); extract the annotations archive again"),
    ("[" * 100_000, "{json} is not JSON (RecursionError); extract the annotations archive again"),
    ("[]", "{json} holds a JSON list, not an object with 'images', 'annotations' and 'categories'; pass the folder of "
           "instances_train2014.json (or 2017)"),
])
def test_a_file_that_is_no_instances_object_is_one_line(capsys, coco, content, message):
    coco.write_text(content)
    assert prepare(capsys, coco) == (2, "", f"error: {message.format(json=coco)}\n")


def test_image_files_missing_damaged_or_of_another_size(capsys, coco):
    folder = coco.parents[1] / "train2017"
    image = folder / "000000000002.jpg"
    image.unlink()
    assert prepare(capsys, coco) == (2, "", f"error: {coco}: 1 COCO images with VOC categories are missing from "
                                     f"{folder}, e.g. image 2 (000000000002.jpg); extract the COCO training images "
                                     "(train2017.zip) there\n")
    Image.fromarray(np.zeros((H, W + 8, 3), np.uint8)).save(image)
    assert prepare(capsys, coco) == (2, "", f"error: {coco}: image 2 (000000000002.jpg) is 20x10 in {folder}, its "
                                     "entry says 12x10 (width x height); " + FIX + "\n")
    image.write_bytes(b"not a jpeg")
    assert prepare(capsys, coco) == (2, "", f"error: {image} does not read as an image (UnidentifiedImageError); "
                                     "extract train2017.zip again\n")
    assert not (coco.parents[2] / "VOCdevkit" / "VOC2012" / "SegmentationClassCOCO").exists()


@pytest.mark.parametrize("bad", [[1, 1, 9], [1, 1, 9, 1, 1, 7, 4], [1, 1, 9, 1]],
                         ids=["three numbers", "odd count", "two points"])
def test_invalid_polygons_are_dropped_and_counted(capsys, coco, bad):
    """The person triangle replaced by an invalid polygon: dropped (detectron2's rule), so image 1
    is the fixture's label without the person; a four-number polygon is not read as a box."""
    edit(coco, set_annotation(100, "segmentation", [bad]))
    status, out, err = prepare(capsys, coco)
    assert (status, err) == (0, "")
    assert "(2 without, skipped, 1 of them with VOC crowd regions only; 1 polygons of fewer than three points or an " \
           "odd count dropped, as detectron2 drops them, and 1 instances left without one)" in out
    expected = np.zeros((H, W), np.uint8)
    expected[CROWD] = 255
    expected[polygon(L_SHAPE)] = 7
    labels = coco.parents[2] / "VOCdevkit" / "VOC2012" / "SegmentationClassCOCO"
    np.testing.assert_array_equal(read_label(labels / "000000000001.png"), expected)


def test_vertices_outside_the_image_are_clipped_as_pycocotools_clips(capsys, coco):
    """Image 2's tv becomes a box from (-3, 6.2) to (20, 19), across three borders: the pixels
    whose centres it holds inside the image (rows 6..9, 48 pixels) are drawn, then the sofa (32)
    and the aeroplane (18) over it, largest first (pixel centres by matplotlib's Path)."""
    outside = [-3, 6.2, 20, 6.2, 20, 19, -3, 19]
    edit(coco, set_annotation(104, "segmentation", [outside]))
    assert prepare(capsys, coco)[0] == 0
    box = polygon(outside)
    assert box[6:].all() and not box[:6].any()
    expected = np.zeros((H, W), np.uint8)
    expected[box] = 20
    expected[COUCH] = 18
    expected[polygon(BAR)] = 1
    label = read_label(coco.parents[2] / "VOCdevkit" / "VOC2012" / "SegmentationClassCOCO" / "000000000002.png")
    np.testing.assert_array_equal(label, expected)
