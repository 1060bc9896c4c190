"""Host-side data code for mnist_train.py: IDX files and MNIST-C corruptions.

This module does not use libibvi. It is the Python twin of examples/idx.c,
examples/dataset.c and the eight corruptions of examples/corrupt.c that
mnist_train evaluates, written so that the results are bit for bit those of
the C code: the same pixel values (byte / 255 in float32), the same
per-image random streams (splitmix64 seeding xoshiro256**, keyed by seed,
corruption and image index) and the same floating-point operations. The C
and Python examples therefore print the same metrics table.

SPDX-License-Identifier: MIT
"""
import gzip
import math
import os

import numpy as np

IDX_IMAGES = 0x00000803
IDX_LABELS = 0x00000801


# ---- IDX files --------------------------------------------------------------

def read_idx(path, magic):
    """The array of an IDX file (gzip-compressed or plain), uint8, with the
    shape of its header. Raises ValueError for a malformed file."""
    with open(path, "rb") as f:
        head = f.read(2)
    opener = gzip.open if head == b"\x1f\x8b" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or int.from_bytes(data[:4], "big") != magic:
        raise ValueError("%s: not an IDX file with magic 0x%08x" % (path, magic))
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    count = int(np.prod(dims))
    if len(data) != offset + count:
        raise ValueError("%s: header says %s, the file holds %d bytes of data"
                         % (path, "x".join(map(str, dims)), len(data) - offset))
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


class Dataset:
    """images: (count, rows*cols) float32 = byte / 255; labels: int32."""

    def __init__(self, images, labels, rows, cols, classes):
        self.images, self.labels = images, labels
        self.rows, self.cols, self.classes = rows, cols, classes

    @property
    def count(self):
        return self.images.shape[0]

    @property
    def dim(self):
        return self.rows * self.cols

    @classmethod
    def load(cls, directory, split):
        """DIR/<split>-images-idx3-ubyte.gz and the labels (split "train" or
        "t10k"), as examples/dataset.c reads them."""
        raw = read_idx(os.path.join(directory, "%s-images-idx3-ubyte.gz" % split),
                       IDX_IMAGES)
        labels = read_idx(os.path.join(directory, "%s-labels-idx1-ubyte.gz" % split),
                          IDX_LABELS).astype(np.int32)
        if raw.shape[0] != labels.shape[0]:
            raise ValueError("%s: %d images but %d labels" % (directory, raw.shape[0],
                                                               labels.shape[0]))
        count, rows, cols = raw.shape
        images = raw.reshape(count, rows * cols).astype(np.float32) / np.float32(255)
        return cls(images, labels, rows, cols, int(labels.max()) + 1)

    def limit(self, count):
        self.images, self.labels = self.images[:count], self.labels[:count]

    def take_tail(self, count):
        """Splits off the last `count` examples into a new Dataset."""
        if count <= 0 or count >= self.count:
            raise ValueError("bad validation size %d" % count)
        first = self.count - count
        tail = Dataset(np.ascontiguousarray(self.images[first:]),
                       self.labels[first:].copy(), self.rows, self.cols, self.classes)
        self.limit(first)
        return tail


# ---- shuffling: splitmix64, as mnist_train.c ----------------------------------

M64 = (1 << 64) - 1


def splitmix64(state):
    """(new state, output) of one splitmix64 step on a Python int."""
    state = (state + 0x9E3779B97F4A7C15) & M64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return state, z ^ (z >> 31)


def shuffle(order, state):
    """Fisher-Yates of a Python list in place; returns the generator state."""
    for i in range(len(order) - 1, 0, -1):
        state, r = splitmix64(state)
        j = r % (i + 1)
        order[i], order[j] = order[j], order[i]
    return state


# ---- corruptions (examples/corrupt.c) -------------------------------------------

