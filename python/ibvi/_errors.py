"""Exceptions: one class per libibvi status code, all derived from Error."""

import enum

_lib = None  # set by _lib._bind once the library is loaded


class Status(enum.IntEnum):
    """ibvi_status of common.h; the numbers are part of the ABI."""
    OK = 0
    INVALID_ARG = -1
    SHAPE = -2
    NOMEM = -3
    STATE = -4
    NONFINITE = -5
    IO = -6
    FORMAT = -7
    VERSION = -8
    CHECKSUM = -9
    UNSUPPORTED = -10


class Error(Exception):
    """A libibvi call failed (or the binding refused a call that would).

    Attributes:
        status: the negative status code (an int; ``Status(status)`` names it).
        status_string: ``ibvi_status_string(status)``, e.g. "invalid argument".
        message: the detail text, ``ibvi_last_error()`` of the failing call on
            this thread, e.g. "ibvi_net_add_dense: outputs = 0, must be > 0";
            for checks made by the binding itself, its own message.
        function: the C function (or Python method) that failed.
    """

    def __init__(self, status, message="", function=None):
        self.status = int(status)
        self.status_string = _text(self.status)
        self.message = message
        self.function = function
        text = message or self.status_string
        if message:
            text = "%s [%s]" % (message, self.status_string)
        super().__init__(text)

    def __reduce__(self):
        return (type(self), (self.status, self.message, self.function))


class InvalidArgument(Error, ValueError):
    """IBVI_ERR_INVALID_ARG: NULL pointer, size <= 0, value out of range."""


class ShapeError(Error, ValueError):
    """IBVI_ERR_SHAPE: the sizes of data and network do not agree."""


class OutOfMemory(Error, MemoryError):
    """IBVI_ERR_NOMEM: the allocator returned NULL."""


class StateError(Error):
    """IBVI_ERR_STATE: call not valid now (e.g. forward before init, or a
    handle that was closed)."""


class NonFiniteError(Error, ArithmeticError):
    """IBVI_ERR_NONFINITE: NaN or infinite loss or value; nothing changed.

    Raised by loss functions and training steps, it carries the non-finite
    loss value as ``.loss`` (None elsewhere)."""
    loss = None


class FileError(Error, OSError):
    """IBVI_ERR_IO: a file could not be read or written."""


class FormatError(Error):
    """IBVI_ERR_FORMAT: not a valid libibvi (or IDX) file."""


class VersionError(Error):
    """IBVI_ERR_VERSION: a file written by a newer format version."""


class ChecksumError(Error):
    """IBVI_ERR_CHECKSUM: a file's checksum does not match its bytes."""


class UnsupportedError(Error, NotImplementedError):
    """IBVI_ERR_UNSUPPORTED: a valid request this build cannot serve."""


_CLASSES = {
    Status.INVALID_ARG: InvalidArgument,
    Status.SHAPE: ShapeError,
    Status.NOMEM: OutOfMemory,
    Status.STATE: StateError,
    Status.NONFINITE: NonFiniteError,
    Status.IO: FileError,
    Status.FORMAT: FormatError,
    Status.VERSION: VersionError,
    Status.CHECKSUM: ChecksumError,
    Status.UNSUPPORTED: UnsupportedError,
}


def error_class(status):
    """The exception class of a negative status (Error for unknown codes)."""
    return _CLASSES.get(status, Error)


def status_string(status):
    """ibvi_status_string(status): static English text, also for unknown
    codes. status must be an int that fits int32_t (InvalidArgument else)."""
    from ._util import INT32, cint  # _util imports this module
    status = cint(status, INT32, "status_string", "status")
    return _text(status)


def _text(status):
    """The status text for an Error (no check: any int gives a text)."""
    if _lib is None or not -2**31 <= status < 2**31:
        return "status %d" % status
    return _lib.ibvi_status_string(status).decode("utf-8", "replace")


def last_error():
    """ibvi_last_error(): the detail message of this thread's last failed call."""
    return _lib.ibvi_last_error().decode("utf-8", "replace")


def clear_error():
    """ibvi_clear_error(): clears this thread's last error message."""
    _lib.ibvi_clear_error()


def from_status(status, function):
    """The exception for a failed C call; reads ibvi_last_error() now, on the
    thread that made the call."""
    return error_class(status)(status, last_error(), function)


def binding_error(cls, function, message):
    """An exception raised by the binding's own checks (no C call made)."""
    status = next((s for s, c in _CLASSES.items() if c is cls), -1)
    return cls(status, "%s: %s" % (function, message), function)


def _bind(lib):
    global _lib
    _lib = lib
