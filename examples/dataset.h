/*
 * dataset.h - an image classification data set in memory, loaded from the
 * four IDX files of an MNIST-style directory. Host code for the examples.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef IBVI_EXAMPLES_DATASET_H
#define IBVI_EXAMPLES_DATASET_H

#include <stddef.h>
#include <stdint.h>

typedef struct dataset {
    float *images;    /* count x dim, pixel / 255 */
    int32_t *labels;  /* count values in [0, classes) */
    int64_t count;
    int32_t dim;      /* rows * cols */
    int32_t rows, cols;
    int32_t classes;  /* 1 + the largest label */
} dataset;

/* Loads DIR/<split>-images-idx3-ubyte.gz and DIR/<split>-labels-idx1-ubyte.gz
 * (split "train" or "t10k"). Returns 0 or a negative status with a message
 * in err. */
int dataset_load(dataset *out, const char *dir, const char *split, char *err,
                 size_t errlen);

/* Splits off the last `count` examples of d into a new data set (copies). */
int dataset_take_tail(dataset *out, dataset *d, int64_t count);

void dataset_free(dataset *d);

#endif /* IBVI_EXAMPLES_DATASET_H */
