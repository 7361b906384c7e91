"""``python -m benchmarks caffe-blobs``: each layer of a .caffemodel (name, type, blob shapes and statistics)."""

from __future__ import annotations

import argparse
import json

NAME = "caffe-blobs"
HELP = "each layer of a .caffemodel: name, type, blobs (shape, mean, std)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="a .caffemodel (current or legacy V1 format)")
    parser.add_argument("--json", action="store_true")


def main(args: argparse.Namespace) -> int:
    from benchmarks.caffe_blobs import blob_rows

    rows = blob_rows(args.file)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        blobs = "  ".join(f"{'x'.join(map(str, b['shape'])) or 'scalar'} mean {b['mean']:.6g} std {b['std']:.6g}"
                          for b in row["blobs"])
        print(f"{row['layer']:<20} {row['type']:<16} {blobs}")
    return 0
