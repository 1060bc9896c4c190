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
    CONV2D = 2
    MAXPOOL = 3
    AVGPOOL = 4
    GLOBAL_AVGPOOL = 5
    FLATTEN = 6
    GROUPNORM = 7
    RESIDUAL = 8



class Activation(Enum):
    """ibvi_activation: element-wise activation functions."""
    RELU = 1
    TANH = 2
    SILU = 3


#: IBVI_COVARIANCE_OPTIONS_VERSION of net.h (the ibvi_covariance_options
#: layout) and IBVI_DEFAULT_INIT_SIGMA (sigma_0 / prior std by default).
COVARIANCE_OPTIONS_VERSION = 1
DEFAULT_INIT_SIGMA = 1e-3


class Covariance(Enum):
    """ibvi_covariance_family: a layer's weight distribution."""
    NONE = 0      # deterministic
    LOWRANK = 1   # IBVI's N(mu, S S^T)
    DIAGONAL = 2  # mean-field N(mu, diag(softplus(rho)^2))
    DIAG_LOWRANK = 3  # SWAG's N(mu, diag(d^2) + S S^T) (ibvi.Swag)


class Role(Enum):
    """ibvi_layer_role: position of a layer with a weight matrix (dense,
    conv2d) among those layers."""
    NONE = 0
    INPUT = 1
    HIDDEN = 2
    OUTPUT = 3
    SINGLE = 4


LayerShape = collections.namedtuple("LayerShape", "inputs outputs rank")
ImageShape = collections.namedtuple("ImageShape", "channels height width")


