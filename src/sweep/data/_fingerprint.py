"""What a dataset holds, as a short hash: part of trial and baseline keys (``dataset.fingerprint``).

Files are fingerprinted by their list, sizes and modification times, read with ``stat`` and
never opened: a folder of a million images costs a million ``stat`` calls (seconds on a local
disk), while hashing their bytes would read the whole dataset before every run. An edited,
added, removed or renamed file changes the fingerprint; so does a copy that does not keep
modification times (``cp`` without ``-p``), which then trains a new baseline once. Paths are
taken relative to the folder, so the same files elsewhere (moved, or copied with their times)
keep it.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

# Items of a dataset without files hashed for its fingerprint, spread evenly over it.
SAMPLED_ITEMS = 16


def files_fingerprint(root: str | os.PathLike, paths: Iterable[str | os.PathLike]) -> str:
    """Hash of the relative path, size and modification time of each of ``paths`` under
    ``root``, in sorted order.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     _ = Path(d, "a.png").write_bytes(b"x")
        ...     files_fingerprint(d, [Path(d, "a.png")]) == files_fingerprint(d, [])
        False
    """
    entries = []
    for path in paths:
        st = os.stat(path)
        entries.append((os.path.relpath(path, root), st.st_size, st.st_mtime_ns))
    return _digest(f"{p}\0{size}\0{mtime}" for p, size, mtime in sorted(entries))


def folder_fingerprint(folder: str | os.PathLike) -> str:
    """`files_fingerprint` of every regular file below ``folder``, found by an ``os.scandir``
    walk (symbolic links to files followed, to folders not)."""
    return files_fingerprint(folder, _walk(Path(folder)))


def object_fingerprint(dataset: Any) -> str:
    """The fingerprint of a user's ``torch.utils.data.Dataset``, by what it exposes.

    - ``samples``, a list of ``(path, label)`` as torchvision's ``ImageFolder`` and
      ``DatasetFolder`` keep: `files_fingerprint` of those files.
    - ``root``, a folder: `folder_fingerprint` of it (every file below, read or not).
    - neither: ``len(dataset)`` and the bytes of `SAMPLED_ITEMS` items spread evenly over it,
      read with torch's, NumPy's and Python's RNGs seeded (random transforms give the same
      items each time; the caller's RNG states are restored). A change to an item that is not
      sampled goes unseen.
    """
    samples = getattr(dataset, "samples", None)
    if isinstance(samples, list | tuple) and samples and _is_path_pair(samples[0]):
        paths = [s[0] for s in samples]
        return "files:" + files_fingerprint(os.path.commonpath(paths), paths)
    root = getattr(dataset, "root", None)
    if isinstance(root, str | os.PathLike) and Path(root).is_dir():
        return "folder:" + folder_fingerprint(root)
    return "items:" + items_fingerprint(dataset)


def items_fingerprint(dataset: Any, sampled: int = SAMPLED_ITEMS) -> str:
    """Hash of ``len(dataset)`` and the tensors of ``sampled`` items spread evenly over it
    (the first and the last among them)."""
    n = len(dataset)
    picked = sorted({round(i * (n - 1) / max(sampled - 1, 1)) for i in range(min(sampled, n))})
    parts = [str(n)]
    state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):
            for i in picked:
                torch.manual_seed(i)
                random.seed(i)
                np.random.seed(i)
                parts.append(_item_bytes(dataset[i]))
    finally:
        random.setstate(state[0])
        np.random.set_state(state[1])
    return _digest(parts)


def _item_bytes(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        return f"{t.dtype}{list(t.shape)}" + hashlib.sha256(t.numpy().tobytes()).hexdigest()
    if isinstance(value, tuple | list):
        return "(" + ",".join(_item_bytes(v) for v in value) + ")"
    return repr(value)


def _is_path_pair(sample: Any) -> bool:
    return isinstance(sample, tuple | list) and isinstance(sample[0], str | os.PathLike)


def _walk(folder: Path) -> Iterable[str]:
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                yield from _walk(Path(entry.path))
            elif entry.is_file():
                yield entry.path


def _digest(lines: Iterable[str]) -> str:
    h = hashlib.sha256()
    for line in lines:
        h.update(line.encode("utf-8", "surrogateescape") + b"\n")
    return h.hexdigest()[:16]
