"""Networks and layers (net.h) and saving/loading them (io.h)."""

import collections
import ctypes
import os
from ctypes import byref, c_float, c_int32, c_int64, c_uint64, c_void_p

import numpy as np

from . import _util
from ._errors import InvalidArgument, StateError, binding_error
from ._lib import lib
from ._util import Enum, Handle, Resource, as_enum, fp


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


def _allocator_arg(allocator):
    return None if allocator is None else allocator._as_parameter()


class Net(Handle):
    """A network (ibvi_net): a chain of dense layers, each deterministic
    (rank 0) or a low-rank Gaussian (rank R >= 1), and activations.

    Build it with :meth:`add_dense` / :meth:`add_activation` (both return the
    network, so calls chain), then :meth:`init`. Arrays go in as float32
    (int32 labels), C-contiguous; other arrays are converted (copied) once.

    Ownership: the Net owns its C handle. Optimizers and predictors created
    on it keep the Net alive; :meth:`close` (or leaving a ``with`` block)
    first closes every optimizer and predictor still open on this network,
    then frees it, so no C handle can outlive the network it points to. Layer
    objects keep the Net alive too and raise StateError once it is closed.

    Threading: one network (with its optimizers and predictors) is used by
    one thread at a time; different networks may be used from different
    threads at once (ctypes releases the GIL during every call).
    """

    _what = "network"

    def __init__(self, input_dim, allocator=None):
        out = c_void_p()
        lib.ibvi_net_create(byref(out), input_dim, _allocator_arg(allocator))
        self._adopt(out.value, allocator)

    def _adopt(self, ptr, allocator):
        self._res = Resource(ptr, lib.ibvi_net_free)
        self._allocator = allocator  # its callbacks must outlive the handle
        self._dependents = {}        # id -> Resource of optimizers/predictors
        self._last_samples = None

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
        then frees the network. Idempotent."""
        deps = getattr(self, "_dependents", None)
        if deps:
            for res in list(deps.values()):
                res.release()
            deps.clear()
        super().close()

    def _attach(self, res):
        self._dependents[id(res)] = res

    def _detach(self, res):
        deps = getattr(self, "_dependents", None)
        if deps is not None:
            deps.pop(id(res), None)

    # ---- building -------------------------------------------------------

    def add_dense(self, outputs, rank=0):
        """Appends a dense layer with `outputs` units; rank 0: deterministic,
        R in [1, P]: a rank-R Gaussian layer. Returns self."""
        lib.ibvi_net_add_dense(self._h(), outputs, rank)
        return self

    def add_activation(self, activation):
        """Appends an activation: Activation.RELU/TANH/SILU or 'relu', 'tanh',
        'silu'. Returns self."""
        lib.ibvi_net_add_activation(
            self._h(), as_enum(Activation, activation, "Net.add_activation"))
        return self

    def init(self, parameterization=Param.MUP, seed=0):
        """Freezes the architecture and draws the prior of `parameterization`
        (Param.MUP, Param.SP, 'mup' or 'sp') with `seed`. Returns self."""
        lib.ibvi_net_init(self._h(), as_enum(Param, parameterization, "Net.init"),
                          seed)
        self._last_samples = None
        return self

    def reserve(self, max_rows, max_samples=1):
        """Pre-allocates the workspace for batches of up to max_rows inputs
        with up to max_samples weight samples."""
        lib.ibvi_net_reserve(self._h(), max_rows, max_samples)

    @property
    def threads(self):
        """BLIS threads of this network's kernels (settable, >= 1)."""
        return int(lib.ibvi_net_threads(self._h()))

    @threads.setter
    def threads(self, threads):
        lib.ibvi_net_set_threads(self._h(), threads)

    def set_threads(self, threads):
        lib.ibvi_net_set_threads(self._h(), threads)

    # ---- queries --------------------------------------------------------

    @property
    def input_dim(self):
        return int(lib.ibvi_net_input_dim(self._h()))

    @property
    def output_dim(self):
        """Outputs of the last dense layer (StateError without one)."""
        return int(lib.ibvi_net_output_dim(self._h()))

    @property
    def layer_count(self):
        """Number of layers, activations included."""
        return int(lib.ibvi_net_layer_count(self._h()))

    def __len__(self):
        return self.layer_count

    @property
    def initialized(self):
        return bool(lib.ibvi_net_is_initialized(self._h()))

    @property
    def parameterization(self):
        """The Param given to init() (StateError before)."""
        return Param(lib.ibvi_net_parameterization(self._h()))

    @property
    def noise_size(self):
        """Noise values per weight sample: the sum of the ranks."""
        return int(lib.ibvi_net_noise_size(self._h()))

    @property
    def param_count(self):
        """Trainable floats: sum over dense layers of P * (1 + R)."""
        return int(lib.ibvi_net_param_count(self._h()))

    @property
    def seed(self):
        """The seed given to init()."""
        v = c_uint64()
        lib.ibvi_net_seed(self._h(), byref(v))
        return v.value

    @property
    def rng_position(self):
        """Position of the sampling stream (noise blocks drawn); settable."""
        v = c_uint64()
        lib.ibvi_net_rng_position(self._h(), byref(v))
        return v.value

    @rng_position.setter
    def rng_position(self, position):
        lib.ibvi_net_set_rng_position(self._h(), position)

    def layer(self, index):
        """Layer `index` (0-based, activations included); negative indices
        count from the end."""
        if index < 0:
            index += self.layer_count
        out = c_void_p()
        lib.ibvi_net_layer(self._h(), index, byref(out))
        return Layer(self, out.value, index)

    @property
    def layers(self):
        return [self.layer(i) for i in range(self.layer_count)]

    @property
    def dense_layers(self):
        return [l for l in self.layers if l.kind == LayerKind.DENSE]

    def __repr__(self):
        if self.closed:
            return "<ibvi.Net (closed)>"
        dims = [str(self.input_dim)]
        for l in self.layers:
            if l.kind == LayerKind.DENSE:
                dims.append("%d%s" % (l.outputs, "(R=%d)" % l.rank if l.rank else ""))
            else:
                dims.append(l.activation.name.lower())
        return "<ibvi.Net %s%s>" % ("-".join(dims),
                                    "" if self.initialized else " (not initialised)")

    # ---- forward and backward -------------------------------------------

    def forward(self, x, samples=1, out=None):
        """Training-mode forward with `samples` weight samples drawn from the
        network's stream. x: (n, input_dim). Returns (samples * n, output_dim),
        sample-major (row m * n + i: input i under sample m)."""
        h = self._h()
        x = _util.rows(x, self.input_dim, "Net.forward", "x")
        n = x.shape[0]
        out = _util.out_array(out, (max(samples, 0) * n, self.output_dim),
                              "Net.forward")
        lib.ibvi_net_forward(h, fp(x), n, samples, fp(out))
        self._last_samples = samples
        return out

    def forward_mean(self, x, out=None):
        """Forward with the mean network (z = 0). Returns (n, output_dim)."""
        h = self._h()
        x = _util.rows(x, self.input_dim, "Net.forward_mean", "x")
        n = x.shape[0]
        out = _util.out_array(out, (n, self.output_dim), "Net.forward_mean")
        lib.ibvi_net_forward_mean(h, fp(x), n, fp(out))
        self._last_samples = 1
        return out

    def forward_noise(self, x, z, samples=None, out=None):
        """Forward with caller-given noise z: (samples, noise_size) or flat,
        per sample the variational layers' R values in layer order. samples
        defaults to z.shape[0] (2-D z) or z.size / noise_size."""
        h = self._h()
        x = _util.rows(x, self.input_dim, "Net.forward_noise", "x")
        z = _util.f32(z)
        if samples is None:
            ns = self.noise_size
            if z.ndim == 2:
                samples = z.shape[0]
            elif ns > 0:
                samples = z.size // ns
            else:
                raise binding_error(InvalidArgument, "Net.forward_noise",
                                    "give samples= for a network without "
                                    "variational layers")
        n = x.shape[0]
        out = _util.out_array(out, (max(samples, 0) * n, self.output_dim),
                              "Net.forward_noise")
        lib.ibvi_net_forward_noise(h, fp(x), n, samples, fp(z), z.size, fp(out))
        self._last_samples = samples
        return out

    def last_noise(self, samples=None):
        """The noise of the last forward pass, (samples, noise_size). samples
        defaults to that of the last forward made through this object."""
        h = self._h()
        if samples is None:
            samples = self._last_samples if self._last_samples is not None else 1
        z = np.empty((samples, self.noise_size), dtype=np.float32)
        lib.ibvi_net_last_noise(h, fp(z), z.size)
        return z

    def backward(self, grad_out):
        """Backward pass for the last forward: grad_out is dL/d(out), the
        shape of that forward's output. Overwrites every layer's gradients."""
        h = self._h()
        g = _util.matrix(grad_out, "Net.backward", "grad_out")
        lib.ibvi_net_backward(h, fp(g), g.shape[0], g.shape[1])

    # ---- convenience constructors of dependents -----------------------------

    def optimizer(self, kind="sgd", lr=0.01, **settings):
        """Optimizer(self, kind, lr, **settings)."""
        from ._optim import Optimizer
        return Optimizer(self, kind, lr, **settings)

    def predictor(self, samples=1, seed=0):
        """Predictor(self, samples, seed)."""
        from ._predictor import Predictor
        return Predictor(self, samples, seed)

    # ---- saving and loading (io.h) --------------------------------------

    def save(self, path, optimizer=None):
        """Writes the network (and optimizer, bound to it) to `path`
        atomically (a temporary file renamed over path)."""
        lib.ibvi_net_save(self._h(), _opt_handle(optimizer), os.fsencode(path))

    def save_size(self, optimizer=None):
        """Bytes that save()/to_bytes() would write."""
        v = c_int64()
        lib.ibvi_net_save_size(self._h(), _opt_handle(optimizer), byref(v))
        return v.value

    def to_bytes(self, optimizer=None):
        """The bytes of the file save() would write."""
        h = self._h()
        size = self.save_size(optimizer)
        buf = bytearray(size)
        cbuf = (ctypes.c_uint8 * size).from_buffer(buf)
        lib.ibvi_net_save_buffer(h, _opt_handle(optimizer),
                                 ctypes.cast(cbuf, _util.U8_PTR), size)
        del cbuf
        return bytes(buf)

    @classmethod
    def load(cls, path, allocator=None):
        """Loads a network saved by save() (an optimizer in the file is
        checked but not loaded)."""
        out = c_void_p()
        lib.ibvi_net_load(byref(out), None, os.fsencode(path),
                          _allocator_arg(allocator))
        return cls._from_handle(out.value, allocator)

    @classmethod
    def load_with_optimizer(cls, path, allocator=None):
        """Loads a network and its optimizer: returns (net, optimizer), the
        optimizer None when the file holds none."""
        out, opt = c_void_p(), c_void_p()
        lib.ibvi_net_load(byref(out), byref(opt), os.fsencode(path),
                          _allocator_arg(allocator))
        return _wrap_loaded(cls, out.value, opt.value, allocator)

    @classmethod
    def from_bytes(cls, data, allocator=None):
        """Loads a network from the bytes of a file (bytes-like object)."""
        buf = np.frombuffer(data, dtype=np.uint8)
        out = c_void_p()
        lib.ibvi_net_load_buffer(byref(out), None, buf.ctypes.data_as(_util.U8_PTR),
                                 buf.size, _allocator_arg(allocator))
        return cls._from_handle(out.value, allocator)

    @classmethod
    def from_bytes_with_optimizer(cls, data, allocator=None):
        """from_bytes() that also loads the optimizer: (net, optimizer|None)."""
        buf = np.frombuffer(data, dtype=np.uint8)
        out, opt = c_void_p(), c_void_p()
        lib.ibvi_net_load_buffer(byref(out), byref(opt),
                                 buf.ctypes.data_as(_util.U8_PTR), buf.size,
                                 _allocator_arg(allocator))
        return _wrap_loaded(cls, out.value, opt.value, allocator)


