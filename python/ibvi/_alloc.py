"""Custom allocators (struct ibvi_allocator) written in Python."""

import ctypes
import operator
import threading

from . import _util
from ._errors import InvalidArgument, binding_error
from ._lib import ALLOC_FUNC, FREE_FUNC, ibvi_allocator


class Allocator:
    """An ibvi_allocator whose functions are Python methods.

    Subclass it and override ``alloc(size) -> address`` (an int, 0 or None
    for failure; the memory must be aligned for float/double/int64) and
    ``free(address)``. Give it to ``Net(..., allocator=)``,
    ``Metrics(..., allocator=)`` or the load functions: every allocation of
    that network (and of its optimizers and predictors) then goes through it.
    Each network or accumulator keeps a reference to its allocator, so the
    callbacks live as long as the memory they manage.

    The callbacks run with the GIL held, inside a library call that holds
    its network's lock; an exception in ``alloc`` counts as a failed
    allocation (the call then raises OutOfMemory), one in ``free`` is
    ignored. They must not use ibvi objects: a call on a network, layer,
    optimizer, predictor or metrics accumulator from inside a callback
    raises StateError (the library is in the middle of a call)."""

    def __init__(self):
        self._alloc_cb = ALLOC_FUNC(self._c_alloc)
        self._free_cb = FREE_FUNC(self._c_free)
        self._struct = ibvi_allocator(self._alloc_cb, self._free_cb, None)

    def _c_alloc(self, opaque, size):
        try:
            with _util.in_callback():
                ptr = self.alloc(size)
            if not ptr:
                return None
            # anything but an address (an int that fits a pointer) is a failure
            if isinstance(ptr, bool) or not 0 < operator.index(ptr) < 2**64:
                return None
            return operator.index(ptr)
        except BaseException:
            return None

    def _c_free(self, opaque, ptr):
        try:
            if ptr:
                with _util.in_callback():
                    self.free(ptr)
        except BaseException:
            pass

    def _as_parameter(self):
        return ctypes.byref(self._struct)

    def alloc(self, size):
        raise NotImplementedError

    def free(self, address):
        raise NotImplementedError


def allocator_arg(allocator, fn):
    """The const ibvi_allocator * argument for `allocator` (None: NULL)."""
    if allocator is None:
        return None
    if not isinstance(allocator, Allocator):
        raise binding_error(InvalidArgument, fn, "allocator must be an "
                            "ibvi.Allocator or None, not %s"
                            % type(allocator).__name__)
    return allocator._as_parameter()


class _Libc:
    def __init__(self):
        libc = ctypes.CDLL(None)
        self.malloc = libc.malloc
        self.malloc.restype = ctypes.c_void_p
        self.malloc.argtypes = [ctypes.c_size_t]
        self.free = libc.free
        self.free.restype = None
        self.free.argtypes = [ctypes.c_void_p]


class CountingAllocator(Allocator):
    """malloc/free that count what the library holds; useful for leak checks
    and for simulating out-of-memory.

    Attributes: ``live`` (blocks not yet freed), ``live_bytes``,
    ``peak_bytes``, ``allocations`` and ``frees`` (totals), ``failures``
    (refused requests), ``unknown_frees`` (frees of pointers it never gave
    out; always 0 for a correct library). ``limit``: refuse any request that would take
    ``live_bytes`` above it (None: no limit). Thread-safe."""

    def __init__(self, limit=None):
        super().__init__()
        self._libc = _Libc()
        self._lock = threading.Lock()
        self._sizes = {}
        self.limit = limit
        self.live_bytes = 0
        self.peak_bytes = 0
        self.allocations = 0
        self.frees = 0
        self.failures = 0
        self.unknown_frees = 0

    @property
    def live(self):
        return len(self._sizes)

    def alloc(self, size):
        with self._lock:
            if self.limit is not None and self.live_bytes + size > self.limit:
                self.failures += 1
                return 0
            ptr = self._libc.malloc(size)
            if not ptr:
                self.failures += 1
                return 0
            self._sizes[ptr] = size
            self.allocations += 1
            self.live_bytes += size
            self.peak_bytes = max(self.peak_bytes, self.live_bytes)
            return ptr

    def free(self, address):
        with self._lock:
            size = self._sizes.pop(address, None)
            if size is None:  # not ours: leave it alone, but tell the tests
                self.unknown_frees += 1
                return
            self.live_bytes -= size
            self.frees += 1
        self._libc.free(address)
