"""How long a dataset fingerprint takes on a large folder, beside the scan ImageFolder makes.

The script writes ``--files`` small files in class subfolders, then times, side by side in one
run: torchvision's folder scan (what `sweep.data.image_folder` costs today without any
fingerprint), `sweep.data._fingerprint.folder_fingerprint` (one ``stat`` per file), and, on
the first ``--read`` files only, hashing the bytes (what a content hash would cost per file).
Ratios are against the scan. Run it on a quiet machine; the page cache makes a second run
faster than the first (drop caches between runs for the cold figure).

    python experiments/benchmarks/fingerprint.py [--files 1000000] [--classes 100] [--read 10000]
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from pathlib import Path

from sweep.data._fingerprint import folder_fingerprint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1_000_000)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--read", type=int, default=10_000)
    parser.add_argument("--bytes", type=int, default=4096, help="size of each file")
    args = parser.parse_args()
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        payload = b"\0" * args.bytes
        per_class = -(-args.files // args.classes)
        for c in range(args.classes):
            folder = root / f"class{c:04d}"
            folder.mkdir()
            for i in range(min(per_class, args.files - c * per_class)):
                (folder / f"{i:07d}.jpg").write_bytes(payload)
        classes = {f"class{c:04d}": c for c in range(args.classes)}

        start = time.perf_counter()
        samples = make_dataset(str(root), classes, IMG_EXTENSIONS)
        scan = time.perf_counter() - start
        start = time.perf_counter()
        folder_fingerprint(root)
        stat = time.perf_counter() - start
        start = time.perf_counter()
        for path, _ in samples[: args.read]:
            hashlib.sha256(Path(path).read_bytes()).hexdigest()
        read = (time.perf_counter() - start) * len(samples) / max(min(args.read, len(samples)), 1)

    print(f"{len(samples)} files of {args.bytes} bytes")
    print(f"ImageFolder scan         {scan:8.2f} s   1.00x")
    print(f"fingerprint (stat)       {stat:8.2f} s   {stat / scan:.2f}x")
    print(f"sha256 of bytes (extrap.) {read:7.2f} s   {read / scan:.2f}x")


if __name__ == "__main__":
    main()
