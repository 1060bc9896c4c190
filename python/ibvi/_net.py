"""Networks and layers (net.h) and saving/loading them (io.h)."""

import collections
import ctypes
from ctypes import byref, c_float, c_int32, c_int64, c_uint64, c_void_p

import numpy as np

from . import _util
from ._alloc import allocator_arg
from ._errors import InvalidArgument, StateError, binding_error
from ._lib import lib
from ._util import INT32, INT64, UINT64, Enum, Handle, Hold, Resource, as_enum, fp


class Param(Enum):
    """ibvi_parameterization: SP or muP (the library's default)."""
    SP = 0
    MUP = 1


class LayerKind(Enum):
    """ibvi_layer_kind."""
    DENSE = 0
    ACTIVATION = 1


class Activation(Enum):
    """ibvi_activation: element-wise activation functions."""
    RELU = 1
    TANH = 2
    SILU = 3


class Role(Enum):
    """ibvi_layer_role: position of a dense layer among the dense layers."""
    NONE = 0
    INPUT = 1
    HIDDEN = 2
    OUTPUT = 3
    SINGLE = 4


LayerShape = collections.namedtuple("LayerShape", "inputs outputs rank")


class Net(Handle):
    """A network (ibvi_net): a chain of dense layers, each deterministic
    (rank 0) or a low-rank Gaussian (rank R >= 1), and activations.

    Build it with :meth:`add_dense` / :meth:`add_activation` (both return the
    network, so calls chain), then :meth:`init`. Arrays go in as float32
    (int32 labels), C-contiguous; other arrays are converted (copied) once.
    Integer arguments must be ints (or numpy integers) that fit their C type
    (int32_t, int64_t or uint64_t); anything else raises InvalidArgument
    before the library is called.

    Ownership: the Net owns its C handle. Optimizers, predictors and Layer
    objects created on it keep a reference to the Net, so it lives as long
    as they do. :meth:`close` (or leaving a ``with`` block) first closes
    every optimizer and predictor still open on this network, then frees it,
    so no C handle can outlive the network it points to; those objects, and
    the layers, then raise StateError ("... is closed (its network was
    closed)").

    Threading: each network has a lock (a threading.RLock). Every call that
    uses the network (its methods and properties, its layers', its
    optimizers' and its predictors') holds it for the duration of the call,
    so calls from several threads on one network are serialised and give
    the results of some sequential order, never a mix; close() waits for
    the call in progress and calls after it raise StateError. Different
    networks run in parallel (ctypes releases the GIL during every call).
    """

    _what = "network"

    def __init__(self, input_dim, allocator=None):
        input_dim = _util.cint(input_dim, INT32, "Net", "input_dim")
        alloc = allocator_arg(allocator, "Net")
        out = c_void_p()
        lib.ibvi_net_create(byref(out), input_dim, alloc)
        self._adopt(out.value, allocator)

    def _adopt(self, ptr, allocator):
        self._lock = _util.new_lock()
        self._lockset = (self._lock,)
        self._dependents = {}        # id -> Resource of optimizers/predictors
        self._last_samples = None
        self._allocator = allocator  # its callbacks must outlive the handle
        self._res = Resource(ptr, lib.ibvi_net_free)

    @classmethod
    def _from_handle(cls, ptr, allocator):
        net = cls.__new__(cls)
        net._adopt(ptr, allocator)
        return net

    def __reduce_ex__(self, protocol):
        """Pickling and copy.copy()/deepcopy() go through to_bytes(): the
        copy is an independent network (no allocator, no optimizer)."""
        if self.closed or not self.initialized:
            raise TypeError("only an open, initialised ibvi.Net can be pickled "
                            "or copied")
        return (_net_from_bytes, (self.to_bytes(),))

    def close(self):
        """Closes the optimizers and predictors still open on this network,
        then frees the network; waits for a call in progress on another
        thread first. Idempotent."""
        super().close()

    def _release(self):
        for res in list(self._dependents.values()):
            res.release("its network was closed")
        self._dependents.clear()
        self._res.release()

    def _attach(self, res):
        """Registers a dependent's handle (the caller holds the lock)."""
        self._dependents[id(res)] = res

    def _detach(self, res):
        deps = getattr(self, "_dependents", None)
        if deps is not None:
            deps.pop(id(res), None)

    # ---- building -------------------------------------------------------

    def add_dense(self, outputs, rank=0):
        """Appends a dense layer with `outputs` units; rank 0: deterministic,
        R in [1, P]: a rank-R Gaussian layer. Returns self."""
        fn = "Net.add_dense"
        outputs = _util.cint(outputs, INT32, fn, "outputs")
        rank = _util.cint(rank, INT32, fn, "rank")
        with self._use() as h:
            lib.ibvi_net_add_dense(h, outputs, rank)
        return self

    def add_activation(self, activation):
        """Appends an activation: Activation.RELU/TANH/SILU or 'relu', 'tanh',
        'silu'. Returns self."""
        a = as_enum(Activation, activation, "Net.add_activation", "activation")
        with self._use() as h:
            lib.ibvi_net_add_activation(h, a)
        return self

    def init(self, parameterization=Param.MUP, seed=0):
        """Freezes the architecture and draws the prior of `parameterization`
        (Param.MUP, Param.SP, 'mup' or 'sp') with `seed` (a uint64).
        Returns self."""
        p = as_enum(Param, parameterization, "Net.init", "parameterization")
        seed = _util.cint(seed, UINT64, "Net.init", "seed")
        with self._use() as h:
            lib.ibvi_net_init(h, p, seed)
            self._last_samples = None
        return self

    def reserve(self, max_rows, max_samples=1):
        """Pre-allocates the workspace for batches of up to max_rows inputs
        with up to max_samples weight samples."""
        max_rows = _util.cint(max_rows, INT64, "Net.reserve", "max_rows")
        max_samples = _util.cint(max_samples, INT32, "Net.reserve", "max_samples")
        with self._use() as h:
            lib.ibvi_net_reserve(h, max_rows, max_samples)

    @property
    def threads(self):
        """BLIS threads of this network's kernels (settable, >= 1)."""
        with self._use() as h:
            return int(lib.ibvi_net_threads(h))

    @threads.setter
    def threads(self, threads):
        self.set_threads(threads)

    def set_threads(self, threads):
        threads = _util.cint(threads, INT32, "Net.set_threads", "threads")
        with self._use() as h:
            lib.ibvi_net_set_threads(h, threads)

    # ---- queries --------------------------------------------------------

    def _query(self, fn):
        with self._use() as h:
            return int(fn(h))

    @property
    def input_dim(self):
        return self._query(lib.ibvi_net_input_dim)

    @property
    def output_dim(self):
        """Outputs of the last dense layer (StateError without one)."""
        return self._query(lib.ibvi_net_output_dim)

    @property
    def layer_count(self):
        """Number of layers, activations included."""
        return self._query(lib.ibvi_net_layer_count)

    def __len__(self):
        return self.layer_count

    @property
    def initialized(self):
        return bool(self._query(lib.ibvi_net_is_initialized))

    @property
    def parameterization(self):
        """The Param given to init() (StateError before)."""
        return Param(self._query(lib.ibvi_net_parameterization))

    @property
    def noise_size(self):
        """Noise values per weight sample: the sum of the ranks."""
        return self._query(lib.ibvi_net_noise_size)

    @property
    def param_count(self):
        """Trainable floats: sum over dense layers of P * (1 + R)."""
        return self._query(lib.ibvi_net_param_count)

    @property
    def seed(self):
        """The seed given to init()."""
        v = c_uint64()
        with self._use() as h:
            lib.ibvi_net_seed(h, byref(v))
        return v.value

    @property
    def rng_position(self):
        """Position of the sampling stream (noise blocks drawn); settable
        (a uint64)."""
        v = c_uint64()
        with self._use() as h:
            lib.ibvi_net_rng_position(h, byref(v))
        return v.value

    @rng_position.setter
    def rng_position(self, position):
        position = _util.cint(position, UINT64, "Net.rng_position", "position")
        with self._use() as h:
            lib.ibvi_net_set_rng_position(h, position)

    def layer(self, index):
        """Layer `index` (0-based, activations included); negative indices
        count from the end."""
        index = _util.cint(index, INT32, "Net.layer", "index")
        out = c_void_p()
        with self._use() as h:
            if index < 0:
                index += int(lib.ibvi_net_layer_count(h))
            lib.ibvi_net_layer(h, index, byref(out))
        return Layer(self, out.value, index)

    @property
    def layers(self):
        with self._use():
            return [self.layer(i) for i in range(self.layer_count)]

    @property
    def dense_layers(self):
        with self._use():
            return [l for l in self.layers if l.kind == LayerKind.DENSE]

    def __repr__(self):
        with Hold(self._lockset):
            if self.closed:
                return "<ibvi.Net (closed)>"
            dims = [str(self.input_dim)]
            for l in self.layers:
                if l.kind == LayerKind.DENSE:
                    dims.append("%d%s" % (l.outputs,
                                          "(R=%d)" % l.rank if l.rank else ""))
                else:
                    dims.append(l.activation.name.lower())
            return "<ibvi.Net %s%s>" % (
                "-".join(dims), "" if self.initialized else " (not initialised)")

    # ---- forward and backward -------------------------------------------

    def forward(self, x, samples=1, out=None):
        """Training-mode forward with `samples` weight samples drawn from the
        network's stream. x: (n, input_dim). Returns (samples * n, output_dim),
        sample-major (row m * n + i: input i under sample m)."""
        fn = "Net.forward"
        samples, blocks = _util.sample_rows(samples, fn)
        with self._use() as h:
            x = _util.rows(x, self.input_dim, fn, "x")
            n = x.shape[0]
            out = _util.out_array(out, (blocks * n, self.output_dim), fn)
            lib.ibvi_net_forward(h, fp(x), n, samples, fp(out))
            self._last_samples = samples
        return out

    def forward_mean(self, x, out=None):
        """Forward with the mean network (z = 0). Returns (n, output_dim)."""
        fn = "Net.forward_mean"
        with self._use() as h:
            x = _util.rows(x, self.input_dim, fn, "x")
            n = x.shape[0]
            out = _util.out_array(out, (n, self.output_dim), fn)
            lib.ibvi_net_forward_mean(h, fp(x), n, fp(out))
            self._last_samples = 1
        return out

    def forward_noise(self, x, z, samples=None, out=None):
        """Forward with caller-given noise z: (samples, noise_size) or flat,
        per sample the variational layers' R values in layer order. samples
        defaults to z.shape[0] (2-D z) or z.size / noise_size."""
        fn = "Net.forward_noise"
        z = _util.f32(z, fn, "z")
        with self._use() as h:
            x = _util.rows(x, self.input_dim, fn, "x")
            if samples is None:
                ns = self.noise_size
                if z.ndim == 2:
                    samples = z.shape[0]
                elif ns > 0:
                    samples = z.size // ns
                else:
                    raise binding_error(InvalidArgument, fn,
                                        "give samples= for a network without "
                                        "variational layers")
            samples, blocks = _util.sample_rows(samples, fn)
            n = x.shape[0]
            out = _util.out_array(out, (blocks * n, self.output_dim), fn)
            lib.ibvi_net_forward_noise(h, fp(x), n, samples, fp(z), z.size,
                                       fp(out))
            self._last_samples = samples
        return out

    def last_noise(self, samples=None):
        """The noise of the last forward pass, (samples, noise_size). samples
        defaults to that of the last forward made through this object."""
        fn = "Net.last_noise"
        with self._use() as h:
            if samples is None:
                samples = self._last_samples if self._last_samples is not None else 1
            samples, _ = _util.sample_rows(samples, fn)
            if samples < 1:  # the buffer's row count: the binding's own parameter
                raise binding_error(InvalidArgument, fn, "samples = %d, expected "
                                    "1..%d" % (samples, _util.MAX_SAMPLES))
            z = _util.empty((samples, self.noise_size), fn, "z")
            lib.ibvi_net_last_noise(h, fp(z), z.size)
        return z

    def backward(self, grad_out):
        """Backward pass for the last forward: grad_out is dL/d(out), the
        shape of that forward's output. Overwrites every layer's gradients."""
        g = _util.matrix(grad_out, "Net.backward", "grad_out")
        with self._use() as h:
            lib.ibvi_net_backward(h, fp(g), g.shape[0], g.shape[1])

    # ---- convenience constructors of dependents -----------------------------

    def optimizer(self, kind="sgd", lr=0.01, **settings):
        """Optimizer(self, kind, lr, **settings). For SGD the default is the
        method's recipe: momentum 0.9, Nesterov off (give momentum=0.0 for
        plain SGD)."""
        from ._optim import Optimizer
        return Optimizer(self, kind, lr, **settings)

    def predictor(self, samples=1, seed=0):
        """Predictor(self, samples, seed)."""
        from ._predictor import Predictor
        return Predictor(self, samples, seed)

    # ---- saving and loading (io.h) --------------------------------------

    def save(self, path, optimizer=None):
        """Writes the network (and optimizer, bound to it) to `path` (str,
        bytes or os.PathLike; a NUL byte raises InvalidArgument) atomically
        (a temporary file renamed over path)."""
        fn = "Net.save"
        name = _util.cpath(path, fn)
        _check_optimizer(optimizer, fn)
        with _hold(self, optimizer) as hs:
            lib.ibvi_net_save(hs[0], _opt_ptr(hs), name)

    def save_size(self, optimizer=None):
        """Bytes that save()/to_bytes() would write."""
        _check_optimizer(optimizer, "Net.save_size")
        v = c_int64()
        with _hold(self, optimizer) as hs:
            lib.ibvi_net_save_size(hs[0], _opt_ptr(hs), byref(v))
        return v.value

    def to_bytes(self, optimizer=None):
        """The bytes of the file save() would write."""
        _check_optimizer(optimizer, "Net.to_bytes")
        with _hold(self, optimizer) as hs:
            size = self.save_size(optimizer)
            buf = bytearray(size)
            cbuf = (ctypes.c_uint8 * size).from_buffer(buf)
            lib.ibvi_net_save_buffer(hs[0], _opt_ptr(hs),
                                     ctypes.cast(cbuf, _util.U8_PTR), size)
            del cbuf
        return bytes(buf)

    @classmethod
    def load(cls, path, allocator=None):
        """Loads a network saved by save() (an optimizer in the file is
        checked but not loaded). path: str, bytes or os.PathLike."""
        name = _util.cpath(path, "Net.load")
        alloc = allocator_arg(allocator, "Net.load")
        out = c_void_p()
        lib.ibvi_net_load(byref(out), None, name, alloc)
        return cls._from_handle(out.value, allocator)

    @classmethod
    def load_with_optimizer(cls, path, allocator=None):
        """Loads a network and its optimizer: returns (net, optimizer), the
        optimizer None when the file holds none."""
        fn = "Net.load_with_optimizer"
        name = _util.cpath(path, fn)
        alloc = allocator_arg(allocator, fn)
        out, opt = c_void_p(), c_void_p()
        lib.ibvi_net_load(byref(out), byref(opt), name, alloc)
        return _wrap_loaded(cls, out.value, opt.value, allocator)

    @classmethod
    def from_bytes(cls, data, allocator=None):
        """Loads a network from the bytes of a file (bytes-like object)."""
        buf = _byte_buffer(data, "Net.from_bytes")
        alloc = allocator_arg(allocator, "Net.from_bytes")
        out = c_void_p()
        lib.ibvi_net_load_buffer(byref(out), None, buf.ctypes.data_as(_util.U8_PTR),
                                 buf.size, alloc)
        return cls._from_handle(out.value, allocator)

    @classmethod
    def from_bytes_with_optimizer(cls, data, allocator=None):
        """from_bytes() that also loads the optimizer: (net, optimizer|None)."""
        fn = "Net.from_bytes_with_optimizer"
        buf = _byte_buffer(data, fn)
        alloc = allocator_arg(allocator, fn)
        out, opt = c_void_p(), c_void_p()
        lib.ibvi_net_load_buffer(byref(out), byref(opt),
                                 buf.ctypes.data_as(_util.U8_PTR), buf.size, alloc)
        return _wrap_loaded(cls, out.value, opt.value, allocator)


