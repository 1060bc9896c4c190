/*
 * libibvi - the table of prediction heads: ibvi_head_kind -> its ops
 * (head.h).
 *
 * SPDX-License-Identifier: MIT
 */
#include "head.h"

/* The one place a kind becomes a head: a switch without default, so
 * -Wswitch names this case when a kind joins ibvi_head_kind. */
const ibvi__head_ops *ibvi__head_of(int32_t kind)
{
    switch ((ibvi_head_kind)kind) {
    case IBVI_HEAD_SOFTMAX:
        return &ibvi__head_softmax_ops;
    case IBVI_HEAD_SIGMOID:
        return &ibvi__head_sigmoid_ops;
    case IBVI_HEAD_REGRESSION:
        return &ibvi__head_regression_ops;
    case IBVI_HEAD_HETEROSCEDASTIC:
        return &ibvi__head_heteroscedastic_ops;
    }
    return NULL;
}
