// cpp_example - libibvi from C++17 with RAII wrappers.
//
// The C API hands out opaque handles that the caller frees; in C++ each one
// goes into a std::unique_ptr with the matching free function, and every
// negative status becomes an exception carrying ibvi_last_error(). The
// program trains a small IBVI classifier on two noisy clusters and compares
// the epistemic uncertainty (mutual information between the prediction and
// the weights) on the training points with that on points far from them.
// Then it trains a small convolutional network on 1 x 8 x 8 images of
// horizontal and vertical bars.
//
//   build/examples/cpp_example
//   c++ -std=c++17 cpp_example.cpp $(pkg-config --cflags --libs ibvi)
//
// SPDX-License-Identifier: MIT

#include <ibvi/ibvi.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace ibvi {

// A failed call: the status code and the library's message.
class error : public std::runtime_error {
public:
    error(int status, const char *call)
        : std::runtime_error(std::string(call) + ": " + ibvi_status_string(status) +
                             " (" + ibvi_last_error() + ")"),
          status_(status) {}
    int status() const noexcept { return status_; }

private:
    int status_;
};

inline int check(int status, const char *call)
{
    if (status < 0)
        throw error(status, call);
    return status;
}
#define IBVI_CHECK(call) ::ibvi::check((call), #call)

// Owning handles: unique_ptr with the library's free functions (which accept
// NULL). Declaration order matters for destruction: an optimizer or
// predictor must be destroyed before the network it was created on, so
// declare the network first (locals are destroyed in reverse order).
struct net_deleter {
    void operator()(ibvi_net *p) const noexcept { ibvi_net_free(p); }
};
struct optimizer_deleter {
    void operator()(ibvi_optimizer *p) const noexcept { ibvi_optimizer_free(p); }
};
struct predictor_deleter {
    void operator()(ibvi_predictor *p) const noexcept { ibvi_predictor_free(p); }
};
struct metrics_deleter {
    void operator()(ibvi_metrics *p) const noexcept { ibvi_metrics_free(p); }
};
using net_ptr = std::unique_ptr<ibvi_net, net_deleter>;
using optimizer_ptr = std::unique_ptr<ibvi_optimizer, optimizer_deleter>;
using predictor_ptr = std::unique_ptr<ibvi_predictor, predictor_deleter>;
using metrics_ptr = std::unique_ptr<ibvi_metrics, metrics_deleter>;

// An MLP: inputs -> hidden (rank R, ReLU) -> classes (rank R).
[[nodiscard]] inline net_ptr make_mlp(int32_t inputs, int32_t hidden, int32_t classes,
                                      int32_t rank, uint64_t seed)
{
    ibvi_net *raw = nullptr;
    IBVI_CHECK(ibvi_net_create(&raw, inputs, nullptr));
    net_ptr net(raw);
    IBVI_CHECK(ibvi_net_add_dense(net.get(), hidden, rank));
    IBVI_CHECK(ibvi_net_add_activation(net.get(), IBVI_ACT_RELU));
    IBVI_CHECK(ibvi_net_add_dense(net.get(), classes, rank));
    IBVI_CHECK(ibvi_net_init(net.get(), IBVI_PARAM_MUP, seed));
    return net;
}

// A small image classifier on (1, side, side): conv 4@3x3 pad 1 (rank R,
// through the options struct) - ReLU - 2x2 max pool - flatten - dense
// classes (rank R).
[[nodiscard]] inline net_ptr make_convnet(int32_t side, int32_t classes, int32_t rank,
                                          uint64_t seed)
{
    ibvi_net *raw = nullptr;
    IBVI_CHECK(ibvi_net_create_image(&raw, 1, side, side, nullptr));
    net_ptr net(raw);
    ibvi_conv2d_options conv = IBVI_CONV2D_OPTIONS_INIT;
    conv.out_channels = 4;
    conv.kernel_h = conv.kernel_w = 3;
    conv.pad_h = conv.pad_w = 1;
    conv.rank = rank;
    IBVI_CHECK(ibvi_net_add_conv2d_ex(net.get(), &conv));
    IBVI_CHECK(ibvi_net_add_activation(net.get(), IBVI_ACT_RELU));
    IBVI_CHECK(ibvi_net_add_maxpool(net.get(), 2, 2));
    IBVI_CHECK(ibvi_net_add_flatten(net.get()));
    IBVI_CHECK(ibvi_net_add_dense(net.get(), classes, rank));
    IBVI_CHECK(ibvi_net_init(net.get(), IBVI_PARAM_MUP, seed));
    return net;
}