def _net_from_bytes(data):
    return Net.from_bytes(data)


def _byte_buffer(data, fn):
    """The bytes of a bytes-like object as a uint8 array (no copy)."""
    try:
        return np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
    except (TypeError, ValueError) as e:
        raise binding_error(InvalidArgument, fn, "data must be a bytes-like "
                            "object, not %s (%s)" % (type(data).__name__, e)) from None


def _check_optimizer(optimizer, fn):
    from ._optim import Optimizer
    if optimizer is not None and not isinstance(optimizer, Optimizer):
        raise binding_error(InvalidArgument, fn, "optimizer must be an "
                            "ibvi.Optimizer or None, not %s"
                            % type(optimizer).__name__)


def _hold(net, optimizer):
    """Holds the locks of a network and of an optional optimizer's network."""
    return _util.hold(net) if optimizer is None else _util.hold(net, optimizer)


def _opt_ptr(handles):
    return handles[1] if len(handles) > 1 else None


def _wrap_loaded(cls, net_ptr, opt_ptr, allocator):
    net = cls._from_handle(net_ptr, allocator)
    if not opt_ptr:
        return net, None
    from ._optim import Optimizer
    with Hold(net._lockset):
        return net, Optimizer._from_handle(net, opt_ptr, None)


class Layer:
    """A layer of a network (a borrowed ibvi_layer handle). It keeps its
    network alive, holds the network's lock during each call and raises
    StateError once the network is closed.

    Dense layers expose the mean theta = [W row-major (out x in); b] as a
    1-D array of P = out*in + out floats and the covariance factor S as a
    (P, R) array; getters return copies, setters copy in."""

    __slots__ = ("_net", "_ptr", "index")

    def __init__(self, net, ptr, index):
        self._net = net
        self._ptr = ptr
        self.index = index

    def _h(self):
        self._net._h()  # raises if the network is closed
        return self._ptr

    def _use(self):
        return Hold(self._net._lockset, self._h)

    def __reduce_ex__(self, protocol):
        # The handle points into its network's memory: use net.layer(i) of
        # a copied network instead.
        raise TypeError("cannot pickle or copy an ibvi.Layer")

    @property
    def net(self):
        return self._net

    def _query(self, fn):
        with self._use() as h:
            return int(fn(h))

    @property
    def kind(self):
        return LayerKind(self._query(lib.ibvi_layer_get_kind))

    @property
    def role(self):
        return Role(self._query(lib.ibvi_layer_get_role))

    @property
    def activation(self):
        """The Activation of an activation layer, None for dense layers."""
        with self._use() as h:
            if lib.ibvi_layer_get_kind(h) != LayerKind.ACTIVATION:
                return None
            return Activation(lib.ibvi_layer_get_activation(h))

    @property
    def shape(self):
        """LayerShape(inputs, outputs, rank)."""
        i, o, r = c_int32(), c_int32(), c_int32()
        with self._use() as h:
            lib.ibvi_layer_shape(h, byref(i), byref(o), byref(r))
        return LayerShape(i.value, o.value, r.value)

    inputs = property(lambda self: self.shape.inputs)
    outputs = property(lambda self: self.shape.outputs)
    rank = property(lambda self: self.shape.rank)

    @property
    def param_count(self):
        """P = outputs * inputs + outputs (0 for activations)."""
        return self._query(lib.ibvi_layer_param_count)

    @property
    def init_std(self):
        """(weight_std, bias_std) of the prior of the mean parameters."""
        w, b = c_float(), c_float()
        with self._use() as h:
            lib.ibvi_layer_init_std(h, byref(w), byref(b))
        return w.value, b.value

    def lr_multipliers(self, kind):
        """(weight, bias) learning-rate multipliers of the mean for optimizer
        `kind` (OptimizerKind or 'sgd'/'adam'); factor rows use these / R."""
        from ._optim import OptimizerKind
        k = as_enum(OptimizerKind, kind, "Layer.lr_multipliers", "kind")
        w, b = c_float(), c_float()
        with self._use() as h:
            lib.ibvi_layer_lr_multipliers(h, k, byref(w), byref(b))
        return w.value, b.value

    def _get(self, fn, factor, out):
        """Copies a mean-shaped (P,) or factor-shaped (P, R) array out; the
        shape is read under the lock, so it is the one C writes."""
        with self._use() as h:
            p = int(lib.ibvi_layer_param_count(h))
            shape = (p, self.rank) if factor else (p,)
            out = _util.out_array(out, shape, "Layer." + fn.__name__[10:])
            fn(h, fp(out), out.size)
        return out

    def get_mean(self, out=None):
        """Copy of theta = [W row-major; b], shape (P,)."""
        return self._get(lib.ibvi_layer_get_mean, False, out)

    def set_mean(self, theta):
        """Copies theta (P floats, any shape) in; NaN/inf raise NonFiniteError."""
        t = _util.f32(theta, "Layer.set_mean", "theta")
        with self._use() as h:
            lib.ibvi_layer_set_mean(h, fp(t), t.size)

    def get_factor(self, out=None):
        """Copy of the covariance factor S, shape (P, R)."""
        return self._get(lib.ibvi_layer_get_factor, True, out)

    def set_factor(self, factor):
        """Copies S (P * R floats, row-major (P, R)) in."""
        s = _util.f32(factor, "Layer.set_factor", "factor")
        with self._use() as h:
            lib.ibvi_layer_set_factor(h, fp(s), s.size)

    def get_grad_mean(self, out=None):
        """dL/dmu of the last backward pass, shape (P,)."""
        return self._get(lib.ibvi_layer_get_grad_mean, False, out)

    def get_grad_factor(self, out=None):
        """dL/dS of the last backward pass, shape (P, R)."""
        return self._get(lib.ibvi_layer_get_grad_factor, True, out)

    mean = property(get_mean, set_mean, doc="theta (copy); assignable")
    factor = property(get_factor, set_factor, doc="S (copy); assignable")
    grad_mean = property(get_grad_mean)
    grad_factor = property(get_grad_factor)

    @property
    def weight(self):
        """W = mean[:out*in] as (outputs, inputs) (a copy)."""
        with self._use():
            i, o, _ = self.shape
            return self.get_mean()[:o * i].reshape(o, i)

    @property
    def bias(self):
        """b = mean[out*in:] (a copy)."""
        with self._use():
            i, o, _ = self.shape
            return self.get_mean()[o * i:]

    def __repr__(self):
        try:
            with self._use():
                k = self.kind
                if k == LayerKind.DENSE:
                    i, o, r = self.shape
                    return "<ibvi.Layer %d dense %d->%d rank %d %s>" % (
                        self.index, i, o, r, self.role.name.lower())
                return "<ibvi.Layer %d %s>" % (self.index,
                                               self.activation.name.lower())
        except StateError:
            return "<ibvi.Layer %d (network closed)>" % self.index
