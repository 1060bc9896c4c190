/*
 * dataset.c - see dataset.h.
 *
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dataset.h"
#include "idx.h"

int dataset_load(dataset *out, const char *dir, const char *split, char *err,
                 size_t errlen)
{
    memset(out, 0, sizeof *out);
    char images_path[4096], labels_path[4096];
    snprintf(images_path, sizeof images_path, "%s/%s-images-idx3-ubyte.gz",
             dir, split);
    snprintf(labels_path, sizeof labels_path, "%s/%s-labels-idx1-ubyte.gz",
             dir, split);
    int64_t image_count = 0, label_count = 0;
    int status = idx_load_images(images_path, &out->images, &image_count,
                                 &out->rows, &out->cols, err, errlen);
    if (status < 0)
        return status;
    status = idx_load_labels(labels_path, &out->labels, &label_count, err,
                             errlen);
    if (status < 0) {
        dataset_free(out);
        return status;
    }
    if (image_count != label_count) {
        snprintf(err, errlen, "%s: %lld images but %lld labels", dir,
                 (long long)image_count, (long long)label_count);
        dataset_free(out);
        return IDX_ERR_FORMAT;
    }
    out->count = image_count;
    out->dim = out->rows * out->cols;
    out->classes = idx_max_label(out->labels, out->count) + 1;
    return 0;
}

int dataset_take_tail(dataset *out, dataset *d, int64_t count)
{
    memset(out, 0, sizeof *out);
    if (count <= 0 || count >= d->count)
        return IDX_ERR_INVALID_ARG;
    const int64_t first = d->count - count;
    out->images = malloc((size_t)(count * d->dim) * sizeof(float));
    out->labels = malloc((size_t)count * sizeof(int32_t));
    if (!out->images || !out->labels) {
        dataset_free(out);
        return IDX_ERR_NOMEM;
    }
    memcpy(out->images, d->images + first * d->dim,
           (size_t)(count * d->dim) * sizeof(float));
    memcpy(out->labels, d->labels + first, (size_t)count * sizeof(int32_t));
    out->count = count;
    out->dim = d->dim;
    out->rows = d->rows;
    out->cols = d->cols;
    out->classes = d->classes;
    d->count = first;
    return 0;
}

void dataset_free(dataset *d)
{
    free(d->images);
    free(d->labels);
    memset(d, 0, sizeof *d);
}