class Net(Handle):
    """A network (ibvi_net): a chain of layers; dense and convolution layers
    are each deterministic (rank 0) or a low-rank Gaussian (rank R >= 1).

    ``Net(input_dim)`` takes flat inputs; ``Net.image(c, h, w)`` (or
    ``Net(shape=(c, h, w))``) takes images, whose batches are NCHW arrays
    (n, c, h, w) or flat (n, c*h*w). Build it with the ``add_*`` methods
    (each returns the network, so calls chain), then :meth:`init`. Arrays go
    in as float32 (int32 labels), C-contiguous; other arrays are converted
    (copied) once.
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

    def __init__(self, input_dim=None, allocator=None, shape=None):
        if (input_dim is None) == (shape is None):
            raise binding_error(InvalidArgument, "Net", "give input_dim or "
                                "shape=(channels, height, width), not %s"
                                % ("both" if shape is not None else "neither"))
        out = c_void_p()
        if shape is not None:
            try:
                c, h, w = shape
            except (TypeError, ValueError):
                raise binding_error(InvalidArgument, "Net", "shape must be "
                                    "(channels, height, width), not %r"
                                    % (shape,)) from None
            c = _util.cint(c, INT32, "Net", "channels")
            h = _util.cint(h, INT32, "Net", "height")
            w = _util.cint(w, INT32, "Net", "width")
            alloc = allocator_arg(allocator, "Net")
            lib.ibvi_net_create_image(byref(out), c, h, w, alloc)
        else:
            input_dim = _util.cint(input_dim, INT32, "Net", "input_dim")
            alloc = allocator_arg(allocator, "Net")
            lib.ibvi_net_create(byref(out), input_dim, alloc)
        self._adopt(out.value, allocator)

    @classmethod
    def image(cls, channels, height, width, allocator=None):
        """A network whose examples are images of shape (channels, height,
        width) (ibvi_net_create_image)."""
        return cls(shape=(channels, height, width), allocator=allocator)

    def like(self):
        """A new network built like this one (ibvi_net_create_like): the same
        input shape and layers, every layer deterministic, not initialised,
        so set_covariance() and init() can follow. Shares this network's
        allocator; copies nothing of its parameters."""
        out = c_void_p()
        with self._use() as h:
            lib.ibvi_net_create_like(byref(out), h)
        return type(self)._from_handle(out.value, self._allocator)

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

    def add_conv2d(self, out_channels, kernel, stride=1, padding=0, rank=0,
                   kernel_w=None, stride_w=None, padding_w=None, bias=True):
        """Appends a 2-D convolution with `out_channels` filters of
        kernel x kernel_w (kernel_w defaults to kernel), strides (stride,
        stride_w) and zero padding (padding, padding_w) (the widths default
        to the heights); rank as for add_dense. bias=False: no bias (theta
        is the weights alone). Returns self."""
        fn = "Net.add_conv2d"
        opts = _ConvOptions()
        opts.version = 2  # IBVI_CONV2D_OPTIONS_VERSION
        opts.no_bias = 0 if bias else 1
        opts.out_channels = _util.cint(out_channels, INT32, fn, "out_channels")
        opts.kernel_h = _util.cint(kernel, INT32, fn, "kernel")
        opts.kernel_w = _util.cint(kernel if kernel_w is None else kernel_w,
                                   INT32, fn, "kernel_w")
        opts.stride_h = _util.cint(stride, INT32, fn, "stride")
        opts.stride_w = _util.cint(stride if stride_w is None else stride_w,
                                   INT32, fn, "stride_w")
        opts.pad_h = _util.cint(padding, INT32, fn, "padding")
        opts.pad_w = _util.cint(padding if padding_w is None else padding_w,
                                INT32, fn, "padding_w")
        opts.rank = _util.cint(rank, INT32, fn, "rank")
        with self._use() as h:
            lib.ibvi_net_add_conv2d_ex(h, byref(opts))
        return self

    def _add_pool(self, cfn, fn, kernel, stride):
        kernel = _util.cint(kernel, INT32, fn, "kernel")
        stride = kernel if stride is None else _util.cint(stride, INT32, fn,
                                                          "stride")
        with self._use() as h:
            cfn(h, kernel, stride)
        return self

    def add_maxpool(self, kernel, stride=None):
        """Appends a kernel x kernel max pooling (no padding) with `stride`
        (default: kernel). Returns self."""
        return self._add_pool(lib.ibvi_net_add_maxpool, "Net.add_maxpool",
                              kernel, stride)

    def add_avgpool(self, kernel, stride=None):
        """Appends a kernel x kernel average pooling (no padding) with
        `stride` (default: kernel). Returns self."""
        return self._add_pool(lib.ibvi_net_add_avgpool, "Net.add_avgpool",
                              kernel, stride)

    def add_global_avgpool(self):
        """Appends a global average pooling: (C, H, W) -> (C, 1, 1).
        Returns self."""
        with self._use() as h:
            lib.ibvi_net_add_global_avgpool(h)
        return self

    def add_flatten(self):
        """Appends a flatten layer: (C, H, W) -> (C*H*W, 1, 1). Returns self."""
        with self._use() as h:
            lib.ibvi_net_add_flatten(h)
        return self

    def add_groupnorm(self, groups, eps=1e-5):
        """Appends a group normalisation over `groups` groups of channels
        (which must divide the channels), with affine gamma = 1, beta = 0 at
        init. Returns self."""
        fn = "Net.add_groupnorm"
        groups = _util.cint(groups, INT32, fn, "groups")
        eps = _util.cfloat(eps, fn, "eps")
        with self._use() as h:
            lib.ibvi_net_add_groupnorm(h, groups, eps)
        return self

    def add_residual(self, from_layer, projection_stride=0, bias=True):
        """Appends a residual connection: output = the previous layer's output
        + the output of layer `from_layer` (0-based, -1 = the network input).
        projection_stride 0: identity skip (the shapes must match); >= 1: a
        1x1 convolution with that stride projects the skip, with a bias
        unless bias=False. Returns self."""
        fn = "Net.add_residual"
        opts = _ResidualOptions()
        opts.version = 1  # IBVI_RESIDUAL_OPTIONS_VERSION
        opts.from_ = _util.cint(from_layer, INT32, fn, "from_layer")
        opts.projection_stride = _util.cint(projection_stride, INT32, fn,
                                            "projection_stride")
        opts.projection_no_bias = 0 if bias else 1
        with self._use() as h:
            lib.ibvi_net_add_residual_ex(h, byref(opts))
        return self

    def add_activation(self, activation):
        """Appends an activation: Activation.RELU/TANH/SILU or 'relu', 'tanh',
        'silu'. Returns self."""
        a = as_enum(Activation, activation, "Net.add_activation", "activation")
        with self._use() as h:
            lib.ibvi_net_add_activation(h, a)
        return self

    def set_covariance(self, layer, family=Covariance.DIAGONAL, rank=0,
                       init_sigma=0.0):
        """Sets layer `layer`'s covariance family before init(): a
        Covariance (or 'none'/'lowrank'/'diagonal'/'diag_lowrank'); rank
        for LOWRANK and DIAG_LOWRANK;
        init_sigma for DIAGONAL (sigma_0 = init_sigma x the prior std, 0:
        the default 1e-3). Returns self."""
        fn = "Net.set_covariance"
        opts = _CovarianceOptions()
        opts.version = COVARIANCE_OPTIONS_VERSION
        opts.family = as_enum(Covariance, family, fn, "family")
        opts.rank = _util.cint(rank, INT32, fn, "rank")
        opts.init_sigma = _util.cfloat(init_sigma, fn, "init_sigma")
        index = _util.cint(layer, INT32, fn, "layer")
        with self._use() as h:
            lib.ibvi_net_set_covariance(h, index, byref(opts))
        return self

    def kl(self):
        """KL(q || prior) of the diagonal (mean-field) layers, in nats."""
        v = ctypes.c_double()
        with self._use() as h:
            lib.ibvi_net_kl(h, byref(v))
        return v.value

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
        """Input values per example: C * H * W of input_shape."""
        return self._query(lib.ibvi_net_input_dim)

    @property
    def input_shape(self):
        """ImageShape(channels, height, width) of one example: (input_dim,
        1, 1) for Net(input_dim)."""
        c, h, w = c_int32(), c_int32(), c_int32()
        with self._use() as hd:
            lib.ibvi_net_input_shape(hd, byref(c), byref(h), byref(w))
        return ImageShape(c.value, h.value, w.value)

    def _rows(self, x, fn):
        """x (NCHW or flat) as (n, input_dim) rows; the caller holds the lock."""
        return _util.images(x, self.input_shape, fn, "x")

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
        """Floats of the model: every layer's mean and covariance floats."""
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

    @property
    def noise_stream(self):
        """The training-noise stream (docs/distributed.md): 0 by default,
        one per process of a data-parallel job; settable (0 .. 2^32 - 1,
        runtime only: init() and loading reset it to 0)."""
        v = c_uint64()
        with self._use() as h:
            lib.ibvi_net_noise_stream(h, byref(v))
        return v.value

    @noise_stream.setter
    def noise_stream(self, stream):
        stream = _util.cint(stream, UINT64, "Net.noise_stream", "stream")
        with self._use() as h:
            lib.ibvi_net_set_noise_stream(h, stream)

    def get_params(self, out=None):
        """Every mean and factor as one flat float32 array of param_count
        values (include/ibvi/distributed.h: per layer with parameters, its
        mean, then its factor row-major)."""
        with self._use() as h:
            out = _util.out_array(out, (int(lib.ibvi_net_param_count(h)),),
                                  "Net.get_params")
            lib.ibvi_net_get_params(h, fp(out), out.size)
        return out

    def set_params(self, params):
        """Sets every mean and factor from a flat array (get_params' layout);
        NaN/inf raise NonFiniteError and change nothing."""
        p = _util.f32(params, "Net.set_params", "params")
        with self._use() as h:
            lib.ibvi_net_set_params(h, fp(p), p.size)

    def get_grads(self, out=None):
        """The last backward's gradients in get_params' layout (the factor's
        G^T Z formed); StateError before any backward."""
        with self._use() as h:
            out = _util.out_array(out, (int(lib.ibvi_net_param_count(h)),),
                                  "Net.get_grads")
            lib.ibvi_net_get_grads(h, fp(out), out.size)
        return out

    def grads_factored_size(self, samples):
        """Floats of the factored gradient layout after a backward with
        `samples` samples (include/ibvi/distributed.h)."""
        samples = _util.cint(samples, INT32, "Net.grads_factored_size",
                             "samples")
        with self._use() as h:
            return int(lib.ibvi_net_grads_factored_size(h, samples))

    def get_grads_factored(self, samples, out=None):
        """The last backward's gradients in the factored layout (per layer:
        dL/dmu, or G then Z of a variational layer); `samples` is that
        backward's sample count (1 after the mean network)."""
        with self._use() as h:
            n = int(lib.ibvi_net_grads_factored_size(
                h, _util.cint(samples, INT32, "Net.get_grads_factored",
                              "samples")))
            out = _util.out_array(out, (n,), "Net.get_grads_factored")
            lib.ibvi_net_get_grads_factored(h, fp(out), out.size)
        return out

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

    @property
    def param_layers(self):
        """The layers with parameters (dense, convolution, group norm,
        projection residual), in order."""
        with self._use():
            return [l for l in self.layers if l.param_count > 0]

    def __repr__(self):
        with Hold(self._lockset):
            if self.closed:
                return "<ibvi.Net (closed)>"
            c, h, w = self.input_shape
            dims = [str(c) if h == w == 1 else "%dx%dx%d" % (c, h, w)]
            for l in self.layers:
                dims.append(l._brief())
            return "<ibvi.Net %s%s>" % (
                "-".join(dims), "" if self.initialized else " (not initialised)")

    # ---- forward and backward -------------------------------------------

    def forward(self, x, samples=1, out=None):
        """Training-mode forward with `samples` weight samples drawn from the
        network's stream. x: (n, input_dim) or NCHW (n, *input_shape), as
        for every method that takes x. Returns (samples * n, output_dim),
        sample-major (row m * n + i: input i under sample m)."""
        fn = "Net.forward"
        samples, blocks = _util.sample_rows(samples, fn)
        with self._use() as h:
            x = self._rows(x, fn)
            n = x.shape[0]
            out = _util.out_array(out, (blocks * n, self.output_dim), fn)
            lib.ibvi_net_forward(h, fp(x), n, samples, fp(out))
            self._last_samples = samples
        return out

    def forward_mean(self, x, out=None):
        """Forward with the mean network (z = 0). Returns (n, output_dim)."""
        fn = "Net.forward_mean"
        with self._use() as h:
            x = self._rows(x, fn)
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
            x = self._rows(x, fn)
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


