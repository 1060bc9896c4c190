/*
 * The MNIST example models (mnist_train, mpi_train): an MLP, LeNet-5 and a
 * small GroupNorm ResNet on 1 x rows x cols images (docs/tutorial.md).
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef IBVI_EXAMPLES_MODELS_H
#define IBVI_EXAMPLES_MODELS_H

#include <stdint.h>

#include <ibvi/ibvi.h>

enum { MODEL_MLP, MODEL_LENET5, MODEL_RESNET, MODEL_COUNT };
extern const char *const model_names[MODEL_COUNT];

/* The MODEL_* of a name, or -1. */
int model_parse(const char *name);

/* Creates the network of `model` for images of rows x cols pixels
 * (dim = rows * cols) and `classes` classes, not yet initialised, with
 * `rank` on the first and last layers with weights (0: the standard
 * network, the same architecture). mlp: dim-hidden[0]-...-classes with
 * ReLU. Returns a status of libibvi (and *out = NULL) on failure. */
int model_create(ibvi_net **out, int model, const int32_t *hidden,
                 int hidden_count, int32_t rows, int32_t cols,
                 int32_t classes, int32_t rank);

/* Mean-field VI: every layer with weights (before ibvi_net_init) gets the
 * diagonal covariance family with the default sigma_0 (net.h); a residual's
 * projection stays deterministic. 0 or a negative ibvi_status. */
int model_mean_field(ibvi_net *net);

#endif /* IBVI_EXAMPLES_MODELS_H */
