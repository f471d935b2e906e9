// safetensors: the golden vector, round trips of every dtype, a hand-built header, one test per rejection,
// and atomic writes.
#include "test_util.h"

#include <fstream>

#include "engine/safetensors.h"

using namespace ssmtune;
using namespace ssmtune::testing;

namespace {

// File bytes from a header string and a data buffer.
std::vector<uint8_t> make_file(const std::string& header, const std::vector<uint8_t>& data) {
    std::vector<uint8_t> out(8);
    const uint64_t n = header.size();
    std::memcpy(out.data(), &n, 8);
    out.insert(out.end(), header.begin(), header.end());
    out.insert(out.end(), data.begin(), data.end());
    return out;
}

// Parses bytes and returns the error message ("" if it parsed).
std::string parse_error(const std::vector<uint8_t>& bytes) {
    try {
        parse_safetensors(bytes.data(), bytes.size(), "test.safetensors");
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}

void check_rejected(const std::vector<uint8_t>& bytes, const std::string& expected_words) {
    const std::string msg = parse_error(bytes);
    INFO("message: " << msg);
    CHECK(msg.find("test.safetensors") != std::string::npos);
    CHECK(msg.find(expected_words) != std::string::npos);
}

const std::vector<uint8_t> k8(8, 0);

}  // namespace

TEST_CASE("safetensors golden vector is byte exact") {
    std::vector<uint8_t> bytes = safetensors_bytes({{"a", Tensor::from_vector<float>({1, 2}, {2})}});
    REQUIRE(bytes.size() == 104);
    CHECK(std::vector<uint8_t>(bytes.begin(), bytes.begin() + 8) == std::vector<uint8_t>{0x58, 0, 0, 0, 0, 0, 0, 0});
    CHECK(std::vector<uint8_t>(bytes.end() - 8, bytes.end()) ==
          std::vector<uint8_t>{0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0x40});
    const std::string header(bytes.begin() + 8, bytes.begin() + 96);
    CHECK(header.rfind("{\"__metadata__\":{\"format\":\"pt\"},\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 0) == 0);
}

TEST_CASE("safetensors round trips every dtype bit exactly") {
    TensorMap in;
    for (DType t : {DType::F32, DType::F64, DType::I64, DType::I32, DType::F16, DType::BF16, DType::I16, DType::I8,
                    DType::U8, DType::BOOL})
        in[std::string("t_") + dtype_name(t)] = Tensor::randn({2, 3}, 5, DType::F64).to(t);
    in["scalar"] = Tensor::scalar(3.5);
    in["empty"] = Tensor::zeros({0, 4});
    in["view"] = Tensor::randn({4, 3}, 6).transpose(0, 1);
    const auto dir = scratch_dir("safetensors_roundtrip");
    const std::string path = (dir / "all.safetensors").string();
    save_safetensors(path, in, {{"step", "12"}});
    Metadata meta;
    TensorMap out = load_safetensors(path, &meta);
    CHECK(meta.at("format") == "pt");
    CHECK(meta.at("step") == "12");
    REQUIRE(out.size() == in.size());
    for (auto& [name, t] : in) {
        INFO(name);
        CHECK(out.at(name).dtype() == t.dtype());
        CHECK(out.at(name).shape() == t.shape());
        CHECK(out.at(name).to_vector<double>() == t.to_vector<double>());
    }
    CHECK(read_safetensors_header(path).at("t_F64").end - read_safetensors_header(path).at("t_F64").begin == 48);
}

TEST_CASE("safetensors reads a header whose length is not a multiple of 8") {
    const std::string h = R"({"x":{"dtype":"I8","shape":[3],"data_offsets":[0,3]}})";
    REQUIRE(h.size() % 8 != 0);
    TensorMap m = parse_safetensors(make_file(h, {1, 2, 255}).data(), 8 + h.size() + 3, "hand");
    CHECK(m.at("x").to_vector<int64_t>() == std::vector<int64_t>{1, 2, -1});
}

TEST_CASE("safetensors rejects a file shorter than 8 bytes") { check_rejected({1, 2, 3}, "too short"); }

TEST_CASE("safetensors rejects a header over 100 MB") {
    std::vector<uint8_t> b(16, 0);
    const uint64_t n = 200000000;
    std::memcpy(b.data(), &n, 8);
    check_rejected(b, "100 MB");
}

TEST_CASE("safetensors rejects a header running past the file") {
    std::vector<uint8_t> b = make_file("{}", {});
    const uint64_t n = 50;
    std::memcpy(b.data(), &n, 8);
    check_rejected(b, "past the end");
}

TEST_CASE("safetensors rejects headers that are not a JSON object") {
    check_rejected(make_file("[1,2]   ", {}), "start with '{'");
    check_rejected(make_file("{\"a\": ", {}), "not valid JSON");
}

TEST_CASE("safetensors rejects entries with missing or mistyped fields") {
    check_rejected(make_file(R"({"a":{"dtype":"F32","shape":[1]}})", {}), "needs dtype, shape and data_offsets");
    check_rejected(make_file(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}})", {}), "invalid dimension");
    check_rejected(make_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", k8), "two unsigned");
    check_rejected(make_file(R"({"a":{"dtype":"Q7","shape":[1],"data_offsets":[0,4]}})", {0, 0, 0, 0}), "unknown dtype");
    check_rejected(make_file(R"({"a":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]}})", {0}), "does not support");
}

TEST_CASE("safetensors rejects duplicate tensor names") {
    check_rejected(make_file(R"({"a":{"dtype":"I8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"I8","shape":[1],"data_offsets":[1,2]}})",
                             {1, 2}),
                   "twice");
}

