// safetensors: the golden byte vector, round trips of every dtype (bit-exact, rank 0, zero-size), the reference
// writer's ordering, one case per reader rejection (malformed files built by hand), and the atomic write
// (failures leave no temporary and never touch an existing file, including a simulated full disk).
#include "test_util.h"

#include <csignal>
#include <cstring>
#include <fstream>
#include <stdexcept>

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include "engine/file_io.h"
#include "engine/safetensors.h"
#include "engine/tensor_file.h"

using namespace ssmtune;
using namespace ssmtune::testing;

namespace {

const std::string kSource = "hand_built.safetensors";

// A file from header text and data bytes; `n` overrides the 8-byte header length when given.
std::vector<uint8_t> make_file(const std::string& header, const std::vector<uint8_t>& data = {},
                               uint64_t n = UINT64_MAX) {
    if (n == UINT64_MAX) n = header.size();
    std::vector<uint8_t> bytes(8);
    for (int i = 0; i < 8; ++i) bytes[size_t(i)] = uint8_t(n >> (8 * i));
    bytes.insert(bytes.end(), header.begin(), header.end());
    bytes.insert(bytes.end(), data.begin(), data.end());
    return bytes;
}

// Message of the Error that parsing `bytes` throws ("" when it does not throw).
std::string parse_error(const std::vector<uint8_t>& bytes) {
    try {
        parse_safetensors(bytes.data(), bytes.size(), kSource);
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}

// CHECKs that parsing fails with a message naming the source and containing every one of `parts`.
void expect_rejected(const std::vector<uint8_t>& bytes, const std::vector<std::string>& parts) {
    const std::string msg = parse_error(bytes);
    INFO("message: " << msg);
    REQUIRE_FALSE(msg.empty());
    CHECK(msg.find(kSource) != std::string::npos);
    for (const auto& p : parts) {
        INFO("expected to mention: " << p);
        CHECK(msg.find(p) != std::string::npos);
    }
}

std::string entry(const std::string& name, const std::string& dtype, const std::string& shape, uint64_t b,
                  uint64_t e) {
    return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape + ",\"data_offsets\":[" +
           std::to_string(b) + "," + std::to_string(e) + "]}";
}

std::vector<uint8_t> read_file(const std::filesystem::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_file(const std::filesystem::path& p, const std::vector<uint8_t>& bytes) {
    std::ofstream out(p, std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
}

// doctest's matcher for a message containing `s` (doctest::Contains takes a doctest::String).
doctest::Contains has(const std::string& s) { return doctest::Contains(s.c_str()); }

// Names in `dir` other than `keep` (leftover temporaries).
std::vector<std::string> other_files(const std::filesystem::path& dir, const std::string& keep = "") {
    std::vector<std::string> out;
    for (const auto& e : std::filesystem::directory_iterator(dir))
        if (e.path().filename() != keep) out.push_back(e.path().filename().string());
    return out;
}

// One tensor of each dtype, with edge values (NaN, -0, inf, subnormals, extremes of the integer types).
TensorMap every_dtype() {
    TensorMap m;
    m["f32"] = Tensor::from_vector<float>({1.5f, -0.0f, NAN, INFINITY, 1e-45f, -3.4e38f}, {2, 3});
    m["f64"] = Tensor::from_vector<double>({3.141592653589793, -1e-310, -INFINITY, 1e308}, {4});
    m["i64"] = Tensor::from_vector<int64_t>({INT64_MIN, -1, 0, INT64_MAX}, {2, 2});
    m["i32"] = Tensor::from_vector<int32_t>({INT32_MIN, 7, INT32_MAX}, {3, 1});
    m["i16"] = Tensor::from_vector<int16_t>({-32768, 32767}, {2});
    m["i8"] = Tensor::from_vector<int8_t>({-128, 0, 127}, {1, 3});
    m["u8"] = Tensor::from_vector<uint8_t>({0, 200, 255}, {3});
    m["bool"] = Tensor::from_vector<bool>({true, false, true, true}, {2, 2});
    Tensor f16 = Tensor::empty({5}, DType::F16), bf16 = Tensor::empty({2, 2}, DType::BF16);
    const uint16_t f16_bits[5] = {0x3c00, 0x0001, 0x7c00, 0x7e01, 0x8000};  // 1, min subnormal, inf, NaN, -0
    const uint16_t bf16_bits[4] = {0x3f80, 0xff80, 0x7fc1, 0x0001};
    for (int i = 0; i < 5; ++i) f16.data<half_t>()[i].bits = f16_bits[i];
    for (int i = 0; i < 4; ++i) bf16.data<bf16_t>()[i].bits = bf16_bits[i];
    m["f16"] = f16;
    m["bf16"] = bf16;
    m["scalar"] = Tensor::scalar(42.0, DType::F64);          // rank 0
    m["empty"] = Tensor::zeros({3, 0, 2}, DType::F32);       // zero-size: 0 bytes
    m["empty_i8"] = Tensor::zeros({0}, DType::I8);
    return m;
}

}  // namespace

// ---- the writer ----

TEST_CASE("safetensors golden vector is byte exact") {
    const std::vector<uint8_t> bytes = safetensors_bytes({{"a", Tensor::from_vector<float>({1, 2}, {2})}});
    REQUIRE(bytes.size() == 104);
    CHECK(std::vector<uint8_t>(bytes.begin(), bytes.begin() + 8) == std::vector<uint8_t>{0x58, 0, 0, 0, 0, 0, 0, 0});
    CHECK(std::vector<uint8_t>(bytes.end() - 8, bytes.end()) ==
          std::vector<uint8_t>{0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0x40});
    const std::string header(bytes.begin() + 8, bytes.begin() + 8 + 88);
    CHECK(header == "{\"__metadata__\":{\"format\":\"pt\"},\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}   ");
    // The same bytes reach the disk.
    const auto dir = scratch_dir("st_golden");
    save_safetensors((dir / "a.safetensors").string(), {{"a", Tensor::from_vector<float>({1, 2}, {2})}});
    CHECK(read_file(dir / "a.safetensors") == bytes);
}

TEST_CASE("safetensors writer sorts by dtype alignment then name like the reference") {
    TensorMap m;
    m["b"] = Tensor::ones({1}, DType::F32);
    m["a"] = Tensor::ones({1}, DType::BF16);
    m["c"] = Tensor::zeros({}, DType::I64);
    m["z"] = Tensor::ones({2}, DType::F64);
    m["y"] = Tensor::ones({1}, DType::BOOL);
    const std::vector<uint8_t> bytes = safetensors_bytes(m, {{"format", "pt"}});
    uint64_t n = 0;
    std::memcpy(&n, bytes.data(), 8);
    CHECK(n % 8 == 0);
    std::string header(bytes.begin() + 8, bytes.begin() + 8 + long(n));
    while (!header.empty() && header.back() == ' ') header.pop_back();
    CHECK(header ==
          "{\"__metadata__\":{\"format\":\"pt\"},"
          "\"c\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[0,8]},"
          "\"z\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[8,24]},"
          "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[24,28]},"
          "\"a\":{\"dtype\":\"BF16\",\"shape\":[1],\"data_offsets\":[28,30]},"
          "\"y\":{\"dtype\":\"BOOL\",\"shape\":[1],\"data_offsets\":[30,31]}}");
    CHECK(bytes.size() == 8 + n + 31);
}

TEST_CASE("safetensors round trip of every dtype is bit exact") {
    const TensorMap m = every_dtype();
    SUBCASE("in memory") {
        expect_same_tensors(parse_safetensors(safetensors_bytes(m).data(), safetensors_bytes(m).size(), "mem"), m);
    }
    SUBCASE("through a file") {
        const auto dir = scratch_dir("st_roundtrip");
        const std::string path = (dir / "all.safetensors").string();
        save_safetensors(path, m);
        expect_same_tensors(load_safetensors(path), m);
        const auto info = read_safetensors_header(path);
        CHECK(info.at("scalar").shape.empty());
        CHECK(info.at("empty").shape == Shape{3, 0, 2});
        CHECK(info.at("empty").begin == info.at("empty").end);
        CHECK(info.at("f16").dtype == DType::F16);
        CHECK(info.at("f16").end - info.at("f16").begin == 10);
        CHECK(other_files(dir, "all.safetensors").empty());
    }
}

TEST_CASE("safetensors writer makes non-contiguous views contiguous") {
    Tensor base = Tensor::arange(0, 12, 1, DType::F32).reshape({3, 4});
    Tensor t = base.transpose(0, 1);   // [4, 3], non-contiguous
    Tensor n = base.narrow(1, 1, 2);   // [3, 2] with an offset and row stride 4
    REQUIRE_FALSE(t.is_contiguous());
    const std::vector<uint8_t> bytes = safetensors_bytes({{"t", t}, {"n", n}});
    const TensorMap back = parse_safetensors(bytes.data(), bytes.size(), "mem");
    CHECK(back.at("t").to_vector<float>() == t.to_vector<float>());
    CHECK(back.at("n").to_vector<float>() == std::vector<float>{1, 2, 5, 6, 9, 10});
}

TEST_CASE("safetensors metadata round trips and format defaults to pt") {
    const TensorMap m = {{"w", Tensor::ones({2}, DType::F32)}};
    Metadata back;
    SUBCASE("default") {
        const auto b = safetensors_bytes(m);
        parse_safetensors(b.data(), b.size(), "mem", &back);
        CHECK(back == Metadata{{"format", "pt"}});
    }
    SUBCASE("user metadata is kept and format added") {
        const auto dir = scratch_dir("st_meta");
        const std::string path = (dir / "m.safetensors").string();
        save_safetensors(path, m, {{"step", "12"}, {"note", "caf\xc3\xa9 \"quoted\"\n"}});
        load_safetensors(path, &back);
        CHECK(back == Metadata{{"format", "pt"}, {"step", "12"}, {"note", "caf\xc3\xa9 \"quoted\"\n"}});
        Metadata header_meta{{"stale", "entry"}};
        read_safetensors_header(path, &header_meta);
        CHECK(header_meta == back);
    }
    SUBCASE("an explicit format wins") {
        const auto b = safetensors_bytes(m, {{"format", "mlx"}});
        parse_safetensors(b.data(), b.size(), "mem", &back);
        CHECK(back == Metadata{{"format", "mlx"}});
    }
    SUBCASE("a file without __metadata__ gives an empty map") {
        back = {{"x", "y"}};
        const auto b = make_file("{" + entry("a", "U8", "[1]", 0, 1) + "}", {7});
        parse_safetensors(b.data(), b.size(), "mem", &back);
        CHECK(back.empty());
    }
}

TEST_CASE("safetensors writer rejects bad tensor names") {
    CHECK_THROWS_WITH_AS(safetensors_bytes({{"", Tensor::ones({1})}}), has("empty name"), Error);
    CHECK_THROWS_WITH_AS(safetensors_bytes({{"__metadata__", Tensor::ones({1})}}), has("reserved"),
                         Error);
    CHECK_THROWS_WITH_AS(safetensors_bytes({{"x", Tensor()}}), has("undefined"), Error);
    CHECK_THROWS_WITH_AS(safetensors_bytes({{"bad\xff", Tensor::ones({1})}}), has("UTF-8"), Error);
}

// ---- the reader: accepted oddities ----

TEST_CASE("safetensors reader accepts a header length that is not a multiple of 8") {
    // The library's own documentation example: N = 60, I32 [2, 2], 16 zero bytes.
    const std::string header = "{\"test\":{\"dtype\":\"I32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}";
    REQUIRE(header.size() == 60);
    std::vector<uint8_t> data(16, 0);
    data[4] = 5;  // element [0, 1] = 5
    const auto bytes = make_file(header, data);
    const TensorMap m = parse_safetensors(bytes.data(), bytes.size(), "doc example");
    REQUIRE(m.count("test") == 1);
    CHECK(m.at("test").shape() == Shape{2, 2});
    CHECK(m.at("test").to_vector<int32_t>() == std::vector<int32_t>{0, 5, 0, 0});
}

TEST_CASE("safetensors reader accepts zero-size and rank-0 tensors and an empty file") {
    const std::string header = "{" + entry("s", "F32", "[]", 0, 4) + "," + entry("e", "F64", "[2,0]", 4, 4) + "," +
                               entry("z", "I8", "[0]", 4, 4) + "}   ";
    const auto bytes = make_file(header, {0, 0, 0x80, 0x3f});
    const TensorMap m = parse_safetensors(bytes.data(), bytes.size(), "mem");
    CHECK(m.at("s").dim() == 0);
    CHECK(m.at("s").item() == 1.0);
    CHECK(m.at("e").shape() == Shape{2, 0});
    CHECK(m.at("z").numel() == 0);
    const auto none = make_file("{}");
    CHECK(parse_safetensors(none.data(), none.size(), "mem").empty());
}

TEST_CASE("safetensors reader reads tensors listed in any header order") {
    // Offsets out of name order and the header not sorted: only the tiling matters.
    const std::string header = "{" + entry("b", "U8", "[2]", 0, 2) + "," + entry("a", "U8", "[1]", 2, 3) + "}";
    const auto bytes = make_file(header, {1, 2, 3});
    const TensorMap m = parse_safetensors(bytes.data(), bytes.size(), "mem");
    CHECK(m.at("b").to_vector<int64_t>() == std::vector<int64_t>{1, 2});
    CHECK(m.at("a").to_vector<int64_t>() == std::vector<int64_t>{3});
}

// ---- the reader: one case per rejection ----

TEST_CASE("safetensors rejects a file shorter than 8 bytes") {
    expect_rejected({1, 2, 3}, {"too short"});
    expect_rejected({}, {"too short"});
}

TEST_CASE("safetensors rejects a header length over 100 MB") {
    expect_rejected(make_file("{}", {}, 100000001), {"100,000,000"});
    expect_rejected(make_file("{}", {}, UINT64_MAX - 4), {"exceeds"});
}

TEST_CASE("safetensors rejects a header length past the end of the file") {
    expect_rejected(make_file("{}", {}, 3), {"header length 3", "past the end"});
}

TEST_CASE("safetensors rejects a header that is not valid JSON") {
    expect_rejected(make_file("{\"a\":"), {"not valid JSON"});
    expect_rejected(make_file("{} x"), {"not valid JSON"});
    expect_rejected(make_file("{\"a\":\"\xff\"}"), {"not valid JSON"});  // not UTF-8
}

TEST_CASE("safetensors rejects a header that is not an object or not starting with a brace") {
    expect_rejected(make_file("[1, 2]  "), {"start with '{'"});
    expect_rejected(make_file(" {}"), {"start with '{'"});
    expect_rejected(make_file(""), {"start with '{'"});
}

TEST_CASE("safetensors rejects entries missing dtype or shape or data_offsets") {
    expect_rejected(make_file("{\"w\":{\"shape\":[1],\"data_offsets\":[0,1]}}", {0}), {"\"w\"", "missing \"dtype\""});
    expect_rejected(make_file("{\"w\":{\"dtype\":\"U8\",\"data_offsets\":[0,1]}}", {0}), {"\"w\"", "missing \"shape\""});
    expect_rejected(make_file("{\"w\":{\"dtype\":\"U8\",\"shape\":[1]}}", {0}), {"\"w\"", "missing \"data_offsets\""});
    expect_rejected(make_file("{\"w\":[1,2]}"), {"\"w\"", "not a JSON object"});
}

TEST_CASE("safetensors rejects entries with wrong JSON types") {
    expect_rejected(make_file("{\"w\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,1]}}", {0}), {"dtype", "not a string"});
    expect_rejected(make_file("{" + entry("w", "U8", "3", 0, 3) + "}", {0, 0, 0}), {"shape", "not a list"});
    expect_rejected(make_file("{" + entry("w", "U8", "[-1]", 0, 0) + "}"), {"dimension -1"});
    expect_rejected(make_file("{" + entry("w", "U8", "[1.5]", 0, 1) + "}", {0}), {"dimension 1.5"});
    expect_rejected(make_file("{" + entry("w", "U8", "[\"2\"]", 0, 2) + "}", {0, 0}), {"dimension \"2\""});
    expect_rejected(make_file("{" + entry("w", "U8", "[true]", 0, 1) + "}", {0}), {"dimension true"});
    for (const std::string offsets : {"[0]", "[0,1,2]", "[0,-1]", "[\"0\",\"1\"]", "[0,1.0]", "{}"}) {
        INFO("data_offsets " << offsets);
        expect_rejected(make_file("{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":" + offsets + "}}", {0}),
                        {"\"w\"", "data_offsets [begin, end]"});
    }
}

TEST_CASE("safetensors rejects an impossibly large shape without overflowing") {
    expect_rejected(make_file("{" + entry("w", "F64", "[4294967296,4294967296]", 0, 8) + "}", std::vector<uint8_t>(8)),
                    {"impossibly large"});
    expect_rejected(make_file("{" + entry("w", "F64", "[1073741824,1073741824]", 0, 8) + "}", std::vector<uint8_t>(8)),
                    {"impossibly large"});
}

TEST_CASE("safetensors rejects unknown dtypes naming the tensor and the dtype") {
    for (const std::string dtype : {"F8_E4M3", "U16", "C64", "FLOAT", "f32", ""}) {
        INFO("dtype " << dtype);
        expect_rejected(make_file("{" + entry("layer.w", dtype, "[1]", 0, 1) + "}", {0}),
                        {"\"layer.w\"", "dtype " + std::string(dtype == "F8_E4M3" || dtype == "U16" || dtype == "C64"
                                                                       ? dtype
                                                                       : "\"" + dtype + "\"")});
    }
}

TEST_CASE("safetensors rejects duplicate tensor names") {
    const std::string header = "{" + entry("w", "U8", "[1]", 0, 1) + "," + entry("w", "U8", "[1]", 1, 2) + "}";
    expect_rejected(make_file(header, {1, 2}), {"\"w\"", "twice"});
    // Duplicate keys inside an entry or in __metadata__ are rejected too.
    expect_rejected(make_file("{\"w\":{\"dtype\":\"U8\",\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[0,1]}}", {0}),
                    {"\"dtype\"", "duplicate"});
    expect_rejected(make_file("{\"__metadata__\":{\"k\":\"a\",\"k\":\"b\"}}"), {"\"k\"", "duplicate"});
}

TEST_CASE("safetensors rejects __metadata__ that is not a string map") {
    expect_rejected(make_file("{\"__metadata__\":{\"step\":12}}"), {"__metadata__", "\"step\"", "not a string"});
    expect_rejected(make_file("{\"__metadata__\":{\"cfg\":{\"a\":\"b\"}}}"), {"__metadata__", "not a string"});
    expect_rejected(make_file("{\"__metadata__\":\"pt\"}"), {"__metadata__", "map of strings"});
    expect_rejected(make_file("{\"__metadata__\":[\"a\"]}"), {"__metadata__", "map of strings"});
}

TEST_CASE("safetensors rejects data_offsets with end before begin") {
    expect_rejected(make_file("{" + entry("w", "U8", "[0]", 4, 2) + "}", {0, 0, 0, 0}), {"\"w\"", "end before begin"});
}

TEST_CASE("safetensors rejects a size that disagrees with shape times dtype size") {
    expect_rejected(make_file("{" + entry("w", "F32", "[2]", 0, 4) + "}", {0, 0, 0, 0}),
                    {"\"w\"", "needs 8 bytes", "span 4"});
    expect_rejected(make_file("{" + entry("w", "BF16", "[3]", 0, 8) + "}", std::vector<uint8_t>(8)),
                    {"\"w\"", "needs 6 bytes"});
}

TEST_CASE("safetensors rejects overlapping tensors") {
    const std::string header = "{" + entry("a", "F32", "[2]", 0, 8) + "," + entry("b", "F32", "[1]", 4, 8) + "}";
    expect_rejected(make_file(header, std::vector<uint8_t>(8)), {"\"a\"", "\"b\"", "overlap"});
    const std::string same = "{" + entry("a", "U8", "[2]", 0, 2) + "," + entry("b", "U8", "[2]", 0, 2) + "}";
    expect_rejected(make_file(same, std::vector<uint8_t>(2)), {"overlap"});
    // A zero-size tensor placed inside another one is an overlap too.
    const std::string inside = "{" + entry("a", "U8", "[4]", 0, 4) + "," + entry("e", "U8", "[0]", 2, 2) + "}";
    expect_rejected(make_file(inside, std::vector<uint8_t>(4)), {"\"e\"", "overlap"});
}

TEST_CASE("safetensors rejects holes between tensors") {
    const std::string header = "{" + entry("a", "U8", "[2]", 0, 2) + "," + entry("b", "U8", "[2]", 4, 6) + "}";
    expect_rejected(make_file(header, std::vector<uint8_t>(6)), {"hole", "bytes 2..4", "\"b\""});
}

TEST_CASE("safetensors rejects a first tensor that does not start at 0") {
    expect_rejected(make_file("{" + entry("a", "U8", "[2]", 2, 4) + "}", std::vector<uint8_t>(4)),
                    {"hole", "bytes 0..2", "\"a\""});
}

TEST_CASE("safetensors rejects trailing bytes after the last tensor") {
    expect_rejected(make_file("{" + entry("a", "U8", "[2]", 0, 2) + "}", std::vector<uint8_t>(5)),
                    {"3 trailing bytes"});
    expect_rejected(make_file("{}", {1}), {"1 trailing bytes"});
}

TEST_CASE("safetensors rejects tensor data past the end of the file") {
    expect_rejected(make_file("{" + entry("a", "F32", "[4]", 0, 16) + "}", std::vector<uint8_t>(12)),
                    {"\"a\"", "past the end"});
}

TEST_CASE("safetensors file readers name the file in errors") {
    const auto dir = scratch_dir("st_read_errors");
    const std::string missing = (dir / "missing.safetensors").string();
    CHECK_THROWS_WITH_AS(load_safetensors(missing), has(missing), Error);
    CHECK_THROWS_WITH_AS(read_safetensors_header(missing), has("No such file"), Error);
    CHECK_THROWS_WITH_AS(load_safetensors(dir.string()), has("directory"), Error);
    const std::string bad = (dir / "bad.safetensors").string();
    write_file(bad, make_file("{" + entry("a", "U8", "[2]", 0, 2) + "}", std::vector<uint8_t>(3)));
    CHECK_THROWS_WITH_AS(load_safetensors(bad), has(bad + ": 1 trailing bytes"), Error);
    CHECK_THROWS_WITH_AS(read_safetensors_header(bad), has("trailing"), Error);
    write_file(bad, {0x58, 0});
    CHECK_THROWS_WITH_AS(read_safetensors_header(bad), has("too short"), Error);
    write_file(bad, make_file("{}", {}, 1000));
    CHECK_THROWS_WITH_AS(read_safetensors_header(bad), has("past the end"), Error);
    const std::string empty = (dir / "empty.safetensors").string();
    write_file(empty, {});
    CHECK_THROWS_WITH_AS(load_safetensors(empty), has("too short"), Error);
}

// ---- atomic writes ----

TEST_CASE("safetensors save into a missing or non-directory folder throws and leaves no temporary") {
    const auto dir = scratch_dir("st_atomic_missing");
    const std::string target = (dir / "nope" / "w.safetensors").string();
    CHECK_THROWS_WITH_AS(save_safetensors(target, {{"w", Tensor::ones({2})}}),
                         has("cannot write " + target), Error);
    CHECK_THROWS_WITH_AS(save_safetensors(target, {{"w", Tensor::ones({2})}}), has("No such file"),
                         Error);
    CHECK(other_files(dir).empty());
    write_file(dir / "plain_file", {1});
    const std::string under_file = (dir / "plain_file" / "w.safetensors").string();
    CHECK_THROWS_WITH_AS(save_safetensors(under_file, {{"w", Tensor::ones({2})}}), has("Not a directory"),
                         Error);
    CHECK(other_files(dir, "plain_file").empty());
}

TEST_CASE("safetensors save into an unwritable folder throws and leaves no temporary") {
    if (::geteuid() == 0) {
        MESSAGE("running as root: permission bits do not stop writes; skipped");
        return;
    }
    const auto dir = scratch_dir("st_atomic_readonly");
    std::filesystem::permissions(dir, std::filesystem::perms::owner_read | std::filesystem::perms::owner_exec);
    const std::string target = (dir / "w.safetensors").string();
    CHECK_THROWS_WITH_AS(save_safetensors(target, {{"w", Tensor::ones({2})}}), has("Permission denied"),
                         Error);
    std::filesystem::permissions(dir, std::filesystem::perms::owner_all);
    CHECK(other_files(dir).empty());
}

TEST_CASE("write_file_atomically leaves an existing file untouched when the writer fails") {
    const auto dir = scratch_dir("st_atomic_fail");
    const std::string path = (dir / "good.safetensors").string();
    save_safetensors(path, {{"w", Tensor::from_vector<float>({1, 2, 3}, {3})}});
    const std::vector<uint8_t> before = read_file(path);
    std::string seen_tmp;
    auto fail_midway = [&](const std::string& tmp) {
        seen_tmp = tmp;
        std::ofstream out(tmp, std::ios::binary);
        out << "half a file";
        out.close();
        throw std::runtime_error("simulated failure midway");
    };
    CHECK_THROWS_WITH_AS(write_file_atomically(path, fail_midway),
                         has("cannot write " + path + ": simulated failure midway"), Error);
    CHECK(seen_tmp.rfind(path + ".tmp." + std::to_string(::getpid()) + ".", 0) == 0);
    CHECK_FALSE(std::filesystem::exists(seen_tmp));
    CHECK(read_file(path) == before);
    CHECK(other_files(dir, "good.safetensors").empty());
    // An ssmtune::Error from the writer is wrapped the same way.
    CHECK_THROWS_WITH_AS(write_file_atomically(path, [](const std::string&) { SSMTUNE_FAIL("inner problem"); }),
                         has("inner problem"), Error);
    CHECK(read_file(path) == before);
    // A writer that never creates the temporary: the fsync step fails with the path and errno text.
    CHECK_THROWS_WITH_AS(write_file_atomically(path, [](const std::string&) {}), has("No such file"),
                         Error);
    CHECK(load_safetensors(path).at("w").to_vector<float>() == std::vector<float>{1, 2, 3});
}

TEST_CASE("write_file_atomically replaces the target and uses distinct temporaries") {
    const auto dir = scratch_dir("st_atomic_ok");
    const std::string path = (dir / "t.txt").string();
    std::vector<std::string> tmps;
    for (const char* text : {"first", "second"}) {
        write_file_atomically(path, [&](const std::string& tmp) {
            tmps.push_back(tmp);
            std::ofstream(tmp) << text;
        });
    }
    CHECK(tmps[0] != tmps[1]);
    CHECK(std::filesystem::path(tmps[0]).parent_path() == dir);
    const auto bytes = read_file(path);
    CHECK(std::string(bytes.begin(), bytes.end()) == "second");
    CHECK(other_files(dir, "t.txt").empty());
}

TEST_CASE("safetensors save surfaces a full disk as an Error and keeps the old file") {
    // RLIMIT_FSIZE makes writes past the limit fail with EFBIG, as a full disk fails them with ENOSPC.
    const auto dir = scratch_dir("st_disk_full");
    const std::string path = (dir / "big.safetensors").string();
    save_safetensors(path, {{"w", Tensor::ones({4})}});
    const std::vector<uint8_t> before = read_file(path);
    struct rlimit old_limit {};
    REQUIRE(::getrlimit(RLIMIT_FSIZE, &old_limit) == 0);
    if (old_limit.rlim_cur != RLIM_INFINITY && old_limit.rlim_cur < 8192) return;
    auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
    struct rlimit small = old_limit;
    small.rlim_cur = 4096;
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &small) == 0);
    std::string msg;
    try {
        save_safetensors(path, {{"w", Tensor::ones({100000})}});
    } catch (const Error& e) {
        msg = e.what();
    }
    ::setrlimit(RLIMIT_FSIZE, &old_limit);
    std::signal(SIGXFSZ, old_handler);
    INFO("message: " << msg);
    CHECK(msg.find("cannot write " + path) != std::string::npos);
    CHECK(msg.find("too large") != std::string::npos);  // strerror(EFBIG): "File too large"
    CHECK(read_file(path) == before);
    CHECK(other_files(dir, "big.safetensors").empty());
}