[[nodiscard]] inline optimizer_ptr make_sgd(ibvi_net *net, float lr, float momentum)
{
    ibvi_optimizer *raw = nullptr;
    IBVI_CHECK(ibvi_optimizer_create(&raw, net, IBVI_OPT_SGD, lr));
    optimizer_ptr opt(raw);
    IBVI_CHECK(ibvi_optimizer_set_momentum(opt.get(), momentum, 0));
    return opt;
}

[[nodiscard]] inline predictor_ptr make_predictor(ibvi_net *net, int32_t samples,
                                                  uint64_t seed)
{
    ibvi_predictor *raw = nullptr;
    IBVI_CHECK(ibvi_predictor_create(&raw, net, samples, seed));
    return predictor_ptr(raw);
}

// What ibvi_predictor_run returns, as vectors.
struct prediction {
    std::vector<float> probs, predictive_entropy, expected_entropy, mutual_information;
};

[[nodiscard]] inline prediction predict(ibvi_predictor *pred, const std::vector<float> &x,
                                        int64_t n, int32_t classes)
{
    prediction p{std::vector<float>(static_cast<size_t>(n * classes)),
                 std::vector<float>(static_cast<size_t>(n)),
                 std::vector<float>(static_cast<size_t>(n)),
                 std::vector<float>(static_cast<size_t>(n))};
    IBVI_CHECK(ibvi_predictor_run(pred, x.data(), n, p.probs.data(),
                                  p.predictive_entropy.data(), p.expected_entropy.data(),
                                  p.mutual_information.data()));
    return p;
}

} // namespace ibvi