IDENTITY, SHOT_NOISE, IMPULSE_NOISE = 0, 1, 2
SHEAR, SCALE, ROTATE, BRIGHTNESS, TRANSLATE, STRIPE = 5, 6, 7, 8, 9, 10
NAMES = {IDENTITY: "identity", SHOT_NOISE: "shot_noise",
         IMPULSE_NOISE: "impulse_noise", SHEAR: "shear", SCALE: "scale",
         ROTATE: "rotate", BRIGHTNESS: "brightness", TRANSLATE: "translate",
         STRIPE: "stripe"}

_U = np.uint64


def _rotl(x, k):
    return (x << _U(k)) | (x >> _U(64 - k))


def _splitmix64_vec(x):
    x = x + _U(0x9E3779B97F4A7C15)
    z = x
    z = (z ^ (z >> _U(30))) * _U(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> _U(27))) * _U(0x94D049BB133111EB)
    return x, z ^ (z >> _U(31))


class Streams:
    """One xoshiro256** stream per image, advanced together (lanes)."""

    def __init__(self, seed, which, indices):
        x, k = splitmix64(seed & M64)
        x, k = splitmix64(k ^ (((which + 1) * 0xD1B54A32D192ED03) & M64))
        x = _U(k) ^ (indices.astype(np.uint64) * _U(0x8CB92BA72F3D8DD7))
        self.s = []
        for _ in range(4):
            x, out = _splitmix64_vec(x)
            self.s.append(out)

    def next(self, lanes=None):
        """The next output of every lane (or of the lanes given, by index;
        the others do not advance)."""
        s = self.s if lanes is None else [v[lanes] for v in self.s]
        s0, s1, s2, s3 = s
        result = _rotl(s1 * _U(5), 7) * _U(9)
        t = s1 << _U(17)
        s2 = s2 ^ s0
        s3 = s3 ^ s1
        s1 = s1 ^ s2
        s0 = s0 ^ s3
        s2 = s2 ^ t
        s3 = _rotl(s3, 45)
        if lanes is None:
            self.s = [s0, s1, s2, s3]
        else:
            for v, new in zip(self.s, (s0, s1, s2, s3)):
                v[lanes] = new
        return result

    def uniform(self, lanes=None):
        return (self.next(lanes) >> _U(11)).astype(np.float64) * (1.0 / 9007199254740992.0)

    def sign(self, lanes=None):
        return np.where((self.next(lanes) >> _U(63)) != 0, 1, -1)


def _clip01(v):
    """corrupt.c's clip01 on float32 (NaN -> 0)."""
    v = np.asarray(v, dtype=np.float32)
    return np.where(v > 0, np.minimum(v, np.float32(1)), np.float32(0)).astype(np.float32)


def _warp(images, rows, cols, a11, a12, a21, a22):
    """out(p) = bilinear(in, A (p - c) + c), zero outside, clipped; per-image
    coefficient arrays (n,), computed in the same order as warp_affine."""
    n = images.shape[0]
    img = images.reshape(n, rows, cols).astype(np.float64)
    cx, cy = (cols - 1) / 2.0, (rows - 1) / 2.0
    i, j = np.meshgrid(np.arange(rows, dtype=np.float64),
                       np.arange(cols, dtype=np.float64), indexing="ij")
    px, py = (j - cx)[None], (i - cy)[None]
    col = lambda a: np.asarray(a, dtype=np.float64).reshape(-1, 1, 1)
    sx = col(a11) * px + col(a12) * py + cx
    sy = col(a21) * px + col(a22) * py + cy
    inside = (sx > -1.0) & (sx < cols) & (sy > -1.0) & (sy < rows)
    x0, y0 = np.floor(sx), np.floor(sy)
    fx, fy = sx - x0, sy - y0
    x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
    v = np.zeros_like(sx)
    lane = np.arange(n).reshape(-1, 1, 1)
    for dy in (0, 1):
        yy = y0 + dy
        wy = fy if dy else 1.0 - fy
        for dx in (0, 1):
            xx = x0 + dx
            wx = fx if dx else 1.0 - fx
            ok = inside & (yy >= 0) & (yy < rows) & (xx >= 0) & (xx < cols) \
                & (wy != 0.0) & (wx != 0.0)
            pix = img[lane, np.clip(yy, 0, rows - 1), np.clip(xx, 0, cols - 1)]
            v = v + np.where(ok, wy * wx * pix, 0.0)
    return _clip01(v.astype(np.float32)).reshape(n, rows * cols)