def _net_from_bytes(data):
    return Net.from_bytes(data)


def _opt_handle(optimizer):
    return None if optimizer is None else optimizer._h()


def _wrap_loaded(cls, net_ptr, opt_ptr, allocator):
    net = cls._from_handle(net_ptr, allocator)
    if not opt_ptr:
        return net, None
    from ._optim import Optimizer
    return net, Optimizer._from_handle(net, opt_ptr, None)


class Layer:
    """A layer of a network (a borrowed ibvi_layer handle). It keeps its
    network alive and raises StateError once the network is closed.

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

    def __reduce_ex__(self, protocol):
        # The handle points into its network's memory: use net.layer(i) of
        # a copied network instead.
        raise TypeError("cannot pickle or copy an ibvi.Layer")

    @property
    def net(self):
        return self._net

    @property
    def kind(self):
        return LayerKind(lib.ibvi_layer_get_kind(self._h()))

    @property
    def role(self):
        return Role(lib.ibvi_layer_get_role(self._h()))

    @property
    def activation(self):
        """The Activation of an activation layer, None for dense layers."""
        if self.kind != LayerKind.ACTIVATION:
            return None
        return Activation(lib.ibvi_layer_get_activation(self._h()))

    @property
    def shape(self):
        """LayerShape(inputs, outputs, rank)."""
        i, o, r = c_int32(), c_int32(), c_int32()
        lib.ibvi_layer_shape(self._h(), byref(i), byref(o), byref(r))
        return LayerShape(i.value, o.value, r.value)

    inputs = property(lambda self: self.shape.inputs)
    outputs = property(lambda self: self.shape.outputs)
    rank = property(lambda self: self.shape.rank)

    @property
    def param_count(self):
        """P = outputs * inputs + outputs (0 for activations)."""
        return int(lib.ibvi_layer_param_count(self._h()))

    @property
    def init_std(self):
        """(weight_std, bias_std) of the prior of the mean parameters."""
        w, b = c_float(), c_float()
        lib.ibvi_layer_init_std(self._h(), byref(w), byref(b))
        return w.value, b.value

    def lr_multipliers(self, kind):
        """(weight, bias) learning-rate multipliers of the mean for optimizer
        `kind` (OptimizerKind or 'sgd'/'adam'); factor rows use these / R."""
        from ._optim import OptimizerKind
        w, b = c_float(), c_float()
        lib.ibvi_layer_lr_multipliers(
            self._h(), as_enum(OptimizerKind, kind, "Layer.lr_multipliers"),
            byref(w), byref(b))
        return w.value, b.value

    def _get(self, fn, shape, out):
        h = self._h()
        out = _util.out_array(out, shape, "Layer." + fn.__name__[10:])
        fn(h, fp(out), out.size)
        return out

    def get_mean(self, out=None):
        """Copy of theta = [W row-major; b], shape (P,)."""
        return self._get(lib.ibvi_layer_get_mean, (self.param_count,), out)

    def set_mean(self, theta):
        """Copies theta (P floats, any shape) in; NaN/inf raise NonFiniteError."""
        h = self._h()
        t = _util.f32(theta)
        lib.ibvi_layer_set_mean(h, fp(t), t.size)

    def get_factor(self, out=None):
        """Copy of the covariance factor S, shape (P, R)."""
        p, r = self.param_count, self.rank
        return self._get(lib.ibvi_layer_get_factor, (p, r), out)

    def set_factor(self, factor):
        """Copies S (P * R floats, row-major (P, R)) in."""
        h = self._h()
        s = _util.f32(factor)
        lib.ibvi_layer_set_factor(h, fp(s), s.size)

    def get_grad_mean(self, out=None):
        """dL/dmu of the last backward pass, shape (P,)."""
        return self._get(lib.ibvi_layer_get_grad_mean, (self.param_count,), out)

    def get_grad_factor(self, out=None):
        """dL/dS of the last backward pass, shape (P, R)."""
        return self._get(lib.ibvi_layer_get_grad_factor,
                         (self.param_count, self.rank), out)

    mean = property(get_mean, set_mean, doc="theta (copy); assignable")
    factor = property(get_factor, set_factor, doc="S (copy); assignable")
    grad_mean = property(get_grad_mean)
    grad_factor = property(get_grad_factor)

    @property
    def weight(self):
        """W = mean[:out*in] as (outputs, inputs) (a copy)."""
        i, o, _ = self.shape
        return self.get_mean()[:o * i].reshape(o, i)

    @property
    def bias(self):
        """b = mean[out*in:] (a copy)."""
        i, o, _ = self.shape
        return self.get_mean()[o * i:]

    def __repr__(self):
        try:
            k = self.kind
        except StateError:
            return "<ibvi.Layer %d (network closed)>" % self.index
        if k == LayerKind.DENSE:
            i, o, r = self.shape
            return "<ibvi.Layer %d dense %d->%d rank %d %s>" % (
                self.index, i, o, r, self.role.name.lower())
        return "<ibvi.Layer %d %s>" % (self.index, self.activation.name.lower())
