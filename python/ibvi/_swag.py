"""SWAG (swag.h): the moments of a trained network's SGD iterates and the
network carrying the Gaussian they define (docs/swag.md).

    >>> swag = ibvi.Swag(net, rank=20)      # net: trained, deterministic
    >>> for epoch in range(3):              # constant-lr SGD, then
    ...     train_one_epoch(net, opt)
    ...     swag.collect(net)               # one snapshot per phase
    >>> post = swag.build()                 # a new ibvi.Net (DIAG_LOWRANK)
    >>> probs = ibvi.Predictor(post, samples=32).run(x).probs

The C prototypes are in _lib.py's table (the SWAG block).
"""

import ctypes
from ctypes import byref, c_int32, c_uint32, c_void_p

from . import _util
from ._lib import lib
from ._errors import InvalidArgument, binding_error
from ._net import Net
from ._util import INT32, Handle, Resource


class _SwagOptions(ctypes.Structure):
    """struct ibvi_swag_options of swag.h (version 1)."""
    _fields_ = [("version", c_uint32), ("rank", c_int32)]



#: IBVI_SWAG_OPTIONS_VERSION, IBVI_SWAG_DEFAULT_RANK (swag.h) and
#: IBVI_DIAG_LOWRANK_MAX_RANK (net.h).
SWAG_OPTIONS_VERSION = 1
SWAG_DEFAULT_RANK = 20
DIAG_LOWRANK_MAX_RANK = 1024


class Swag(Handle):
    """A SWAG collector (ibvi_swag) for networks built like `net` (trained,
    initialised, every layer deterministic). collect(net) takes one
    snapshot of a network's means (the running first and second moments
    and a ring of the last `rank` deviation columns); build() returns a
    new :class:`ibvi.Net` whose layers with parameters carry
    Covariance.DIAG_LOWRANK: mu = the SWA mean, d = std / sqrt(2),
    S = D / sqrt(2 (K - 1)) (K = the columns kept, needs >= 2 snapshots),
    so its weight samples are the paper's. The collector uses net's
    allocator and does not keep net: the networks may be closed first."""

    _what = "SWAG collector"

    def __init__(self, net, rank=SWAG_DEFAULT_RANK):
        fn = "Swag"
        if not isinstance(net, Net):
            raise binding_error(InvalidArgument, fn, "net must be an ibvi.Net, "
                                "not %s" % type(net).__name__)
        opts = _SwagOptions()
        lib.ibvi_swag_options_init(byref(opts))
        opts.rank = _util.cint(rank, INT32, fn, "rank")
        out = c_void_p()
        with net._use() as h:
            lib.ibvi_swag_create(byref(out), h, byref(opts))
        self._rank = opts.rank
        self._allocator = net._allocator  # its callbacks outlive the handle
        self._lockset = (_util.new_lock(),)
        self._res = Resource(out.value, lib.ibvi_swag_free)

    @property
    def rank(self):
        """The most deviation columns kept."""
        return self._rank

    def collect(self, net):
        """Takes one snapshot of net's means (net built like the
        collector's: ShapeError otherwise)."""
        if not isinstance(net, Net):
            raise binding_error(InvalidArgument, "Swag.collect", "net must be "
                                "an ibvi.Net, not %s" % type(net).__name__)
        with _util.hold(self, net) as (h, h_net):
            lib.ibvi_swag_collect(h, h_net)

    @property
    def count(self):
        """Snapshots collected so far."""
        with self._use() as h:
            return int(lib.ibvi_swag_count(h))

    def __len__(self):
        return self.count

    def build(self):
        """A new initialised ibvi.Net carrying the SWAG posterior
        (StateError with fewer than 2 snapshots)."""
        out = c_void_p()
        with self._use() as h:
            lib.ibvi_swag_build(h, byref(out))
        return Net._from_handle(out.value, self._allocator)