def _poisson_rows(streams, lam):
    """Knuth's Poisson draw per lane for one pixel: lam (n,) float64."""
    n = lam.shape[0]
    k = np.zeros(n, dtype=np.int64)
    active = np.flatnonzero(lam > 0.0)
    if active.size == 0:
        return k
    lam = np.minimum(lam, 64.0)
    uniq, inverse = np.unique(lam[active], return_inverse=True)
    limit = np.array([math.exp(-v) for v in uniq])[inverse]  # libm's exp, as C
    p = np.ones(active.size)
    lanes, lim = active, limit
    while lanes.size:
        u = streams.uniform(lanes)
        idx = np.searchsorted(active, lanes)
        p[idx] = p[idx] * u
        k[lanes] += 1
        keep = p[idx] > lim
        lanes, lim = lanes[keep], lim[keep]
    return k - (lam > 0.0)  # k - 1 for the lanes that drew


def corrupt(which, images, rows, cols, seed, first_index=0):
    """corrupt_apply_ex(which, images, ...) for the corruptions above:
    image k uses the stream of image first_index + k."""
    n = images.shape[0]
    streams = Streams(seed, which, np.arange(first_index, first_index + n))
    if which == IDENTITY:
        return images.copy()
    if which == BRIGHTNESS:
        return _clip01(images + np.float32(0.5))
    if which == STRIPE:
        v = _clip01(images).reshape(n, rows, cols)
        sw = cols // 4
        v[:, :, :sw] = np.float32(1) - v[:, :, :sw]
        v[:, :, cols - sw:] = np.float32(1) - v[:, :, cols - sw:]
        return v.reshape(n, rows * cols)
    if which in (SHEAR, ROTATE):
        a = 0.4 * streams.sign().astype(np.float64)
        sin = np.array([math.sin(v) for v in a])
        cos = np.array([math.cos(v) for v in a])
        if which == SHEAR:
            return _warp(images, rows, cols, np.ones(n), -sin, np.zeros(n), cos)
        return _warp(images, rows, cols, cos, -sin, sin, cos)
    if which == SCALE:
        s = np.full(n, 1.0 / 0.7)
        return _warp(images, rows, cols, s, np.zeros(n), np.zeros(n), s)
    if which == TRANSLATE:
        dx, dy = 3 * streams.sign(), 3 * streams.sign()
        img = images.reshape(n, rows, cols)
        out = np.zeros_like(img)
        i = np.arange(rows).reshape(1, -1, 1)
        j = np.arange(cols).reshape(1, 1, -1)
        si, sj = i + dy.reshape(-1, 1, 1), j + dx.reshape(-1, 1, 1)
        ok = (si >= 0) & (si < rows) & (sj >= 0) & (sj < cols)
        lane = np.arange(n).reshape(-1, 1, 1)
        src = img[lane, np.clip(si, 0, rows - 1), np.clip(sj, 0, cols - 1)]
        out = np.where(ok, _clip01(src), np.float32(0))
        return out.astype(np.float32).reshape(n, rows * cols)
    if which == SHOT_NOISE:
        x = _clip01(images)
        out = np.empty_like(x)
        for q in range(rows * cols):
            k = _poisson_rows(streams, 3.0 * x[:, q].astype(np.float64))
            out[:, q] = _clip01((k / 3.0).astype(np.float32))
        return out
    if which == IMPULSE_NOISE:
        x = _clip01(images)
        out = x.copy()
        for q in range(rows * cols):
            hit = np.flatnonzero(streams.uniform() < 0.17)
            if hit.size:
                bit = (streams.next(hit) >> _U(63)) != 0
                out[hit, q] = np.where(bit, np.float32(1), np.float32(0))
        return out
    raise ValueError("corruption %d is not ported to Python" % which)
