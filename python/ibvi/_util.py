"""Helpers shared by the wrapper modules: handle cells and their locks,
checked conversion of Python values to C arguments, array conversion."""

import ctypes
import enum
import numbers
import operator
import os
import threading

import numpy as np

from ._errors import (InvalidArgument, OutOfMemory, ShapeError, StateError,
                      binding_error)

F_PTR = ctypes.POINTER(ctypes.c_float)
I32_PTR = ctypes.POINTER(ctypes.c_int32)
I64_PTR = ctypes.POINTER(ctypes.c_int64)
D_PTR = ctypes.POINTER(ctypes.c_double)
U8_PTR = ctypes.POINTER(ctypes.c_uint8)

#: IBVI_MAX_SAMPLES of common.h: the largest number of weight samples any
#: call takes (the binding sizes output buffers from `samples`, so it must
#: refuse larger counts itself before allocating).
MAX_SAMPLES = 65536

# ---- integers and other scalars crossing into C ------------------------------
#
# ctypes converts a Python int to c_int32/c_int64/c_uint64 by silently keeping
# the low bits, so -(2**32) + 3 reaches C as 3. Every integer argument goes
# through cint() with its C type, and is refused unless it fits.

#: (C type name, smallest, largest) of the integer types of the C API.
INT32 = ("int32_t", -2**31, 2**31 - 1)
INT64 = ("int64_t", -2**63, 2**63 - 1)
UINT64 = ("uint64_t", 0, 2**64 - 1)


def cint(value, ctype, fn, name):
    """`value` as a Python int that fits the C integer type `ctype` (INT32,
    INT64 or UINT64), else InvalidArgument naming `name`. Python ints,
    numpy integer scalars and other objects with ``__index__`` are
    accepted; bools, floats (numpy floats too), strings and anything else
    are refused, as are values out of the C type's range (which ctypes
    would silently wrap)."""
    if isinstance(value, (bool, np.bool_)):
        raise binding_error(InvalidArgument, fn, "%s must be an integer, not "
                            "a bool" % name)
    try:
        v = int(operator.index(value))
    except TypeError:
        raise binding_error(InvalidArgument, fn, "%s must be an integer, not %s"
                            % (name, type(value).__name__)) from None
    cname, lo, hi = ctype
    if not lo <= v <= hi:
        raise binding_error(InvalidArgument, fn, "%s = %d does not fit in %s "
                            "(%d..%d)" % (name, v, cname, lo, hi))
    return v


