/*
 * libibvi - saving and loading networks (and their optimizers).
 *
 * A saved network holds everything needed to continue exactly where it
 * stopped: the architecture (the input shape, every layer's kind and
 * settings), the parameterization, the seed, the position of the sampling
 * stream, the thread count, every layer's parameters (mean and covariance
 * factor) and, optionally, an optimizer (its kind,
 * hyper-parameters, step count and momentum or Adam moments). A network
 * saved and loaded again predicts bit for bit like the original, and
 * training resumed from a file with its optimizer gives bit for bit the
 * parameters of the run that saved it, continued with the same data (and
 * the same ibvi_optimizer_set_deferred request, a runtime schedule the
 * file does not record: a loaded optimizer has the default, -1). A save
 * settles the deferred factor updates (optimizer.h) and leaves the saving
 * run exactly as its loaded copy; a run that never saved may differ from
 * both by rounding in the factors, as its window flushed at other steps
 * (docs/deferred.md). Not saved: the
 * gradients and the cached forward pass (a loaded network needs a
 * forward and backward pass before ibvi_optimizer_step(); ibvi_train_step()
 * does both), the workspace size, and the allocator.
 *
 * The file format is little-endian on every host; floats are stored as
 * their IEEE-754 binary32 bit patterns. Integers are unsigned unless marked
 * "int" (two's complement). This library writes version 2 and reads
 * versions 1 and 2.
 *
 * Version 2: sections, and layer records, that a later library can extend
 * without a new format version. A reader that meets something it does not
 * know either skips it, when the writer marked it as ignorable, or refuses
 * the file with IBVI_ERR_VERSION and a message "needs a newer libibvi:
 * ..." saying what it met (an unknown layer kind, required section, input
 * shape, or more required bytes than it knows).
 *
 *   offset  size  field
 *   0       4     magic "IBVI"
 *   4       4     format version (2)
 *   8       8     file size in bytes, checksum included
 *   16            sections, each:
 *                   4  tag (four ASCII bytes)
 *                   8  uint64 payload size
 *                   8  uint64 required: how many leading payload bytes a
 *                      reader must understand to use the section
 *                   payload
 *   end-4   4     CRC-32 (IEEE 802.3, as zlib's crc32) of all bytes before it
 *
 * Sections a reader does not know are skipped when their required count is
 * 0 and refused (IBVI_ERR_VERSION) otherwise; they may appear anywhere
 * between the known ones. The known sections come in this order, each at
 * most once: HEAD, ARCH, PARM (all three present), then OPTM if there is an
 * optimizer. In a known section, bytes after the fields the reader knows
 * are ignored if the section's required count does not reach into them,
 * and refused (IBVI_ERR_VERSION) if it does; a payload shorter than the
 * reader's fields is malformed (IBVI_ERR_FORMAT). This library writes
 * required = payload size for every section.
 *
 *     "HEAD"  24 bytes: int32 parameterization, int32 threads (a
 *                 preference, 1..1024: see ibvi_net_load), uint64 position
 *                 of the sampling stream (ibvi_net_rng_position; at file
 *                 offset 44, as in version 1), uint64 seed
 *     "ARCH"  uint32 C, uint32 H, uint32 W: the input shape (networks of
 *                 ibvi_net_create() have C = input_dim, H = W = 1 and load
 *                 as such; others load as ibvi_net_create_image(C, H, W);
 *                 each >= 1, C x H x W <= 10^8),
 *                 uint32 L (number of layers, >= 1), then L layer records:
 *                   4  uint32 kind (ibvi_layer_kind)
 *                   8  uint64 record length in bytes, these 20 included
 *                   8  uint64 required: how many leading bytes of the
 *                      record a reader must understand (20 <= required <=
 *                      length)
 *                   the kind's fields, then possibly fields of a later
 *                      library, which this reader skips when they lie at
 *                      or after `required`
 *                 Fields of each kind (this library writes length =
 *                 required = 20 + the fields below):
 *                   dense (0):      int32 outputs, int32 rank (8 bytes)
 *                   activation (1): int32 activation (ibvi_activation; its
 *                                   width is its input's) (4 bytes)
 *                   conv2d (2):     int32 out_channels, kernel_h, kernel_w,
 *                                   stride_h, stride_w, pad_h, pad_w, rank
 *                                   (32 bytes: ibvi_conv2d_options' fields)
 *                   maxpool (3),
 *                   avgpool (4):    int32 kernel_h, kernel_w, stride_h,
 *                                   stride_w (16 bytes; this library builds
 *                                   square pools: kernel_h = kernel_w and
 *                                   stride_h = stride_w, other values need
 *                                   a newer library)
 *                   global avgpool (5),
 *                   flatten (6):    no fields (0 bytes)
 *                   groupnorm (7):  int32 groups, float eps (8 bytes)
 *                   residual (8):   int32 from (the layer whose output is
 *                                   added, -1 for the input), int32
 *                                   projection_stride (0: identity) (8
 *                                   bytes)
 *                 A kind with parameters (dense, conv2d, groupnorm,
 *                 residual) may follow its fields with the covariance
 *                 field: int32 family (ibvi_covariance_family), then
 *                 float init_sigma (DIAGONAL) or int32 R (DIAG_LOWRANK,
 *                 SWAG, since 0.5.0; the kind's rank field is then 0 and
 *                 PARM holds the mean, S of P x R, then d of P) (8
 *                 bytes), read when `required` covers it. This library
 *                 writes it for diagonal and diag-lowrank layers only, with
 *                 required = length (an older library refuses the file);
 *                 without it a layer's family is the one its rank implies.
 *                 A conv2d or residual layer without a bias (since 0.6.0)
 *                 follows the covariance field (written for it, with the
 *                 family its rank implies: 0 or 1, then 4 zero bytes) with
 *                 the bias field, int32 no_bias = 1 (4 bytes; theta is then
 *                 its weights alone), required = length, so an older
 *                 library refuses it; a layer with a bias has neither.
 *                 A later library writing further fields of such a kind
 *                 writes the covariance field first.
 *                 The shapes follow from the input shape and the records,
 *                 as the builders compute them; a record whose geometry the
 *                 builder would refuse (a kernel larger than the padded
 *                 input, channels not divisible by the groups, a skip of
 *                 another shape, ...) is malformed (IBVI_ERR_FORMAT, with the
 *                 builder's reason). The last layer is dense or conv2d.
 *                 An unknown kind needs a newer library (IBVI_ERR_VERSION,
 *                 "needs a newer libibvi: unknown layer kind 9"); a record
 *                 shorter than its kind's fields is malformed.
 *     "PARM"  per layer in order, the floats its kind stores: its mean
 *                 theta (P floats) then, for a rank-R layer, the factor
 *                 (P x R floats, row-major), for a diagonal layer rho (P
 *                 floats). theta is, for a dense layer,
 *                 [W row-major (outputs x inputs); b] (P = outputs x
 *                 (inputs + 1)); conv2d, [W (c_out x c_in kh kw) row-major;
 *                 b] (W alone without a bias); groupnorm, [gamma (C); beta
 *                 (C)]; a residual with a projection, [W (C_out x C_in); b]
 *                 (W alone without a bias). Activations, pools,
 *                 flatten and identity residuals store none
 *     "OPTM"  optional, 44 + 4 S (+ 4) bytes: int32 kind (ibvi_optimizer_kind),
 *                 float lr, float momentum, int32 nesterov, float beta1,
 *                 float beta2, float eps, int64 step count (0 .. 2^53),
 *                 uint64 S, then S state floats (SGD: velocity, S =
 *                 parameter count; Adam: first then second moments, S = 2
 *                 x parameter count), in the order of
 *                 ibvi_net_param_count's parameters, which is PARM's:
 *                 per layer with parameters, its mean (dense, conv2d: the
 *                 weights, then the biases), then its factor rows (or
 *                 rho); then, when the optimizer's KL weight is not 0, a
 *                 float KL weight (4 bytes, required: an older library
 *                 refuses it rather than train without the KL)
 *
 * Version 1 (read only): sections with a 12-byte header (tag, uint64
 * payload size; no required count), in this order and nothing else:
 *     "HEAD"  28 bytes: int32 input_dim, int32 parameterization,
 *                 uint64 seed, uint64 position of the sampling stream,
 *                 int32 threads
 *     "ARCH"  4 + 16 L bytes: uint32 L, then per layer int32 kind, int32
 *                 activation (0 for dense layers), int32 outputs (for
 *                 activations: their width), int32 rank (0 for activations)
 *     "PARM"  as in version 2
 *     "OPTM"  optional, as in version 2
 * A version-1 file loads to the same network and optimizer as the
 * version-2 file of that network; saving it again writes version 2.
 *
 * Loading checks, in order: the magic (IBVI_ERR_FORMAT), the version
 * (IBVI_ERR_VERSION for a newer one, 3 and up), the recorded size against
 * the actual size (IBVI_ERR_FORMAT: truncated or extended file), the
 * checksum (IBVI_ERR_CHECKSUM), then every section's size and value (what
 * only a later library understands: IBVI_ERR_VERSION, above): counts and
 * shapes are validated against the bytes present before anything of their
 * size is allocated (the validation allocates one table of the layers'
 * output shapes, 12 bytes per layer), and the network is rebuilt through
 * the public API, so it meets
 * every invariant a network built by hand meets. Parameters and optimizer
 * state must be finite (and Adam's second moments >= 0); the optimizer's
 * settings must be ones its setters accept.
 *
 * Bounds on what a file may declare, so that a small or hostile file cannot
 * make the loader (or the first forward pass) demand memory out of
 * proportion to its size:
 *   - every parameter and state value the architecture implies must be
 *     present in the file (4 bytes each);
 *   - input_dim and every layer's outputs are at most 10^8 (the largest
 *     ibvi_net_create() and ibvi_net_add_dense() accept);
 *   - the activations of one input row, input_dim plus the outputs of all
 *     layers, are at most 2^20 + 4 x the number of parameter floats in the
 *     file (the forward workspace is about five
 *     floats per activation per row; parameter-free layers, activations,
 *     are the only way to widen it without bytes in the file: a 900 KB
 *     file of 32768 wide ReLU layers asked 4 GiB per row before this bound);
 *   - the step count is at most 2^53: the largest
 *     count every later step can still increment exactly in a double
 *     (Adam's bias correction computes with steps + 1 in double) and, at a
 *     million steps a second, 285 years of training. A larger count can
 *     only come from a damaged or forged file, and accepting INT64_MAX made
 *     the next step overflow.
 * The checksum is verified by ibvi_net_load() while reading the file in
 * 64 KiB pieces, before anything of the file's size is allocated.
 * Any failure returns IBVI_ERR_FORMAT (or one of the statuses above) with a
 * message naming the problem, leaves *out (and *opt_out) NULL, and leaks
 * nothing. A damaged file never crashes the loader or makes it read outside
 * the bytes given.
 *
 * A save never writes bytes the loader would reject: ibvi_net_save() and
 * ibvi_net_save_buffer() run the loader's own validation (the same code,
 * values included) over the bytes they produced before reporting success,
 * and a network the format cannot hold (one outside the bounds above, such
 * as a network whose stacked activations exceed the per-row bound) gives
 * IBVI_ERR_UNSUPPORTED with the loader's message.
 *
 * Threading: saving reads the network and optimizer (use them from one
 * thread at a time, see common.h); loading creates new handles. The
 * functions have no other state.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef IBVI_IO_H
#define IBVI_IO_H

#include "common.h"
#include "net.h"
#include "optimizer.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The format version this library writes; it reads this and older ones.
 * Within version 2, later libraries add layer kinds, fields and sections
 * (see above) without a new version number. */
