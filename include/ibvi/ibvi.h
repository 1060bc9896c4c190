/*
 * libibvi - Implicit Bias Variational Inference for neural networks in C.
 *
 * A network's first and last dense layers can hold a low-rank Gaussian
 * q = N(mu, S S^T) over their weights instead of a point. q starts at the
 * prior and is trained by SGD on the expected loss alone (no KL term): the
 * optimizer's implicit bias removes uncertainty where there is data and
 * keeps the prior's elsewhere. Prediction averages the probabilities of
 * sampled networks.
 *
 * Headers:
 *   common.h     versions, status codes, ibvi_last_error(), allocator
 *   net.h        networks, layers, forward and backward passes
 *   loss.h       losses and their gradients (the Gaussian NLL included)
 *   optimizer.h  SGD (momentum, Nesterov), Adam, ibvi_train_step()
 *   predictor.h  predictive averaging over K samples, ensembles; heads:
 *                softmax, sigmoid, (heteroscedastic) regression
 *   metrics.h    accuracy, NLL, Brier, ECE/MCE, OOD AUROC, entropy
 *   io.h         saving and loading networks and optimizers
 *   calibration.h temperature scaling: fit T, softmax(logits / T); the
 *                regression noise std (ibvi_fit_noise_std)
 *   kernel.h     which BLIS kernel set runs, and how it was chosen
 *   distributed.h data parallel: flat parameters and gradients, host steps,
 *                noise streams per process (docs/distributed.md)
 *   laplace.h    the last-layer Laplace approximation (docs/laplace.md)
 *   swag.h       SWAG: moments of SGD iterates, the posterior network
 *
 * A host-written training loop (error checks shortened to CHECK):
 *
 *   ibvi_net *net;
 *   CHECK(ibvi_net_create(&net, 784, NULL));
 *   CHECK(ibvi_net_add_dense(net, 256, 10));     // rank-10 Gaussian layer
 *   CHECK(ibvi_net_add_activation(net, IBVI_ACT_RELU));
 *   CHECK(ibvi_net_add_dense(net, 256, 0));      // deterministic layer
 *   CHECK(ibvi_net_add_activation(net, IBVI_ACT_RELU));
 *   CHECK(ibvi_net_add_dense(net, 10, 10));      // rank-10 Gaussian layer
 *   CHECK(ibvi_net_init(net, IBVI_PARAM_MUP, 42));
 *
 *   ibvi_optimizer *opt;
 *   CHECK(ibvi_optimizer_create(&opt, net, IBVI_OPT_SGD, 0.05f));
 *   CHECK(ibvi_optimizer_set_momentum(opt, 0.9f, 0));
 *   for (each minibatch x (128 x 784), labels (128)) {
 *       float loss;
 *       CHECK(ibvi_train_step(net, opt, x, 128, 1, IBVI_LOSS_SOFTMAX_XENT,
 *                             labels, NULL, &loss));
 *   }
 *   ibvi_optimizer_free(opt);
 *   ibvi_net_free(net);
 *
 * where CHECK(e) is, for example,
 *   if ((e) < 0) { fprintf(stderr, "%s\n", ibvi_last_error()); exit(1); }
 *
 * The same loop with the primitives: ibvi_net_forward(), a loss from
 * loss.h with its gradient, ibvi_net_backward(), ibvi_optimizer_step().
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef IBVI_IBVI_H
#define IBVI_IBVI_H

#include "common.h"
#include "net.h"
#include "loss.h"
#include "optimizer.h"
#include "predictor.h"
#include "metrics.h"
#include "io.h"
#include "calibration.h"
#include "kernel.h"
#include "distributed.h"
#include "laplace.h"
#include "swag.h"

#endif /* IBVI_IBVI_H */