def cfloat(value, fn, name):
    """`value` as a Python float for a C float/double argument: real numbers
    (int, float, numpy scalars) only, else InvalidArgument naming `name`
    (the library checks the range)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise binding_error(InvalidArgument, fn, "%s must be a real number, "
                            "not %s" % (name, type(value).__name__))
    return float(value)


def cpath(path, fn, name="path"):
    """A file name (str, bytes or os.PathLike) as the bytes C receives.
    A NUL byte would silently cut the name short in C, so it is refused
    (InvalidArgument, a ValueError, as Python's own open() does)."""
    try:
        b = os.fsencode(path)
    except TypeError:
        raise binding_error(InvalidArgument, fn, "%s must be str, bytes or "
                            "os.PathLike, not %s"
                            % (name, type(path).__name__)) from None
    except UnicodeError as e:
        raise binding_error(InvalidArgument, fn, "%s cannot be encoded: %s"
                            % (name, e)) from None
    if b"\0" in b:
        raise binding_error(InvalidArgument, fn, "%s contains a NUL byte" % name)
    return b


def sample_rows(samples, fn, name="samples"):
    """The weight-sample count `samples` checked for int32_t and for the
    buffer the binding allocates from it: the number of row blocks that
    buffer needs (0 for samples <= 0, which the library then rejects with
    its own message), InvalidArgument above IBVI_MAX_SAMPLES."""
    samples = cint(samples, INT32, fn, name)
    if samples > MAX_SAMPLES:
        raise binding_error(InvalidArgument, fn, "%s = %d, expected at most "
                            "IBVI_MAX_SAMPLES = %d" % (name, samples, MAX_SAMPLES))
    return samples, max(samples, 0)


# ---- handles and their locks -------------------------------------------------


def acquire_all(locks, blocking=True):
    """Acquires `locks` in order; True when all are held. Non-blocking, or
    on an exception, releases what it took and returns False (raises)."""
    held = 0
    try:
        for lock in locks:
            if not lock.acquire(blocking):
                break
            held += 1
        else:
            return True
    except BaseException:
        release_all(locks[:held])
        raise
    release_all(locks[:held])
    return False


def release_all(locks):
    for lock in reversed(locks):
        lock.release()


def lock_order(objs):
    """The locks of objects (each with a ``_lockset``), deduplicated and
    in the one global order every multi-lock call uses (by id), so two
    calls taking overlapping sets can never deadlock."""
    if objs and all(o._lockset is objs[0]._lockset for o in objs):
        return objs[0]._lockset  # one network (and its optimizer): no sort
    seen = {}
    for o in objs:
        for lock in o._lockset:
            seen[id(lock)] = lock
    return tuple(seen[k] for k in sorted(seen))


_callbacks = threading.local()  # .depth: allocator callbacks running here


class in_callback:
    """Marks this thread as running an allocator callback: the library is
    in the middle of a call, so handle calls (which would re-enter it on a
    network whose lock this thread holds) are refused. (A finalizer may
    still free an unreferenced handle here: it cannot be the one the
    library is working on, which its caller references.)"""

    __slots__ = ()

    def __enter__(self):
        _callbacks.depth = getattr(_callbacks, "depth", 0) + 1

    def __exit__(self, *exc):
        _callbacks.depth -= 1
        return False


class Hold:
    """``with Hold(locks, check) as value``: acquires `locks` in order,
    then returns check() (None without one); if check() raises (a closed
    handle), the locks are released first. Exiting releases them."""

    __slots__ = ("locks", "check")

    def __init__(self, locks, check=None):
        self.locks = locks
        self.check = check

    def __enter__(self):
        if getattr(_callbacks, "depth", 0):
            raise binding_error(StateError, "Allocator", "ibvi objects cannot "
                                "be used from inside an allocator callback "
                                "(the library is in the middle of a call)")
        acquire_all(self.locks)
        if self.check is None:
            return None
        try:
            return self.check()
        except BaseException:
            release_all(self.locks)
            raise

    def __exit__(self, *exc):
        release_all(self.locks)
        return False


def hold(*objs):
    """Holds the locks of every object (networks, optimizers, ...) in the
    global order and yields the tuple of their C handles (StateError if any
    is closed)."""
    return Hold(lock_order(objs), lambda: tuple(o._h() for o in objs))


class Resource:
    """One C handle and the function that frees it.

    Wrapper objects own a Resource; a network also keeps strong references to
    the Resources of the optimizers and predictors that depend on it (not to
    the wrappers themselves), so it can free them first. ``release()`` is
    idempotent and uses only what the cell holds, so it is safe from
    ``__del__`` at any time, including interpreter shutdown. Callers hold
    the locks of the handle (and of its networks) while releasing.
    ``why`` tells a later call why the handle is gone, when it was not
    closed directly (e.g. "its network was closed")."""

    __slots__ = ("ptr", "_free", "why", "__weakref__")

    def __init__(self, ptr, free):
        self.ptr = ptr
        self._free = free
        self.why = None

    def __reduce_ex__(self, protocol):
        raise TypeError("cannot pickle or copy a C handle")

    def release(self, why=None):
        ptr, self.ptr = self.ptr, None
        if ptr:
            self.why = why
            self._free(ptr)


class Handle:
    """Base of the classes that own a C handle: a lock set, close(), context
    manager and a ``__del__`` that never raises nor blocks.

    Every call that uses the handle runs inside ``with self._use() as h``:
    it holds the object's ``_lockset`` (the locks of the networks it
    touches, sorted by id(); a network's own lock for a Net), and a handle
    closed meanwhile raises StateError instead of reaching C. Subclasses set
    ``_res`` and ``_lockset`` and may override ``_release()``."""

    _res = None
    _what = "handle"
    _lockset = ()

    def _h(self):
        res = self._res
        ptr = res.ptr if res is not None else None
        if ptr is None:
            why = res.why if res is not None else None
            raise binding_error(StateError, type(self).__name__,
                                "the %s is closed%s" % (
                                    self._what, " (%s)" % why if why else ""))
        return ptr

    def _use(self):
        """Context manager: holds this object's locks, yields its handle."""
        return Hold(self._lockset, self._h)

    @property
    def closed(self):
        """True once the handle has been released."""
        return self._res is None or self._res.ptr is None

    def _release(self):
        """Frees the handle; the caller holds ``_lockset``."""
        self._res.release()

    def close(self):
        """Releases the C handle now, after any call in progress on another
        thread has returned; later calls raise StateError. Idempotent."""
        if self._res is None:
            return
        with Hold(self._lockset):
            self._release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        # A finalizer runs wherever the garbage collector happens to run, so
        # it must neither raise nor wait for a lock (another thread holding
        # it might be waiting for a lock this thread holds). If a lock is
        # busy, the handle stays registered with its network, which frees
        # it when it is closed or finalised.
        try:
            res = self._res
            if res is None or res.ptr is None:
                return
            locks = self._lockset
            if acquire_all(locks, blocking=False):
                try:
                    self._release()
                finally:
                    release_all(locks)
        except BaseException:
            pass

    def __reduce_ex__(self, protocol):
        # A copied wrapper would free the same C handle twice.
        raise TypeError("cannot pickle or copy an ibvi.%s (a C handle)"
                        % type(self).__name__)


def new_lock():
    """The lock of one network (or accumulator): reentrant, so a call may
    use the object's other methods while holding it."""
    return threading.RLock()


def as_enum(cls, value, what, name=None):
    """An IntEnum member from a member, an int or a (case-insensitive) name;
    an int the enum does not know is returned as an int for the library to
    reject (and explain)."""
    name = name or cls.__name__
    if isinstance(value, str):
        try:
            return cls[value.upper()]
        except KeyError:
            raise binding_error(InvalidArgument, what, "%s = %r: unknown %s "
                                "(one of %s)" % (name, value, cls.__name__,
                                ", ".join(m.name.lower() for m in cls))) from None
    v = cint(value, INT32, what, name)
    try:
        return cls(v)
    except ValueError:
        return v


def f32(a, fn="ibvi", name="array"):
    """a as a C-contiguous float32 array; no copy when it already is one.
    Something numpy cannot read as numbers raises InvalidArgument."""
    try:
        return np.ascontiguousarray(a, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise binding_error(InvalidArgument, fn, "%s is not an array of "
                            "numbers: %s" % (name, e)) from None


def i32(a, fn, name):
    """Integer labels as a C-contiguous int32 array (no copy if they are)."""
    arr = np.asarray(a)
    if arr.dtype != np.int32:
        if arr.dtype.kind not in "iu":
            raise binding_error(InvalidArgument, fn, "%s must be integers, not %s"
                                % (name, arr.dtype))
        if arr.size and (arr.min() < -2**31 or arr.max() > 2**31 - 1):
            raise binding_error(InvalidArgument, fn, "%s do not fit in int32" % name)
    return np.ascontiguousarray(arr, dtype=np.int32)


def rows(a, cols, fn, name):
    """A 2-D float32 array with `cols` columns (the library cannot check the
    column count of a raw pointer, so the binding must)."""
    arr = f32(a, fn, name)
    if arr.ndim != 2:
        raise binding_error(ShapeError, fn, "%s must be 2-D (n, %d), got shape %s"
                            % (name, cols, arr.shape))
    if arr.shape[1] != cols:
        raise binding_error(ShapeError, fn, "%s has %d columns, expected %d"
                            % (name, arr.shape[1], cols))
    return arr


def images(a, shape, fn, name):
    """A batch of examples of per-example shape (c, h, w) as a 2-D float32
    array (n, c*h*w): `a` is NCHW (n, c, h, w) or already flat (n, c*h*w).
    A C-contiguous float32 array is reshaped without a copy; others are
    converted (copied) once."""
    arr = f32(a, fn, name)
    c, h, w = shape
    cols = c * h * w
    if arr.ndim == 4:
        if arr.shape[1:] != (c, h, w):
            raise binding_error(ShapeError, fn, "%s has shape %s, expected "
                                "(n, %d, %d, %d) or (n, %d)"
                                % (name, arr.shape, c, h, w, cols))
        return arr.reshape(arr.shape[0], cols)  # a view: arr is C-contiguous
    if arr.ndim != 2:
        raise binding_error(ShapeError, fn, "%s must be (n, %d, %d, %d) or "
                            "(n, %d), got shape %s"
                            % (name, c, h, w, cols, arr.shape))
    if arr.shape[1] != cols:
        raise binding_error(ShapeError, fn, "%s has %d columns, expected %d%s"
                            % (name, arr.shape[1], cols,
                               "" if h == w == 1 else
                               " (= %d x %d x %d)" % (c, h, w)))
    return arr


def matrix(a, fn, name):
    """A 2-D float32 array whose column count (an int32_t in C) fits."""
    arr = f32(a, fn, name)
    if arr.ndim != 2:
        raise binding_error(ShapeError, fn, "%s must be 2-D, got shape %s"
                            % (name, arr.shape))
    cint(arr.shape[1], INT32, fn, name + " columns")
    return arr


def vector(a, fn, name, dtype=np.float32):
    try:
        arr = np.ascontiguousarray(a, dtype=dtype)
    except (TypeError, ValueError) as e:
        raise binding_error(InvalidArgument, fn, "%s is not an array of "
                            "numbers: %s" % (name, e)) from None
    if arr.ndim != 1:
        raise binding_error(ShapeError, fn, "%s must be 1-D, got shape %s"
                            % (name, arr.shape))
    return arr


def empty(shape, fn, name="out", dtype=np.float32):
    """np.empty(shape); an allocation numpy cannot make raises OutOfMemory."""
    try:
        return np.empty(shape, dtype=dtype)
    except (MemoryError, ValueError) as e:
        raise binding_error(OutOfMemory, fn, "cannot allocate %s of shape %s: %s"
                            % (name, tuple(shape), e)) from None


def out_array(out, shape, fn, name="out", dtype=np.float32):
    """A new array of `shape`, or the caller's `out` after checking it: C
    writes exactly `shape` floats there, so both the dtype and the shape
    must be those."""
    if out is None:
        return empty(shape, fn, name, dtype)
    if (not isinstance(out, np.ndarray) or out.dtype != dtype
            or not out.flags.c_contiguous or not out.flags.writeable):
        raise binding_error(InvalidArgument, fn, "%s must be a writeable "
                            "C-contiguous %s array" % (name, np.dtype(dtype).name))
    if out.shape != tuple(shape):
        raise binding_error(ShapeError, fn, "%s has shape %s, expected %s"
                            % (name, out.shape, tuple(shape)))
    return out


def fp(arr):
    """float * to the data of a float32 array (keeps the array referenced)."""
    return None if arr is None else arr.ctypes.data_as(F_PTR)


def ip(arr):
    return None if arr is None else arr.ctypes.data_as(I32_PTR)


class Enum(enum.IntEnum):
    def __repr__(self):
        return "%s.%s" % (type(self).__name__, self.name)
