"""Files the harness writes and reads back: atomic writes (nothing half-written is ever at the
final path), hashes, checked ``torch.load``, and whether the process that left a lock or a
staging folder is still alive."""

from __future__ import annotations

import errno
import hashlib
import os
import pickle
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import torch

from benchmarks.errors import UsageError, WeightsError
from methods.errors import SegreproError

__all__ = ["DamagedFile", "NoSpace", "OutsideRoot", "check_finite", "check_output", "file_sha256", "load_torch",
           "process_alive", "save_torch", "space_checked", "under", "write_atomic", "write_bytes_atomic"]


class DamagedFile(SegreproError, ValueError):
    """A file the harness wrote that no longer reads (cut short, overwritten); the message says what to do."""


class OutsideRoot(SegreproError, ValueError):
    """A name (record field, registered method, split id, option value) that would make a path leave its root."""


def under(root: Path, *names: str) -> Path:
    """``root/names...``, or :class:`OutsideRoot` if that path, normalised (``..`` and absolute
    names resolved without following symlinks, so a tree of symlinked files still reads), is not
    under ``root``: a name from a record, a registry or a split list never moves a read or write."""
    path = root.joinpath(*names)
    if not Path(os.path.abspath(path)).is_relative_to(os.path.abspath(root)):
        raise OutsideRoot(f"{'/'.join(names)!r} names {path}, outside {root}; names must be plain file names")
    return path


def check_output(out: Path, inputs: list[Path], option: str = "--out") -> None:
    """Refuse, before any work, an output that is one of the command's inputs or exists and is not a
    regular file: the atomic rename would replace it (a source file, a device node)."""
    if out.exists() and not out.is_file():
        raise UsageError(f"{option} {out} exists and is not a regular file; name a new .pt file")
    target = out.resolve()
    for source in inputs:
        if target == Path(source).resolve():
            raise UsageError(f"{option} {out} is the input {source}: writing it would replace the input; name "
                             "another file")


def check_finite(state: dict[str, object], source: object) -> None:
    """Refuse weights holding NaN or inf (they score as a plausible-looking number), naming the tensor."""
    for name, value in state.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise WeightsError(f"weights {source}: tensor {name} holds {bad} NaN/inf values; these weights cannot be "
                             "used (retrain, or convert the source again)")


class NoSpace(SegreproError, OSError):
    """The disk (or the quota, or the process's file-size limit) is full under a folder the harness writes."""


_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})  # EFBIG: RLIMIT_FSIZE or the filesystem's limit


@contextmanager
def space_checked(folder: Path) -> Iterator[None]:
    """Turn a full disk while the block writes under ``folder`` into one :class:`NoSpace` line
    naming the folder (the OS error names no file when ``write`` fails); other errors pass."""
    try:
        yield
    except OSError as error:
        if error.errno not in _NO_SPACE or isinstance(error, NoSpace):
            raise
        full = NoSpace(f"no space left to write under {folder} ({error.strerror}); nothing half-written was left: "
                       "free space there, or point --runs, --results or SEGREPRO_CACHE at a larger disk, and run again")
        full.errno = error.errno
        raise full from None


class _WriteErrors:
    """A file whose failed ``write`` is remembered: ``torch.save`` turns it into a ``RuntimeError``
    that no longer says the disk was full."""

    def __init__(self, file: BinaryIO) -> None:
        self.file, self.error = file, None

    def write(self, data: bytes) -> int:
        try:
            return self.file.write(data)
        except OSError as error:
            self.error = error
            raise

    def __getattr__(self, name: str) -> object:
        return getattr(self.file, name)


def write_atomic(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """``write(file)`` into a new temporary file beside ``path`` (mode 0666 less the umask, as
    ``open`` gives; ``mkstemp`` would give 0600), then renamed over ``path``; a full disk is a
    :class:`NoSpace` naming the folder, with the temporary file removed."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        with space_checked(path.parent):
            path.parent.mkdir(parents=True, exist_ok=True)
            with os.fdopen(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as raw:
                file = _WriteErrors(raw)
                try:
                    write(file)  # type: ignore[arg-type]
                except RuntimeError:
                    if file.error is None:
                        raise
                    raise file.error from None
            os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """``data`` into ``path`` through :func:`write_atomic`."""
    write_atomic(path, lambda file: file.write(data))


def save_torch(obj: object, path: Path) -> None:
    """``torch.save`` atomically."""
    write_atomic(path, lambda file: torch.save(obj, file))


def load_torch(path: Path, fix: str) -> dict[str, object]:
    """``torch.load(weights_only=True)`` of a file the harness saved; one cut short (a full disk, an
    interrupted copy) fails in many ways inside torch, each a :class:`DamagedFile` naming the
    file and ``fix``."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, KeyError, OSError, pickle.UnpicklingError) as error:
        raise DamagedFile(f"{path} is truncated or damaged (torch.load: {type(error).__name__}); {fix}") from None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host exists (another user's counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True
