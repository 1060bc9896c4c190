/*
 * The MNIST example models (models.h), moved out of mnist_train.c so that
 * mnist_train and mpi_train build the same networks.
 *
 * SPDX-License-Identifier: MIT
 */
#include <string.h>

#include "models.h"

const char *const model_names[MODEL_COUNT] = {"mlp", "lenet5", "resnet"};

int model_parse(const char *name)
{
    for (int k = 0; k < MODEL_COUNT; k++)
        if (strcmp(name, model_names[k]) == 0)
            return k;
    return -1;
}

#define TRY(call)                           \
    do {                                    \
        int status_ = (call);               \
        if (status_ < 0)                    \
            return status_;                 \
    } while (0)

/* LeNet-5 on 1 x 28 x 28: conv 6@5x5 pad 2 - relu - maxpool 2 - conv 16@5x5 -
 * relu - maxpool 2 - dense 120 - relu - dense 84 - relu - dense classes. The
 * dense layers read the 16 x 5 x 5 maps flat. */
static int add_lenet5(ibvi_net *net, int32_t classes, int32_t rank)
{
    TRY(ibvi_net_add_conv2d(net, 6, 5, 1, 2, rank));
    TRY(ibvi_net_add_activation(net, IBVI_ACT_RELU));
    TRY(ibvi_net_add_maxpool(net, 2, 2));
    TRY(ibvi_net_add_conv2d(net, 16, 5, 1, 0, 0));
    TRY(ibvi_net_add_activation(net, IBVI_ACT_RELU));
    TRY(ibvi_net_add_maxpool(net, 2, 2));
    TRY(ibvi_net_add_dense(net, 120, 0));
    TRY(ibvi_net_add_activation(net, IBVI_ACT_RELU));
    TRY(ibvi_net_add_dense(net, 84, 0));
    TRY(ibvi_net_add_activation(net, IBVI_ACT_RELU));
    return ibvi_net_add_dense(net, classes, rank);
}

/* Group-norm groups of the ResNet: they must divide every stage's width
 * (16, 32, 64); 4 keeps at least 4 channels per group (docs/tutorial.md). */
#define RESNET_GROUPS 4

/* The ResNet's convolutions: 3x3, padding 1, no bias. Each is followed by
 * a group norm, and with a bias whose prior is N(0, 1) and whose muP
 * learning rate is x C_out k^2, IBVI's output-layer noise killed the
 * pooled features within 80 steps (docs/results.md); the authors' ResNet
 * has no conv biases either. */
static int add_conv3x3(ibvi_net *net, int32_t channels, int32_t stride,
                       int32_t rank)
{
    ibvi_conv2d_options o = IBVI_CONV2D_OPTIONS_INIT;
    o.out_channels = channels;
    o.kernel_h = o.kernel_w = 3;
    o.stride_h = o.stride_w = stride;
    o.pad_h = o.pad_w = 1;
    o.rank = rank;
    o.no_bias = 1;
    return ibvi_net_add_conv2d_ex(net, &o);
}

/* One basic block: conv3x3 (stride) - GN - relu - conv3x3 - GN - residual -
 * relu; the residual adds the block's input, through a 1x1 projection (no
 * bias) with the block's stride when the width or the resolution
 * changes. */
static int add_basic_block(ibvi_net *net, int32_t channels, int32_t stride,
                           int projection)
{
    const int32_t block_input = ibvi_net_layer_count(net) - 1;
    TRY(add_conv3x3(net, channels, stride, 0));
    TRY(ibvi_net_add_groupnorm(net, RESNET_GROUPS, 1e-5f));
    TRY(ibvi_net_add_activation(net, IBVI_ACT_RELU));
    TRY(add_conv3x3(net, channels, 1, 0));
    TRY(ibvi_net_add_groupnorm(net, RESNET_GROUPS, 1e-5f));
    ibvi_residual_options r = IBVI_RESIDUAL_OPTIONS_INIT;
    r.from = block_input;
    r.projection_stride = projection ? stride : 0;
    r.projection_no_bias = 1;
    TRY(ibvi_net_add_residual_ex(net, &r));
    return ibvi_net_add_activation(net, IBVI_ACT_RELU);
}

/* A small CIFAR-style ResNet: stem conv 16@3x3 pad 1 - GN - relu, three
 * stages of one basic block (16, 32, 64 channels; the last two halve the
 * resolution with stride 2 and a projection), global average pool, dense
 * (the only layer with a bias). */
static int add_resnet(ibvi_net *net, int32_t classes, int32_t rank)
{
    TRY(add_conv3x3(net, 16, 1, rank));
    TRY(ibvi_net_add_groupnorm(net, RESNET_GROUPS, 1e-5f));
    TRY(ibvi_net_add_activation(net, IBVI_ACT_RELU));
    TRY(add_basic_block(net, 16, 1, 0));
    TRY(add_basic_block(net, 32, 2, 1));
    TRY(add_basic_block(net, 64, 2, 1));
    TRY(ibvi_net_add_global_avgpool(net));
    return ibvi_net_add_dense(net, classes, rank);
}

static int add_layers(ibvi_net *net, int model, const int32_t *hidden,
                      int hidden_count, int32_t classes, int32_t rank)
{
    switch (model) {
    case MODEL_MLP:
        for (int i = 0; i < hidden_count; i++) {
            TRY(ibvi_net_add_dense(net, hidden[i], i == 0 ? rank : 0));
            TRY(ibvi_net_add_activation(net, IBVI_ACT_RELU));
        }
        return ibvi_net_add_dense(net, classes, rank);
    case MODEL_LENET5:
        return add_lenet5(net, classes, rank);
    default:
        return add_resnet(net, classes, rank);
    }
}

int model_create(ibvi_net **out, int model, const int32_t *hidden,
                 int hidden_count, int32_t rows, int32_t cols,
                 int32_t classes, int32_t rank)
{
    ibvi_net *net;
    *out = NULL;
    int status = model == MODEL_MLP
                     ? ibvi_net_create(&net, rows * cols, NULL)
                     : ibvi_net_create_image(&net, 1, rows, cols, NULL);
    if (status < 0)
        return status;
    status = add_layers(net, model, hidden, hidden_count, classes, rank);
    if (status < 0) {
        ibvi_net_free(net);
        return status;
    }
    *out = net;
    return IBVI_OK;
}

int model_mean_field(ibvi_net *net)
{
    const ibvi_covariance_options diagonal = IBVI_COVARIANCE_OPTIONS_INIT;
    for (int32_t i = 0; i < ibvi_net_layer_count(net); i++) {
        ibvi_layer *l;
        TRY(ibvi_net_layer(net, i, &l));
        /* A residual's projection stays deterministic (net.h). */
        if (ibvi_layer_param_count(l) > 0 &&
            ibvi_layer_get_kind(l) != IBVI_LAYER_RESIDUAL)
            TRY(ibvi_net_set_covariance(net, i, &diagonal));
    }
    return 0;
}
