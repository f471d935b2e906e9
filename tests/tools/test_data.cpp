// Data: the synthetic tasks follow their definitions and are seeded; text streams split and window correctly;
// IDX files (plain and gzipped) load, and every damaged-file case is one clear error.
#include "test_util.h"

#include <zlib.h>

#include <fstream>

#include "engine/safetensors.h"
#include "tools/data/idx.h"
#include "tools/data/synthetic.h"
#include "tools/data/text.h"

using namespace ssmtune;
using namespace ssmtune::data;
using namespace ssmtune::testing;

TEST_CASE("data: selective copying targets are the data tokens in order (or reversed, shifted)") {
    SyntheticTask t;
    t.num_tokens = 5;
    t.num_memorize = 3;
    t.span = 10;
    Generator g(1);
    TokenBatch b = t.sample(g, 4);
    CHECK(b.input_ids.shape() == Shape{4, 13});
    auto x = b.input_ids.to_vector<int64_t>(), y = b.targets.to_vector<int64_t>();
    for (int64_t r = 0; r < 4; ++r) {
        std::vector<int64_t> data, out;
        for (int64_t i = 0; i < 10; ++i)
            if (x[size_t(r * 13 + i)] != 0) data.push_back(x[size_t(r * 13 + i)]);
        for (int64_t i = 10; i < 13; ++i) {
            CHECK(x[size_t(r * 13 + i)] == 6);  // marker C + 1
            out.push_back(y[size_t(r * 13 + i)]);
        }
        CHECK(data == out);
        for (int64_t i = 0; i < 10; ++i) CHECK(y[size_t(r * 13 + i)] == -100);
    }
    // same seed, same bits; reverse and shift variants
    Generator g2(1);
    CHECK(t.sample(g2, 4).input_ids.to_vector<int64_t>() == x);
    t.reverse = true;
    t.token_shift = 1;
    Generator g3(1);
    TokenBatch rb = t.sample(g3, 4);
    auto ry = rb.targets.to_vector<int64_t>();
    for (int64_t i = 0; i < 3; ++i) CHECK(ry[size_t(10 + i)] == (y[size_t(12 - i)] % 5) + 1);
}

TEST_CASE("data: induction heads and associative recall") {
    SyntheticTask ih = SyntheticTask::from_json({{"name", "induction_heads"}, {"num_tokens", 6}, {"span", 16}});
    Generator g(2);
    TokenBatch b = ih.sample(g, 8);
    auto x = b.input_ids.to_vector<int64_t>(), y = b.targets.to_vector<int64_t>();
    for (int64_t r = 0; r < 8; ++r) {
        int64_t first = -1;
        for (int64_t t = 0; t < 15; ++t)
            if (x[size_t(r * 16 + t)] == 6) { first = t; break; }
        REQUIRE(first >= 0);
        CHECK(x[size_t(r * 16 + 15)] == 6);
        CHECK(y[size_t(r * 16 + 15)] == x[size_t(r * 16 + first + 1)]);
    }
    SyntheticTask ar = SyntheticTask::from_json({{"name", "associative_recall"}, {"num_tokens", 20}, {"num_memorize", 4}});
    CHECK(ar.seq_len() == 9);
    TokenBatch a = ar.sample(g, 5);
    auto ax = a.input_ids.to_vector<int64_t>(), ay = a.targets.to_vector<int64_t>();
    for (int64_t r = 0; r < 5; ++r) {
        const int64_t q = ax[size_t(r * 9 + 8)];
        int64_t value = -1;
        for (int64_t k = 0; k < 4; ++k)
            if (ax[size_t(r * 9 + 2 * k)] == q) value = ax[size_t(r * 9 + 2 * k + 1)];
        CHECK(ay[size_t(r * 9 + 8)] == value);
        CHECK(value >= 10);
    }
    CHECK_THROWS_WITH_AS(SyntheticTask::from_json({{"name", "copying"}}), doctest::Contains("unknown task"), Error);
    CHECK_THROWS_WITH_AS(SyntheticTask::from_json({{"spam", 1}}), doctest::Contains("unknown task field \"spam\""), Error);
    CHECK_THROWS_WITH_AS(SyntheticTask::from_json({{"span", "x"}}), doctest::Contains("wrong type"), Error);
}