// A file past 4 GiB (sparse: a few bytes on disk) whose last tensor starts at byte 5 GiB: its header and that tensor
// read through 64-bit offsets. On a 32-bit build (i686 in tools/setup/cross_check.sh) this needs large-file support
// (CMake's _FILE_OFFSET_BITS=64: without it the file does not even open), and what cannot fit in its address space
// (the 5 GiB tensor, the whole file) is one Error each, not a size that wrapped around.
TEST_CASE("safetensors past 4 GiB: the last tensor reads through 64-bit offsets, and a 32-bit build refuses the rest") {
    const auto dir = scratch_dir("st_large");
    const std::string path = (dir / "large.safetensors").string();
    const uint64_t big = uint64_t(5) << 30;
    const std::string header = R"({"big":{"dtype":"U8","shape":[5368709120],"data_offsets":[0,5368709120]},)"
                               R"("z":{"dtype":"F32","shape":[2],"data_offsets":[5368709120,5368709128]}})";
    const std::vector<uint8_t> head = make_file(header);
    const float z[2] = {1.5f, -2.25f};
    {
        Fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
        REQUIRE(fd.fd >= 0);
        REQUIRE(::pwrite(fd.fd, head.data(), head.size(), 0) == ssize_t(head.size()));
        REQUIRE(::pwrite(fd.fd, z, sizeof z, off_t(head.size() + big)) == ssize_t(sizeof z));
    }
    CHECK(std::filesystem::file_size(path) == head.size() + big + sizeof z);
    const auto table = read_safetensors_header(path);
    REQUIRE(table.size() == 2);
    CHECK(table.at("z").begin == big);
    const std::unique_ptr<TensorFile> file = open_safetensors(path);
    CHECK(file->entries().at("big").shape == Shape{int64_t(big)});
    CHECK(file->read("z").to_vector<float>() == std::vector<float>{1.5f, -2.25f});
    if (sizeof(size_t) < 8) {
        CHECK(error_of([&] { file->read("big"); }).find("a 32-bit build can address") != std::string::npos);
        CHECK(error_of([&] { load_safetensors(path); }).find("more than a 32-bit build can hold") != std::string::npos);
    }
    std::filesystem::remove(path);
}

