"""The one atomic writer of everything a run leaves on disk: text, JSON and gzip.

Every file is written atomically (temporary file, fsync, rename), so a reader never sees half of
it, and masked first (harness/secrets.py), so no secret reaches a file.
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from pathlib import Path
from typing import Any

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


def _write_bytes_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are meant to be shared
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


def write_json_atomic(path: Path, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON (lm-eval's non-JSON values made plain)."""
    write_text_atomic(
        path, json.dumps(obj, indent=2, default=json_default, ensure_ascii=False) + "\n"
    )
