/*
 * libibvi - the one-call training step on top of the public primitives.
 *
 * SPDX-License-Identifier: MIT
 */
#include "ibvi/loss.h"
#include "ibvi/optimizer.h"
#include "network.h"

int ibvi_train_step(ibvi_net *net, ibvi_optimizer *opt, const float *x,
                    int64_t n, int32_t samples, int32_t loss_kind,
                    const int32_t *labels, const float *targets, float *loss)
{
    static const char fn[] = "ibvi_train_step";
    /* Everything that can be checked before the forward pass is, so a
     * rejected step changes nothing (not even the noise stream). */
    int status = ibvi__net_check_ready(net, fn);
    if (status < 0)
        return status;
    IBVI_CHECK_NOT_NULL(fn, opt);
    if (ibvi__optimizer_net(opt) != net)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: opt was created for another network", fn);
    status = ibvi__optimizer_check_step(opt, fn);
    if (status < 0)
        return status;
    const int32_t classes = net->layers[net->layer_count - 1]->outputs;
    /* Bad n or samples: the forward's checks below report them. */
    const int sizes_ok = n > 0 && samples >= 1 &&
                         samples <= IBVI_MAX_SAMPLES &&
                         n <= INT64_MAX / samples;
    const int64_t rows = sizes_ok ? n * samples : 0;
    if (sizes_ok) {
        status = ibvi__loss_check(fn, loss_kind, rows, classes, labels,
                                  targets, n);
        if (status < 0)
            return status;
    }
    /* Checks x, n and samples before it draws or runs anything. The logits
     * stay in the last layer's workspace output: no copy. */
    status = ibvi__net_forward_sampled(net, fn, x, n, samples, NULL);
    if (status < 0)
        return status;
    const float *logits = net->layers[net->layer_count - 1]->output;
    float value = 0.0f;
    status = ibvi__loss_eval(fn, loss_kind, logits, rows, classes, labels,
                             targets, n, &value, net->loss_grad);
    if (loss)
        *loss = value;
    if (status < 0)
        return status;
    status = ibvi_net_backward(net, net->loss_grad, rows, classes);
    if (status < 0)
        return status;
    return ibvi__optimizer_step(opt, fn);
}