TEST_CASE("safetensors opened for reading one tensor at a time gives what load_safetensors gives") {
    const TensorMap m = every_dtype();
    const auto dir = scratch_dir("st_open");
    const std::string path = (dir / "all.safetensors").string();
    save_safetensors(path, m, {{"note", "x"}});
    Metadata meta;
    const std::unique_ptr<TensorFile> file = open_safetensors(path, &meta);
    CHECK(meta.at("note") == "x");
    CHECK(file->path() == path);
    REQUIRE(file->entries().size() == m.size());
    TensorMap got;
    for (const auto& entry : file->entries()) {
        const std::string& name = entry.first;
        CAPTURE(name);
        CHECK(entry.second.dtype == m.at(name).dtype());
        CHECK(entry.second.shape == m.at(name).shape());
        got[name] = file->read(name);
    }
    expect_same_tensors(got, m);
    // read_into: the bytes straight into a tensor of the file's dtype, converted into another dtype or a view
    Tensor same = Tensor::full({2, 3}, 7.0);
    file->read_into("f32", same);
    CHECK(raw_bytes(same) == raw_bytes(m.at("f32")));
    Tensor wider = Tensor::zeros({4}, DType::F32);
    file->read_into("f64", wider);
    CHECK(wider.to_vector<float>() == m.at("f64").to(DType::F32).to_vector<float>());
    Tensor wide = Tensor::zeros({3, 2});
    Tensor view = wide.transpose(0, 1);  // [2, 3], not contiguous
    Tensor as_f64 = Tensor::zeros({2, 2}, DType::F64);
    file->read_into("i64", as_f64);
    CHECK(as_f64.to_vector<double>() == m.at("i64").to(DType::F64).to_vector<double>());
    file->read_into("f32", view);
    CHECK(raw_bytes(view) == raw_bytes(m.at("f32")));
    Tensor wrong = Tensor::zeros({3, 2});
    CHECK_THROWS_WITH_AS(file->read_into("f32", wrong), doctest::Contains("not the [3, 2] it is read into"), Error);
    CHECK(error_of([&] { file->read("nope"); }).find(path + " holds no tensor named nope") != std::string::npos);
    // the header was read when it opened; a file cut short since then is an Error naming it, not a crash
    std::filesystem::resize_file(path, 8 + 16);
    const std::string cut = error_of([&] { file->read("i64"); });
    CHECK(cut.find(path) != std::string::npos);
    CHECK(cut.find("ended early") != std::string::npos);
}
