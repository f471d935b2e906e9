// IDX reading and image-sequence views (see idx.h).
#include "tools/data/idx.h"

#include <zlib.h>

#include <algorithm>
#include <filesystem>
#include <memory>

#include "engine/error.h"
#include "engine/rng.h"

namespace ssmtune::data {

namespace fs = std::filesystem;

namespace {

// The whole (decompressed) content of a plain or gzipped file (zlib reads both). A gzip stream that is corrupt
// or cut short (zlib's Z_BUF_ERROR at the end) is an error, not a silently shorter file.
std::vector<uint8_t> read_maybe_gzipped(const std::string& path) {
    SSMTUNE_CHECK(fs::exists(path), "no such file: ", path, "; fix: pass --data DIR with the IDX files");
    std::unique_ptr<gzFile_s, int (*)(gzFile)> f(gzopen(path.c_str(), "rb"), gzclose);
    SSMTUNE_CHECK(f != nullptr, "cannot open ", path, "; fix: check its permissions");
    std::vector<uint8_t> out;
    std::vector<uint8_t> buf(size_t(1) << 16);
    for (;;) {
        const int n = gzread(f.get(), buf.data(), unsigned(buf.size()));
        int err = Z_OK;
        const char* msg = gzerror(f.get(), &err);
        SSMTUNE_CHECK(n >= 0 && err == Z_OK, path, ": corrupt or truncated gzip data (", msg ? msg : "?",
                      "); fix: fetch the file again");
        if (n == 0) break;
        out.insert(out.end(), buf.begin(), buf.begin() + n);
        SSMTUNE_CHECK(uint64_t(out.size()) <= (uint64_t(1) << 32), path, ": larger than 4 GiB decompressed; not an IDX "
                      "file");
    }
    return out;
}

uint32_t big_endian(const std::vector<uint8_t>& b, size_t at) {
    return (uint32_t(b[at]) << 24) | (uint32_t(b[at + 1]) << 16) | (uint32_t(b[at + 2]) << 8) | uint32_t(b[at + 3]);
}

}  // namespace

IdxImages read_idx_images(const std::string& path) {
    const std::vector<uint8_t> b = read_maybe_gzipped(path);
    SSMTUNE_CHECK(b.size() >= 16, path, ": truncated IDX header (", b.size(), " bytes, need 16)");
    const uint32_t magic = big_endian(b, 0);
    SSMTUNE_CHECK(magic == 0x00000803, path, ": wrong magic number 0x", std::hex, magic, std::dec,
                  " for an IDX image file (expected 0x00000803: unsigned bytes, 3 dimensions)");
    IdxImages im;
    im.count = big_endian(b, 4);
    im.rows = big_endian(b, 8);
    im.cols = big_endian(b, 12);
    SSMTUNE_CHECK(im.rows > 0 && im.cols > 0 && im.rows <= 4096 && im.cols <= 4096, path, ": implausible image size ",
                  im.rows, "x", im.cols);
    const uint64_t need = uint64_t(im.count) * uint64_t(im.rows) * uint64_t(im.cols);
    SSMTUNE_CHECK(b.size() - 16 >= need, path, ": truncated: the header promises ", im.count, " images of ", im.rows,
                  "x", im.cols, " (", need, " bytes) but the file holds ", b.size() - 16,
                  "; fix: fetch the file again (it was cut short)");
    SSMTUNE_CHECK(b.size() - 16 == need, path, ": ", b.size() - 16 - need, " bytes after the last image; fix: check that this is an IDX image "
                  "file");
    im.pixels.assign(b.begin() + 16, b.end());
    return im;
}

std::vector<uint8_t> read_idx_labels(const std::string& path) {
    const std::vector<uint8_t> b = read_maybe_gzipped(path);
    SSMTUNE_CHECK(b.size() >= 8, path, ": truncated IDX header (", b.size(), " bytes, need 8)");
    const uint32_t magic = big_endian(b, 0);
    SSMTUNE_CHECK(magic == 0x00000801, path, ": wrong magic number 0x", std::hex, magic, std::dec,
                  " for an IDX label file (expected 0x00000801: unsigned bytes, 1 dimension)");
    const uint64_t n = big_endian(b, 4);
    SSMTUNE_CHECK(b.size() - 8 >= n, path, ": truncated: the header promises ", n, " labels but the file holds ",
                  b.size() - 8, "; fix: fetch the file again (it was cut short)");
    SSMTUNE_CHECK(b.size() - 8 == n, path, ": ", b.size() - 8 - n, " bytes after the last label; fix: check that this is an IDX label "
                  "file");
    return std::vector<uint8_t>(b.begin() + 8, b.end());
}

ImageSequences image_sequences(const IdxImages& im, const std::vector<uint8_t>& labels, const ImageViewOptions& o) {
    SSMTUNE_CHECK(int64_t(labels.size()) == im.count, "image/label count mismatch: ", im.count, " images but ",
                  labels.size(), " labels; fix: images and labels of the same split");
    for (size_t i = 0; i < labels.size(); ++i)
        SSMTUNE_CHECK(labels[i] <= 9, "label ", int(labels[i]), " of example ", i, " is out of range (classes 0..9)");
    SSMTUNE_CHECK(o.order == "pixel" || o.order == "row" || o.order == "permuted", "unknown sequence order \"", o.order,
                  "\"; known: pixel, row, permuted");
    SSMTUNE_CHECK(o.limit >= 0, "limit ", o.limit, " must be >= 0 (0 = all examples)");
    for (size_t i = 0; i < o.classes.size(); ++i) {
        SSMTUNE_CHECK(o.classes[i] >= 0 && o.classes[i] <= 9, "class filter: ", o.classes[i], " is not a class (0..9)");
        SSMTUNE_CHECK(std::count(o.classes.begin(), o.classes.end(), o.classes[i]) == 1, "class filter: class ",
                      o.classes[i], " is listed twice; fix: list each class once");
    }
    const int64_t P = im.rows * im.cols;
    std::vector<int64_t> perm(static_cast<size_t>(P));
    for (int64_t i = 0; i < P; ++i) perm[size_t(i)] = i;
    if (o.order == "permuted") {  // Fisher–Yates with Philox draws: the same permutation everywhere
        Generator g(o.permutation_seed);
        for (int64_t i = P - 1; i > 0; --i) {
            const int64_t j = std::min<int64_t>(i, int64_t(philox_uniform(g.seed(), g.advance(1)) * double(i + 1)));
            std::swap(perm[size_t(i)], perm[size_t(j)]);
        }
    }
    std::vector<int64_t> keep, new_label;
    for (int64_t i = 0; i < im.count; ++i) {
        int64_t y = labels[size_t(i)];
        if (!o.classes.empty()) {
            auto it = std::find(o.classes.begin(), o.classes.end(), y);
            if (it == o.classes.end()) continue;
            y = int64_t(it - o.classes.begin());
        }
        keep.push_back(i);
        new_label.push_back(y);
        if (o.limit > 0 && int64_t(keep.size()) >= o.limit) break;
    }
    SSMTUNE_CHECK(!keep.empty(), "no examples left after the class filter; fix: classes present in the data");
    const int64_t n = int64_t(keep.size());
    const int64_t L = o.order == "row" ? im.rows : P, d = o.order == "row" ? im.cols : 1;
    std::vector<float> x(size_t(n * P));
    for (int64_t k = 0; k < n; ++k) {
        const uint8_t* src = im.pixels.data() + keep[size_t(k)] * P;
        for (int64_t p = 0; p < P; ++p) x[size_t(k * P + p)] = float(src[perm[size_t(p)]]) / 255.0f;
    }
    ImageSequences out;
    out.inputs = Tensor::from_vector<float>(x, {n, L, d});
    out.labels = Tensor::from_vector<int64_t>(new_label, {n});
    out.num_classes = o.classes.empty() ? 10 : int64_t(o.classes.size());
    return out;
}

ImageSequences load_fashion_mnist(const std::string& dir_in, const std::string& split, const ImageViewOptions& o) {
    SSMTUNE_CHECK(split == "train" || split == "test", "Fashion-MNIST split must be train or test, got ", split);
    const std::string dir = dir_in.empty() ? kDefaultFashionMnistDir : dir_in;
    const std::string stem = split == "train" ? "train" : "t10k";
    auto find = [&](const std::string& base) {
        std::vector<std::string> tried;
        for (const std::string& name : {base, base + ".gz"}) {
            const std::string p = (fs::path(dir) / name).string();
            if (fs::exists(p)) return p;
            tried.push_back(p);
        }
        SSMTUNE_FAIL("Fashion-MNIST file not found (tried ", tried[0], " and ", tried[1],
                     "); fix: install Debian's dataset-fashion-mnist or pass --data DIR with the IDX files");
    };
    const IdxImages im = read_idx_images(find(stem + "-images-idx3-ubyte"));
    const std::vector<uint8_t> labels = read_idx_labels(find(stem + "-labels-idx1-ubyte"));
    return image_sequences(im, labels, o);
}

}  // namespace ssmtune::data
