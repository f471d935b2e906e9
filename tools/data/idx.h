// IDX files (the MNIST / Fashion-MNIST format: big-endian magic 0x00000803 for u8 images [n, rows, cols],
// 0x00000801 for u8 labels [n]), plain or gzipped (zlib reads both), and the sequence views a sequence model is
// trained on: by pixel (L = rows·cols, 1 feature), by row (L = rows, cols features) and by a fixed seeded pixel
// permutation (L = rows·cols, 1 feature). Pixels are scaled to [0, 1]. An optional class filter keeps some classes
// and renumbers them 0.. in the order given (e.g. classes 5–9 → 0–4, for transfer experiments).
// Fashion-MNIST is looked up in a directory (default /usr/share/datasets/fashion-mnist/, where Debian's
// dataset-fashion-mnist package puts it) under the usual file names, with or without .gz.
// Not here: downloading (never done at run time), augmentation.
#pragma once

#include <string>
#include <vector>

#include "engine/tensor.h"

namespace ssmtune::data {

struct IdxImages {
    int64_t count = 0, rows = 0, cols = 0;
    std::vector<uint8_t> pixels;  // [count, rows, cols]
};

// Plain or gzipped IDX files; wrong magic, a truncated file (fewer bytes than the header promises) or trailing
// bytes are errors naming the file.
IdxImages read_idx_images(const std::string& path);
std::vector<uint8_t> read_idx_labels(const std::string& path);

struct ImageSequences {
    Tensor inputs;  // F32 [n, L, d]
    Tensor labels;  // I64 [n]
    int64_t num_classes = 10;
};

struct ImageViewOptions {
    std::string order = "row";        // pixel | row | permuted
    uint64_t permutation_seed = 0;    // for "permuted"
    std::vector<int64_t> classes;     // keep these classes, renumbered 0.. in this order (e.g. {5, ..., 9} → 0..4);
                                      // empty = all
    int64_t limit = 0;                // keep at most this many examples (0 = all), the first ones after filtering
};

// images + labels (same count; labels 0..9) as sequences: inputs F32 [n, L, d] with pixels / 255, labels I64 [n].
// pixel: L = rows·cols, d = 1 (row-major order); row: L = rows, d = cols; permuted: L = rows·cols, d = 1, pixel
// i of the sequence is pixel perm[i] of the image, perm a Fisher–Yates shuffle by Philox with permutation_seed.
ImageSequences image_sequences(const IdxImages& images, const std::vector<uint8_t>& labels, const ImageViewOptions& o);

// The Fashion-MNIST split "train" (train-*) or "test" (t10k-*) from `dir` ("" = the Debian location): files
// <stem>-images-idx3-ubyte and <stem>-labels-idx1-ubyte, each plain or with .gz.
ImageSequences load_fashion_mnist(const std::string& dir, const std::string& split, const ImageViewOptions& o = {});
inline constexpr const char* kDefaultFashionMnistDir = "/usr/share/datasets/fashion-mnist";

}  // namespace ssmtune::data