TEST_CASE("data: text streams split, sample and window") {
    const auto dir = scratch_dir("data_text");
    std::ofstream(dir / "t.txt") << std::string(200, 'a') + std::string(50, 'b');
    TextData d = TextData::from_bytes_file((dir / "t.txt").string(), 0.2);
    CHECK(d.train.size() == 200);
    CHECK(d.val.size() == 50);
    Generator g(3);
    TokenBatch b = d.sample(g, 2, 8);
    CHECK(b.input_ids.shape() == Shape{2, 8});
    auto vb = d.eval_batches(4, 8, 100);
    REQUIRE(vb.size() == 2);  // 49/8 = 6 windows in batches of 4
    CHECK(vb[1].input_ids.size(0) == 2);
    CHECK(vb[0].targets.to_vector<int64_t>()[0] == 'b');
    std::ofstream(dir / "empty.txt") << "";
    CHECK_THROWS_WITH_AS(TextData::from_bytes_file((dir / "empty.txt").string(), 0.1), doctest::Contains("is empty"), Error);
    CHECK_THROWS_WITH_AS(TextData::from_bytes_file((dir / "none.txt").string(), 0.1), doctest::Contains("no such file"), Error);
    CHECK_THROWS_WITH_AS(d.eval_batches(1, 64, 1), doctest::Contains("fewer than one window"), Error);
    save_safetensors((dir / "ids.safetensors").string(), {{"input_ids", Tensor::from_vector<int32_t>({1, 2, 3, 4, 5, 6}, {2, 3})}});
    TextData s = TextData::from_safetensors((dir / "ids.safetensors").string(), 0.0, 10);
    CHECK(s.train == std::vector<int64_t>{1, 2, 3, 4, 5, 6});
    CHECK_THROWS_WITH_AS(TextData::from_safetensors((dir / "ids.safetensors").string(), 0.0, 5),
                         doctest::Contains("outside the model's vocabulary of 5"), Error);
}

namespace {
std::vector<uint8_t> idx_bytes(uint32_t magic, std::vector<uint32_t> dims, size_t payload, uint8_t fill) {
    std::vector<uint8_t> b;
    auto put = [&](uint32_t v) { for (int s = 24; s >= 0; s -= 8) b.push_back(uint8_t(v >> s)); };
    put(magic);
    for (uint32_t d : dims) put(d);
    for (size_t i = 0; i < payload; ++i) b.push_back(uint8_t(fill + i % 7));
    return b;
}
void write(const std::filesystem::path& p, const std::vector<uint8_t>& b, bool gz) {
    if (gz) {
        gzFile f = gzopen(p.string().c_str(), "wb");
        gzwrite(f, b.data(), unsigned(b.size()));
        gzclose(f);
    } else {
        std::ofstream(p, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
    }
}
}  // namespace

TEST_CASE("data: IDX files plain and gzipped, views, and damaged files") {
    const auto dir = scratch_dir("data_idx");
    for (bool gz : {false, true}) {
        const std::string sfx = gz ? ".gz" : "";
        write(dir / ("train-images-idx3-ubyte" + sfx), idx_bytes(0x803, {6, 2, 3}, 36, 10), gz);
        std::vector<uint8_t> lb = idx_bytes(0x801, {6}, 0, 0);
        for (uint8_t l : {0, 5, 7, 5, 9, 1}) lb.push_back(l);
        write(dir / ("train-labels-idx1-ubyte" + sfx), lb, gz);
        ImageViewOptions o;
        o.order = "row";
        ImageSequences s = load_fashion_mnist(dir.string(), "train", o);
        CHECK(s.inputs.shape() == Shape{6, 2, 3});
        CHECK(s.inputs.to_vector<float>()[0] == doctest::Approx(10.0 / 255));
        o.order = "pixel";
        o.classes = {5, 9};
        ImageSequences f = load_fashion_mnist(dir.string(), "train", o);
        CHECK(f.inputs.shape() == Shape{3, 6, 1});
        CHECK(f.labels.to_vector<int64_t>() == std::vector<int64_t>{0, 0, 1});
        o.order = "permuted";
        o.classes = {};
        ImageSequences p1 = load_fashion_mnist(dir.string(), "train", o), p2 = load_fashion_mnist(dir.string(), "train", o);
        CHECK(p1.inputs.to_vector<float>() == p2.inputs.to_vector<float>());
        std::filesystem::remove(dir / ("train-images-idx3-ubyte" + sfx));
        std::filesystem::remove(dir / ("train-labels-idx1-ubyte" + sfx));
    }
    CHECK_THROWS_WITH_AS(load_fashion_mnist(dir.string(), "test", {}), doctest::Contains("pass --data DIR"), Error);
    write(dir / "bad_magic", idx_bytes(0x802, {1, 2, 2}, 4, 0), false);
    CHECK_THROWS_WITH_AS(read_idx_images((dir / "bad_magic").string()), doctest::Contains("wrong magic number"), Error);
    write(dir / "short", idx_bytes(0x803, {10, 28, 28}, 100, 0), false);
    CHECK_THROWS_WITH_AS(read_idx_images((dir / "short").string()), doctest::Contains("truncated"), Error);
    write(dir / "tiny", {0, 0, 8}, false);
    CHECK_THROWS_WITH_AS(read_idx_labels((dir / "tiny").string()), doctest::Contains("truncated IDX header"), Error);
    IdxImages im = read_idx_images([&] { write(dir / "ok", idx_bytes(0x803, {2, 1, 1}, 2, 0), false); return (dir / "ok").string(); }());
    CHECK_THROWS_WITH_AS(image_sequences(im, {1}, {}), doctest::Contains("count mismatch"), Error);
    CHECK_THROWS_WITH_AS(image_sequences(im, {1, 12}, {}), doctest::Contains("out of range"), Error);
}
