"""The one atomic writer of everything a run leaves on disk: text, JSON and gzip.

Every file is written atomically (temporary file, fsync, rename), so a reader never sees half of
it, and masked first (harness/secrets.py), so no secret reaches a file; the one exception,
``write_private_json``, keeps a secret on purpose in a file only its owner can read.
"""

from __future__ import annotations

import errno
import gzip
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.secrets import mask

_UMASK = os.umask(0)
os.umask(_UMASK)


def json_default(obj: Any) -> Any:
    """JSON for what lm-eval's results hold besides plain data (numpy scalars, callables, sets)."""
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, set | tuple):
        return list(obj)
    return str(obj)


class DiskFull(HarnessError):
    """A file of the run could not be written: its file system is full (or over quota)."""

    exit_code = 1  # the run went on; what it computed is in the summary and on the console

    def __init__(self, path: Path, size: int) -> None:
        self.path, self.size = path, size
        try:
            free = shutil.disk_usage(next(p for p in (path, *path.parents) if p.exists())).free
        except (OSError, StopIteration):
            free = -1
        room = f"{free / 1024:.0f} kB free there" if free >= 0 else "no room left there"
        super().__init__(
            f"could not write {path} ({max(size, 1) / 1024:.0f} kB): no space left on its "
            f"device ({room}). Fix: free space there, or outputs_root=<a folder with room>"
        )


def _write_bytes_atomic(path: Path, data: bytes) -> None:
    try:
        _write_bytes(path, data)
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFull(path, len(data)) from None
        raise


def _write_bytes(path: Path, data: bytes, mode: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes 0600; results are meant to be shared unless a mode says otherwise
        os.chmod(tmp, 0o666 & ~_UMASK if mode is None else mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str, *, compress: bool = False) -> None:
    """Write ``text`` to ``path`` so that the file is either old or complete, never partial.

    Secrets in it (tokens, keys, credentials in URIs) are masked first (harness/secrets.py).
    ``compress`` writes it gzip-compressed (``mtime=0``: the same text gives the same bytes).
    """
    data = mask(text).encode("utf-8")
    if compress:
        data = gzip.compress(data, mtime=0)
    _write_bytes_atomic(path, data)


def write_private_json(path: Path, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON readable and writable by its owner only (0600),
    NOT masked: for a file that must keep a secret (a service's API key in its registry entry)."""
    _write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode(), mode=0o600)


def write_json_atomic(path: Path, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON (lm-eval's non-JSON values made plain)."""
    write_text_atomic(
        path, json.dumps(obj, indent=2, default=json_default, ensure_ascii=False) + "\n"
    )