#define IBVI_FORMAT_VERSION 2

/* Saves an initialised network and, if opt is not NULL, its optimizer (which
 * must be bound to net) to the file `path`.
 * What path may be: nothing (the file is created), a regular file (it is
 * replaced), or a symbolic link to a regular file: the link is followed
 * and its target is replaced, in the target's directory, so the link stays
 * and points to the new file. Anything else (a directory, a device such as
 * /dev/null or /dev/full, a FIFO, a socket, a dangling link, a link to one
 * of these) is refused with IBVI_ERR_IO and left alone. The check is made
 * when the call starts.
 * The bytes go to a new temporary file ".ibvi-<pid>-<n>" in the directory
 * of the file replaced (a short name, so a path whose last component has
 * NAME_MAX bytes works), which is flushed, checked (see above), synced to
 * disk and then renamed over that file: a crash or error at any point
 * leaves either the old file or the complete new one. On failure the
 * temporary file is removed and an existing file at path is untouched (a
 * save killed by a signal leaves its temporary file behind). The new file
 * has the default permissions (0666 minus the umask), not those of a file
 * it replaces.
 * Returns IBVI_OK, IBVI_ERR_INVALID_ARG (NULL net, NULL or empty path, opt
 * bound to another network), IBVI_ERR_STATE (network not initialised),
 * IBVI_ERR_UNSUPPORTED (the file would not load, see above; nothing is
 * replaced), IBVI_ERR_NOMEM or IBVI_ERR_IO (the message gives the file and
 * the system's reason). */
