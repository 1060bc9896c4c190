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
    int status = ibvi__net_check_ready(net, fn);
    if (status < 0)
        return status;
    IBVI_CHECK_NOT_NULL(fn, opt);
    if (ibvi__optimizer_net(opt) != net)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: opt was created for another network", fn);
    /* The logits stay in the last layer's workspace output: no copy. */
    status = ibvi__net_forward_sampled(net, fn, x, n, samples, NULL);
    if (status < 0)
        return status;
    const int32_t classes = net->layers[net->layer_count - 1]->outputs;
    const float *logits = net->layers[net->layer_count - 1]->output;
    float value = 0.0f;
    const int64_t rows = n * samples;
    status = ibvi_loss(loss_kind, logits, rows, classes, labels, targets, n,
                       &value, net->loss_grad);
    if (loss)
        *loss = value;
    if (status < 0)
        return status;
    status = ibvi_net_backward(net, net->loss_grad, rows, classes);
    if (status < 0)
        return status;
    return ibvi_optimizer_step(opt);
}
