"""Files that appear whole or not at all, and a lock for work only one process should do."""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if absent) for the block."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write through ``write`` to a hidden temporary file beside ``path``, fsync, rename.

    Readers see the old file or the complete new one; a kill leaves only a ``.*.tmp`` file. The
    file gets the mode ``open()`` would give it (``0o666`` less the umask), so a store shared
    by a group stays readable by the group.

    Raises:
        OSError: Writing failed (full disk, no permission...); the message names ``path`` and
            no file is left behind.
    """
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise _naming(e, path) from e
    recording = None
    try:
        # mkstemp creates 0o600 whatever the umask, and the rename would keep that mode.
        with suppress(OSError):  # filesystems without Unix modes (SMB...) refuse; keep going
            os.fchmod(fd, 0o666 & ~umask())
        with os.fdopen(fd, "wb") as f:
            recording = _Recording(f)
            write(recording)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise _naming(e, path) from e
        if recording is not None and recording.error is not None:
            # torch.save reports a failed write as a RuntimeError from its C++ writer
            # ("inline_container.cc ... file write failed"), the reason (a full disk) lost
            raise _naming(recording.error, path) from e
        raise


class _Recording:
    """A binary file that keeps the `OSError` its ``write`` raised, for writers that turn it into
    something else."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self._file.write(data)
        except OSError as e:
            self.error = e
            raise

    def __getattr__(self, name: str) -> object:
        return getattr(self._file, name)


def umask() -> int:
    """The process's umask, read without changing it (``os.umask`` can only set it, and setting
    and restoring it races with any thread creating a file meanwhile)."""
    with suppress(OSError, ValueError, IndexError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    # No procfs (macOS, old kernels): the racy way is the only way left.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _naming(error: OSError, path: Path) -> OSError:
    """``error`` about ``path`` itself: a temporary name or a bare errno help nobody."""
    if error.errno is None:
        return OSError(f"{error}: {str(path)!r}")
    # OSError(errno, ...) picks the matching subclass (PermissionError...), so callers can
    # still catch what they caught before.
    return OSError(error.errno, error.strerror, str(path))