IBVI_API int ibvi_net_save(const ibvi_net *net, const ibvi_optimizer *opt,
                           const char *path);

/* Loads a network (and optionally its optimizer) saved by ibvi_net_save().
 * out: receives the new network, owned by the caller (ibvi_net_free); NULL
 *      on failure.
 * opt_out: NULL to skip the optimizer stored in the file, if any (its section
 *      is still checked for consistency, its state values are not read); else
 *      receives the optimizer bound to *out (owned by the caller; free it
 *      before the network), or NULL when the file holds no optimizer (this
 *      is not an error).
 * allocator: as for ibvi_net_create(); also used for the file's bytes
 *      while loading: a 64 KiB buffer for the checksum pass, then (once the
 *      checksum matched) the whole file.
 * Only a regular file is read: a FIFO, device or directory gives
 * IBVI_ERR_IO without waiting for a writer (the file is opened
 * non-blocking and its type checked on the opened descriptor).
 * The thread count stored in the file is a preference: the network gets
 * min(stored, the CPUs this process may run on: sched_getaffinity, else
 * the online CPUs), so a file cannot make a host start more BLIS threads
 * than it has CPUs; saving that network stores the capped count.
 * Returns IBVI_OK, IBVI_ERR_INVALID_ARG, IBVI_ERR_IO (missing, unreadable
 * or not a regular file), IBVI_ERR_FORMAT, IBVI_ERR_VERSION,
 * IBVI_ERR_CHECKSUM or IBVI_ERR_NOMEM. */
