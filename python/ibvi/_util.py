"""Helpers shared by the wrapper modules: handle cells, array conversion."""

import ctypes
import enum

import numpy as np

from ._errors import (InvalidArgument, ShapeError, StateError, binding_error)

F_PTR = ctypes.POINTER(ctypes.c_float)
I32_PTR = ctypes.POINTER(ctypes.c_int32)
I64_PTR = ctypes.POINTER(ctypes.c_int64)
D_PTR = ctypes.POINTER(ctypes.c_double)
U8_PTR = ctypes.POINTER(ctypes.c_uint8)


class Resource:
    """One C handle and the function that frees it.

    Wrapper objects own a Resource; a network also keeps strong references to
    the Resources of the optimizers and predictors that depend on it (not to
    the wrappers themselves), so it can free them first. ``release()`` is
    idempotent and uses only what the cell holds, so it is safe from
    ``__del__`` at any time, including interpreter shutdown."""

    __slots__ = ("ptr", "_free", "__weakref__")

    def __init__(self, ptr, free):
        self.ptr = ptr
        self._free = free

    def __reduce_ex__(self, protocol):
        raise TypeError("cannot pickle or copy a C handle")

    def release(self):
        ptr, self.ptr = self.ptr, None
        if ptr:
            self._free(ptr)


class Handle:
    """Base of the classes that own a C handle: close(), context manager and
    a ``__del__`` that never raises."""

    _res = None
    _what = "handle"

    def _h(self):
        res = self._res
        ptr = res.ptr if res is not None else None
        if ptr is None:
            raise binding_error(StateError, type(self).__name__,
                                "the %s is closed" % self._what)
        return ptr

    @property
    def closed(self):
        """True once the handle has been released."""
        return self._res is None or self._res.ptr is None

    def close(self):
        """Releases the C handle now; later calls raise StateError. Idempotent."""
        res = self._res
        if res is not None:
            res.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        try:
            self.close()
        except BaseException:  # never raise from a finalizer
            pass

    def __reduce_ex__(self, protocol):
        # A copied wrapper would free the same C handle twice.
        raise TypeError("cannot pickle or copy an ibvi.%s (a C handle)"
                        % type(self).__name__)


def as_enum(cls, value, what):
    """An IntEnum member from a member, an int or a (case-insensitive) name."""
    if isinstance(value, str):
        try:
            return cls[value.upper()]
        except KeyError:
            raise binding_error(InvalidArgument, what, "unknown %s %r (one of %s)"
                                % (cls.__name__, value,
                                   ", ".join(m.name.lower() for m in cls))) from None
    try:
        return cls(int(value))
    except ValueError:
        return int(value)  # let the library reject (and explain) unknown values


def f32(a):
    """a as a C-contiguous float32 array; no copy when it already is one."""
    return np.ascontiguousarray(a, dtype=np.float32)


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
    arr = f32(a)
    if arr.ndim != 2:
        raise binding_error(ShapeError, fn, "%s must be 2-D (n, %d), got shape %s"
                            % (name, cols, arr.shape))
    if arr.shape[1] != cols:
        raise binding_error(ShapeError, fn, "%s has %d columns, expected %d"
                            % (name, arr.shape[1], cols))
    return arr


def matrix(a, fn, name):
    arr = f32(a)
    if arr.ndim != 2:
        raise binding_error(ShapeError, fn, "%s must be 2-D, got shape %s"
                            % (name, arr.shape))
    return arr


def vector(a, fn, name, dtype=np.float32):
    arr = np.ascontiguousarray(a, dtype=dtype)
    if arr.ndim != 1:
        raise binding_error(ShapeError, fn, "%s must be 1-D, got shape %s"
                            % (name, arr.shape))
    return arr


def out_array(out, shape, fn, name="out", dtype=np.float32):
    """A new array of `shape`, or the caller's `out` after checking it."""
    if out is None:
        return np.empty(shape, dtype=dtype)
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
