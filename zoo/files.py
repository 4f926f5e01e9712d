"""Atomic file writes: every file the zoo leaves behind (checkpoints, exports, tar shards) is either the old one or
the complete new one."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

from zoo.errors import WriteError

__all__ = ["atomic_write"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(f)`` on a temporary file beside `path`, fsync it, and rename it over `path`.

    The temporary file lives in the same folder (so ``os.replace`` is atomic) and gets the permissions a plain
    ``open(path, 'wb')`` would give, not mkstemp's 0600. On any error it is removed and `path` is untouched; a
    failure to write (disk full, read-only folder, quota; torch.save reports these as a RuntimeError from its zip
    writer) is a :class:`~zoo.errors.WriteError` naming `path`.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise WriteError(f"cannot write {str(path)!r}: {e.strerror or e}") from None
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) or (isinstance(e, RuntimeError) and "inline_container" in str(e)):
            reason = (e.strerror or str(e)) if isinstance(e, OSError) else \
                "torch.save's zip writer failed, usually because the disk is full"
            kept = "the previous file is unchanged" if path.exists() else "nothing was written"
            raise WriteError(f"cannot write {str(path)!r} ({reason}); {kept}") from None
        raise
    return path