class _ConvOptions(ctypes.Structure):
    """struct ibvi_conv2d_options of net.h (version 2)."""
    _fields_ = [("version", ctypes.c_uint32)] + [
        (f, c_int32) for f in ("out_channels", "kernel_h", "kernel_w",
                               "stride_h", "stride_w", "pad_h", "pad_w", "rank",
                               "no_bias")]


class _ResidualOptions(ctypes.Structure):
    """struct ibvi_residual_options of net.h (version 1)."""
    _fields_ = [("version", ctypes.c_uint32), ("from_", c_int32),
                ("projection_stride", c_int32),
                ("projection_no_bias", c_int32)]


class _CovarianceOptions(ctypes.Structure):
    """struct ibvi_covariance_options of net.h (version 1)."""
    _fields_ = [("version", ctypes.c_uint32), ("family", c_int32),
                ("rank", c_int32), ("init_sigma", c_float)]


class Layer:
    """A layer of a network (a borrowed ibvi_layer handle). It keeps its
    network alive, holds the network's lock during each call and raises
    StateError once the network is closed.

    Dense layers expose the mean theta = [W row-major (out x in); b] as a
    1-D array of P = out*in + out floats and the covariance factor S as a
    (P, R) array; getters return copies, setters copy in. A convolution's
    theta is [W (c_out x c_in*kh*kw) row-major; b], a projection residual's
    [W (c_out x c_in); b], a group norm's [gamma; beta] (docs/image-layers.md).
    Layers without parameters raise InvalidArgument from the accessors."""

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

    @property
    def output_shape(self):
        """ImageShape(channels, height, width) of this layer's output per
        example ((outputs, 1, 1) for a dense layer)."""
        c, h, w = c_int32(), c_int32(), c_int32()
        with self._use() as hd:
            lib.ibvi_layer_output_shape(hd, byref(c), byref(h), byref(w))
        return ImageShape(c.value, h.value, w.value)

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

    @property
    def covariance(self):
        """The layer's Covariance family."""
        return Covariance(self._query(lib.ibvi_layer_covariance))

    def get_rho(self, out=None):
        """Copy of a diagonal layer's rho (sigma = softplus(rho)), (P,)."""
        return self._get(lib.ibvi_layer_get_rho, False, out)

    def set_rho(self, rho):
        """Copies rho (P floats) into a diagonal layer."""
        t = _util.f32(rho, "Layer.set_rho", "rho")
        with self._use() as h:
            lib.ibvi_layer_set_rho(h, fp(t), t.size)

    def get_grad_rho(self, out=None):
        """dL/drho of the last backward pass (diagonal layers), (P,)."""
        return self._get(lib.ibvi_layer_get_grad_rho, False, out)

    rho = property(get_rho, set_rho, doc="rho (copy); assignable")

    def get_diag(self, out=None):
        """Copy of a DIAG_LOWRANK (SWAG) layer's d, (P,): theta = mu +
        d * z1 + S z2 (its S: get_factor)."""
        return self._get(lib.ibvi_layer_get_diag, False, out)

    def set_diag(self, diag):
        """Copies d (P floats, >= 0) into a DIAG_LOWRANK layer."""
        t = _util.f32(diag, "Layer.set_diag", "diag")
        with self._use() as h:
            lib.ibvi_layer_set_diag(h, fp(t), t.size)

    diag = property(get_diag, set_diag, doc="d (copy); assignable")
    grad_rho = property(get_grad_rho)

    mean = property(get_mean, set_mean, doc="theta (copy); assignable")
    factor = property(get_factor, set_factor, doc="S (copy); assignable")
    grad_mean = property(get_grad_mean)
    grad_factor = property(get_grad_factor)

    @property
    def has_bias(self):
        """True when theta ends with one bias per output channel (dense;
        a convolution or projection built with bias=True)."""
        return bool(self._query(lib.ibvi_layer_has_bias))

    def _split(self):
        """(W, b) of a dense, convolution or projection layer: theta ends
        with one bias per output channel, or is W alone (b then empty)."""
        k = self.kind
        if k not in (LayerKind.DENSE, LayerKind.CONV2D, LayerKind.RESIDUAL):
            raise binding_error(InvalidArgument, "Layer.weight", "layer %d (%s)"
                                " has no weight matrix" % (self.index,
                                                           k.name.lower()))
        c = self.output_shape.channels
        theta = self.get_mean()
        nb = c if self._query(lib.ibvi_layer_has_bias) else 0
        return (theta[:theta.size - nb].reshape(c, -1),
                theta[theta.size - nb:].copy())

    @property
    def weight(self):
        """W as (outputs, inputs) for a dense layer, (c_out, c_in*kh*kw) for
        a convolution, (c_out, c_in) for a projection residual (a copy)."""
        with self._use():
            return self._split()[0]

    @property
    def bias(self):
        """b: the last output-channels values of the mean (a copy; empty
        for a layer without a bias)."""
        with self._use():
            return self._split()[1]

    def _brief(self):
        k = self.kind
        if k == LayerKind.DENSE:
            return "%d%s" % (self.outputs, "(R=%d)" % self.rank if self.rank else "")
        if k == LayerKind.ACTIVATION:
            return self.activation.name.lower()
        c, h, w = self.output_shape
        r = "(R=%d)" % self.rank if k == LayerKind.CONV2D and self.rank else ""
        return "%s[%dx%dx%d]%s" % (k.name.lower(), c, h, w, r)

    def __repr__(self):
        try:
            with self._use():
                k = self.kind
                if k == LayerKind.DENSE:
                    i, o, r = self.shape
                    return "<ibvi.Layer %d dense %d->%d rank %d %s>" % (
                        self.index, i, o, r, self.role.name.lower())
                return "<ibvi.Layer %d %s>" % (self.index, self._brief())
        except StateError:
            return "<ibvi.Layer %d (network closed)>" % self.index
