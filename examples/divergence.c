/*
 * divergence.c - see divergence.h.
 *
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>

#include "divergence.h"

int divergence_epoch(char *why, size_t why_size, int epoch, double epoch_loss,
                     double first_loss)
{
    if (epoch_loss > DIVERGENCE_FACTOR * first_loss) {
        snprintf(why, why_size,
                 "epoch %d: mean training loss %.4g > %.1f x the first step's "
                 "%.4g", epoch, epoch_loss, DIVERGENCE_FACTOR, first_loss);
        return 1;
    }
    if (epoch > 1 && epoch_loss > first_loss) {
        snprintf(why, why_size,
                 "epoch %d: mean training loss %.4g > the first step's %.4g",
                 epoch, epoch_loss, first_loss);
        return 1;
    }
    return 0;
}

int divergence_epoch_shifted(char *why, size_t why_size, int epoch,
                             double epoch_loss, double first_loss,
                             double floor)
{
    const double loss = epoch_loss - floor, first = first_loss - floor;
    if (loss > DIVERGENCE_FACTOR * first) {
        snprintf(why, why_size,
                 "epoch %d: mean training loss %.4g rose more than %.1f x "
                 "above %.4g from the first step's %.4g", epoch, epoch_loss,
                 DIVERGENCE_FACTOR, floor, first_loss);
        return 1;
    }
    if (epoch > 1 && loss > first) {
        snprintf(why, why_size,
                 "epoch %d: mean training loss %.4g > the first step's %.4g",
                 epoch, epoch_loss, first_loss);
        return 1;
    }
    return 0;
}

void divergence_nonfinite(char *why, size_t why_size, int epoch)
{
    snprintf(why, why_size, "epoch %d: non-finite training loss", epoch);
}