namespace {

// Two Gaussian clusters, class 0 around (-1.5, 0) and class 1 around (1.5, 0),
// from a small deterministic generator (splitmix64 + Box-Muller).
struct rng {
    uint64_t state;
    double uniform()
    {
        uint64_t z = (state += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return static_cast<double>((z ^ (z >> 31)) >> 11) * 0x1.0p-53;
    }
    double normal()
    {
        const double u1 = 1.0 - uniform(), u2 = uniform();
        return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
    }
};

double mean(const std::vector<float> &v)
{
    double s = 0;
    for (float f : v)
        s += f;
    return v.empty() ? 0.0 : s / static_cast<double>(v.size());
}

} // namespace

int main()
try {
    constexpr int32_t inputs = 2, classes = 2;
    constexpr int64_t n = 256;
    std::printf("libibvi %s from C++17\n", ibvi_version_string());
    if (ibvi_version_number() != IBVI_VERSION_NUMBER)
        std::printf("note: compiled against %s\n", IBVI_VERSION_STRING);

    rng r{42};
    std::vector<float> x(static_cast<size_t>(n * inputs));
    std::vector<int32_t> y(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; i++) {
        y[static_cast<size_t>(i)] = static_cast<int32_t>(i % 2);
        const double cx = i % 2 ? 1.5 : -1.5;
        x[static_cast<size_t>(2 * i)] = static_cast<float>(cx + 0.5 * r.normal());
        x[static_cast<size_t>(2 * i + 1)] = static_cast<float>(0.5 * r.normal());
    }

    auto net = ibvi::make_mlp(inputs, 64, classes, 4, 7);  // destroyed last
    auto opt = ibvi::make_sgd(net.get(), 0.05f, 0.9f);
    float loss = 0;
    for (int step = 0; step < 300; step++) {
        const int64_t first = (step * 32) % n;
        IBVI_CHECK(ibvi_train_step(net.get(), opt.get(), x.data() + first * inputs, 32, 1,
                                   IBVI_LOSS_SOFTMAX_XENT, y.data() + first, nullptr,
                                   &loss));
    }
    std::printf("training loss after %lld steps: %.4f\n",
                static_cast<long long>(ibvi_optimizer_step_count(opt.get())), loss);

    auto pred = ibvi::make_predictor(net.get(), 32, 1);
    const auto train = ibvi::predict(pred.get(), x, n, classes);
    ibvi_metrics *raw_metrics = nullptr;
    IBVI_CHECK(ibvi_metrics_create(&raw_metrics, classes, nullptr));
    ibvi::metrics_ptr metrics(raw_metrics);
    IBVI_CHECK(ibvi_metrics_add(metrics.get(), train.probs.data(), n, y.data()));
    double accuracy = 0, nll = 0;
    IBVI_CHECK(ibvi_metrics_accuracy(metrics.get(), &accuracy));
    IBVI_CHECK(ibvi_metrics_nll(metrics.get(), &nll));

    // Far from the data: points on a circle of radius 12.
    std::vector<float> far(static_cast<size_t>(n * inputs));
    for (int64_t i = 0; i < n; i++) {
        const double a = 6.283185307179586 * static_cast<double>(i) / static_cast<double>(n);
        far[static_cast<size_t>(2 * i)] = static_cast<float>(12 * std::cos(a));
        far[static_cast<size_t>(2 * i + 1)] = static_cast<float>(12 * std::sin(a));
    }
    const auto away = ibvi::predict(pred.get(), far, n, classes);

    std::printf("training points: accuracy %.3f, NLL %.4f nats, mean mutual "
                "information %.5f nats\n", accuracy, nll, mean(train.mutual_information));
    std::printf("far away points: mean mutual information %.5f nats\n",
                mean(away.mutual_information));

    // Errors are exceptions with the library's message.
    try {
        IBVI_CHECK(ibvi_net_add_dense(net.get(), 3, 0));  // after init: refused
    } catch (const ibvi::error &e) {
        std::printf("expected error: %s\n", e.what());
    }

    // Images: class 0 a horizontal bar, class 1 a vertical bar, at a random
    // row or column, plus noise; NCHW, one channel.
    constexpr int32_t side = 8;
    constexpr int64_t pixels = side * side;
    std::vector<float> images(static_cast<size_t>(n * pixels));
    for (int64_t i = 0; i < n; i++) {
        const int64_t at = static_cast<int64_t>(r.uniform() * side);
        for (int64_t p = 0; p < pixels; p++) {
            const int64_t row = p / side, col = p % side;
            const bool bar = i % 2 ? col == at : row == at;
            images[static_cast<size_t>(i * pixels + p)] =
                static_cast<float>((bar ? 1.0 : 0.0) + 0.3 * r.normal());
        }
    }
    auto convnet = ibvi::make_convnet(side, classes, 2, 11);
    auto conv_opt = ibvi::make_sgd(convnet.get(), 0.05f, 0.9f);
    for (int step = 0; step < 200; step++) {
        const int64_t first = (step * 32) % n;
        IBVI_CHECK(ibvi_train_step(convnet.get(), conv_opt.get(),
                                   images.data() + first * pixels, 32, 1,
                                   IBVI_LOSS_SOFTMAX_XENT, y.data() + first, nullptr,
                                   &loss));
    }
    auto conv_pred = ibvi::make_predictor(convnet.get(), 16, 2);
    const auto bars = ibvi::predict(conv_pred.get(), images, n, classes);
    IBVI_CHECK(ibvi_metrics_reset(metrics.get()));
    IBVI_CHECK(ibvi_metrics_add(metrics.get(), bars.probs.data(), n, y.data()));
    double conv_accuracy = 0;
    IBVI_CHECK(ibvi_metrics_accuracy(metrics.get(), &conv_accuracy));
    std::printf("conv network (%d layers, %lld parameters) on bar images: "
                "training loss %.4f, accuracy %.3f\n",
                ibvi_net_layer_count(convnet.get()),
                static_cast<long long>(ibvi_net_param_count(convnet.get())), loss,
                conv_accuracy);
    return accuracy > 0.9 && conv_accuracy > 0.9 ? 0 : 1;
} catch (const std::exception &e) {
    std::fprintf(stderr, "cpp_example: %s\n", e.what());
    return 1;
}
