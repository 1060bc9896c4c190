/*
 * mnist_predict - loads a network saved by mnist_train --save and prints,
 * for chosen test images, the predicted class, its probability and the
 * uncertainty measures of predictive averaging (docs/concepts.md,
 * "Prediction and metrics").
 *
 *   mnist_predict --model FILE --data DIR [--first I] [--count N]
 *                 [--samples K] [--seed S] [--split t10k|train]
 *
 * SPDX-License-Identifier: MIT
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ibvi/ibvi.h>
#include <ibvi/io.h>

#include "dataset.h"

static void fail(const char *what, int status)
{
    fprintf(stderr, "mnist_predict: %s: %s (%s)\n", what,
            ibvi_status_string(status), ibvi_last_error());
    exit(1);
}

int main(int argc, char **argv)
{
    const char *model = NULL, *dir = NULL, *split = "t10k";
    long long first = 0, count = 10;
    int samples = 32;
    unsigned long long seed = 1;
    static const struct option options[] = {
        {"model", required_argument, 0, 'm'}, {"data", required_argument, 0, 'd'},
        {"first", required_argument, 0, 'f'}, {"count", required_argument, 0, 'n'},
        {"samples", required_argument, 0, 'K'}, {"seed", required_argument, 0, 's'},
        {"split", required_argument, 0, 'p'}, {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "h", options, NULL)) != -1) {
        switch (opt) {
        case 'm': model = optarg; break;
        case 'd': dir = optarg; break;
        case 'f': first = atoll(optarg); break;
        case 'n': count = atoll(optarg); break;
        case 'K': samples = atoi(optarg); break;
        case 's': seed = strtoull(optarg, NULL, 10); break;
        case 'p': split = optarg; break;
        default:
            fprintf(opt == 'h' ? stdout : stderr,
                    "usage: mnist_predict --model FILE --data DIR [--first I] "
                    "[--count N] [--samples K] [--seed S] [--split t10k|train]\n");
            return opt == 'h' ? 0 : 2;
        }
    }
    if (!model || !dir) {
        fprintf(stderr, "mnist_predict: --model and --data are required\n");
        return 2;
    }

    ibvi_net *net;
    int status = ibvi_net_load(&net, NULL, model, NULL);
    if (status < 0)
        fail(model, status);
    dataset d;
    char err[512];
    if (dataset_load(&d, dir, split, err, sizeof err) < 0) {
        fprintf(stderr, "mnist_predict: %s\n", err);
        return 1;
    }
    if (d.dim != ibvi_net_input_dim(net)) {
        fprintf(stderr, "mnist_predict: images have %d pixels, the model "
                        "expects %d\n", d.dim, ibvi_net_input_dim(net));
        return 1;
    }
    if (first < 0 || count < 1 || first >= d.count)
        count = 0;
    if (first + count > d.count)
        count = d.count - first;
    if (count == 0) {
        fprintf(stderr, "mnist_predict: no images in [%lld, %lld) of %lld\n",
                first, first + count, (long long)d.count);
        return 2;
    }

    const int32_t classes = ibvi_net_output_dim(net);
    float *probs = malloc((size_t)count * classes * sizeof *probs);
    float *entropy = malloc((size_t)count * 3 * sizeof *entropy);
    if (!probs || !entropy) {
        fprintf(stderr, "mnist_predict: out of memory\n");
        return 1;
    }
    ibvi_predictor *pred;
    if ((status = ibvi_predictor_create(&pred, net, samples, seed)) < 0)
        fail("predictor", status);
    if ((status = ibvi_predictor_run(pred, d.images + first * d.dim, count, probs,
                                     entropy, entropy + count,
                                     entropy + 2 * count)) < 0)
        fail("predict", status);

    printf("%-7s %5s %5s %8s %10s %10s %10s\n", "image", "label", "class",
           "prob", "pred.ent", "exp.ent", "mutual.inf");
    for (long long i = 0; i < count; i++) {
        const float *p = probs + i * classes;
        int32_t best = 0;
        for (int32_t c = 1; c < classes; c++)
            if (p[c] > p[best])
                best = c;
        printf("%-7lld %5d %5d %8.4f %10.4f %10.4f %10.4f%s\n", first + i,
               d.labels[first + i], best, p[best], entropy[i],
               entropy[count + i], entropy[2 * count + i],
               best == d.labels[first + i] ? "" : "  (wrong)");
    }
    printf("(%d weight samples; entropies in nats; BLIS kernel %s)\n",
           ibvi_predictor_samples(pred), ibvi_kernel_name());
    ibvi_predictor_free(pred);
    ibvi_net_free(net);
    free(probs);
    free(entropy);
    dataset_free(&d);
    return 0;
}