TEST_CASE("safetensors rejects bad metadata") {
    check_rejected(make_file(R"({"__metadata__":{"n":3}})", {}), "not a string");
}

TEST_CASE("safetensors rejects offsets that disagree with the shape") {
    check_rejected(make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", {0, 0, 0, 0}), "needs 8 bytes");
    check_rejected(make_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", {0, 0, 0, 0}), "end before begin");
}

TEST_CASE("safetensors rejects overlapping tensors") {
    check_rejected(make_file(R"({"a":{"dtype":"I8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"I8","shape":[2],"data_offsets":[1,3]}})",
                             {1, 2, 3}),
                   "overlaps");
}

TEST_CASE("safetensors rejects holes in the data buffer") {
    check_rejected(make_file(R"({"a":{"dtype":"I8","shape":[1],"data_offsets":[1,2]}})", {0, 1}), "hole");
    check_rejected(make_file(R"({"a":{"dtype":"I8","shape":[1],"data_offsets":[0,1]},"b":{"dtype":"I8","shape":[1],"data_offsets":[2,3]}})",
                             {0, 1, 2}),
                   "hole");
}

TEST_CASE("safetensors rejects data past the end and trailing bytes") {
    check_rejected(make_file(R"({"a":{"dtype":"I8","shape":[4],"data_offsets":[0,4]}})", {0, 1}), "past the end");
    check_rejected(make_file(R"({"a":{"dtype":"I8","shape":[1],"data_offsets":[0,1]}})", {0, 1, 2}), "trailing bytes");
}

TEST_CASE("safetensors writer rejects reserved names") {
    CHECK_THROWS_AS(safetensors_bytes({{"__metadata__", Tensor::zeros({1})}}), Error);
    CHECK_THROWS_AS(safetensors_bytes({{"", Tensor::zeros({1})}}), Error);
}

TEST_CASE("atomic writes leave no temporary and keep the old file on failure") {
    const auto dir = scratch_dir("atomic");
    CHECK_THROWS_AS(save_safetensors((dir / "missing_dir" / "x.safetensors").string(), {{"a", Tensor::zeros({1})}}), Error);
    const std::string path = (dir / "good.safetensors").string();
    save_safetensors(path, {{"a", Tensor::ones({3})}});
    CHECK_THROWS_AS(write_file_atomically(path, [](const std::string& tmp) {
                        std::ofstream(tmp) << "half a file";
                        throw Error("simulated crash mid-write");
                    }),
                    Error);
    CHECK(load_safetensors(path).at("a").to_vector<float>() == std::vector<float>{1, 1, 1});
    int files = 0;
    for (auto& e : std::filesystem::directory_iterator(dir)) files += e.is_regular_file();
    CHECK(files == 1);
    CHECK_THROWS_AS(load_safetensors((dir / "nope.safetensors").string()), Error);
}