IBVI_API int ibvi_net_load(ibvi_net **out, ibvi_optimizer **opt_out,
                           const char *path, const ibvi_allocator *allocator);

/* ---- In memory (the same bytes as the file) ------------------------------ */

/* *bytes receives the size of the file ibvi_net_save() would write for net
 * and opt (opt may be NULL). Returns IBVI_OK, IBVI_ERR_INVALID_ARG or
 * IBVI_ERR_STATE, as ibvi_net_save(). */
IBVI_API int ibvi_net_save_size(const ibvi_net *net, const ibvi_optimizer *opt,
                                int64_t *bytes);

/* Writes the bytes of the file into buf, which holds len bytes; len must be
 * at least the size given by ibvi_net_save_size() (IBVI_ERR_SHAPE if
 * smaller, and buf is then unchanged); exactly that many bytes are written.
 * The bytes are then checked by the loader's validation: if they would not
 * load, IBVI_ERR_UNSUPPORTED and those bytes of buf are zeroed (buf never
 * holds a file the loader rejects).
 * buf is borrowed for the duration of the call. Returns IBVI_OK,
 * IBVI_ERR_INVALID_ARG, IBVI_ERR_STATE, IBVI_ERR_SHAPE or
 * IBVI_ERR_UNSUPPORTED. */
IBVI_API int ibvi_net_save_buffer(const ibvi_net *net,
                                  const ibvi_optimizer *opt, uint8_t *buf,
                                  int64_t len);

/* Loads from the len bytes at buf (the whole file, nothing more), like
 * ibvi_net_load(). buf is borrowed for the duration of the call; it need
 * not be aligned. len = 0 is a format error. */
IBVI_API int ibvi_net_load_buffer(ibvi_net **out, ibvi_optimizer **opt_out,
                                  const uint8_t *buf, int64_t len,
                                  const ibvi_allocator *allocator);

#ifdef __cplusplus
}
#endif

#endif /* IBVI_IO_H */
