"""Which source each prepared label was written from: ``prepare-data`` keeps a PNG only while the
sha256 of its source (an SBD ``.mat``, a VOC annotation, a COCO image's annotation entries) is the
one recorded when it was written, so a source fixed or replaced after a first run is converted
again instead of leaving the stale PNG (issue 26: existence alone kept the old label).

The record is ``.sources.json`` in the output folder (``{"<id>": "<sha256>"}``), written with a
temporary file and a rename, also when the run is interrupted, so an interrupted run still resumes
where it stopped. A PNG without an entry (from a run before this record, or written by hand) counts
as stale and is rewritten."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from benchmarks.data.voc import DataError
from benchmarks.files import write_bytes_atomic

__all__ = ["MANIFEST", "SourceManifest", "bytes_sha256"]

MANIFEST = ".sources.json"


def bytes_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class SourceManifest:
    """The ``id -> source sha256`` record of one output folder."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / MANIFEST
        self.entries: dict[str, str] = {}
        if self.path.is_file():
            try:
                entries = json.loads(self.path.read_text())
            except (ValueError, UnicodeDecodeError):
                entries = None
            if not isinstance(entries, dict) or not all(isinstance(v, str) for v in entries.values()):
                raise DataError(f"{self.path} is damaged (not an object of id -> sha256); delete it and run "
                                "prepare-data again (every label is then rewritten)")
            self.entries = entries

    def is_current(self, target: Path, image_id: str, source_hash: str) -> bool:
        """Whether ``target`` exists and was written from a source of ``source_hash``."""
        return target.is_file() and self.entries.get(image_id) == source_hash

    def record(self, image_id: str, source_hash: str) -> None:
        self.entries[image_id] = source_hash

    def save(self) -> None:
        write_bytes_atomic(self.path, json.dumps(self.entries, indent=0, sort_keys=True).encode())
