// PyTorch checkpoints (engine/torch_checkpoint.h, engine/zip_reader.h): files torch.save wrote
// (tests/engine/torch_checkpoints/, made by make_fixtures.py there) read back to the values the script's formulas
// give, for every dtype and kind of view, rezipped deflated and with zip64 records, saved as parameters with pickle
// protocol 4; a model directory and a LoRA adapter in .bin form load to the same tensors and outputs as their
// safetensors twins; and one rejection per damage or hostile pickle, on archives built by hand here.
#include "test_util.h"

#include <cstring>
#include <fstream>

#include "engine/tensor_file.h"
#include "engine/torch_checkpoint.h"
#include "engine/zip_reader.h"
#include "models/checkpoint.h"
#include "peft/peft.h"
#include "tests/zip_builder.h"

using namespace ssmtune;
using namespace ssmtune::testing;
using namespace std::string_literals;

namespace {

const std::filesystem::path kFixtures = std::filesystem::path(SSMTUNE_SOURCE_DIR) / "tests/engine/torch_checkpoints";

std::string fixture(const std::string& name) { return (kFixtures / name).string(); }

// Pickle pieces (protocol 2, as torch.save writes them).
std::string str(const std::string& s) {
    std::string o = "X";
    put_le32(o, uint32_t(s.size()));
    return o + s;
}
std::string small_int(int v) { return std::string("K") + char(v); }
std::string global(const std::string& module, const std::string& name) { return "c" + module + "\n" + name + "\n"; }
// _rebuild_tensor_v2 of a float storage `key` of `numel` elements: offset, then size and stride as pickled tuples
std::string tensor(const std::string& key, int numel, int offset, const std::string& size, const std::string& stride) {
    return global("torch._utils", "_rebuild_tensor_v2") + "((" + str("storage") + global("torch", "FloatStorage") +
           str(key) + str("cpu") + small_int(numel) + "tQ" + small_int(offset) + size + stride + "\x89" +
           global("collections", "OrderedDict") + ")Rt" + "R";
}
std::string tuple2(int a, int b) { return small_int(a) + small_int(b) + "\x86"; }
std::string state_dict(const std::string& items) { return std::string("\x80\x02}(") + items + "u."; }

std::string floats(std::vector<float> v) { return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4); }

TensorMap parse(const std::string& bytes) {
    return parse_torch_checkpoint(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "hand_built.bin");
}
std::string parse_error(const std::string& bytes) { return error_of([&] { parse(bytes); }); }

// A well-formed 2x2 checkpoint, "w" = [[1, 2], [3, 4]], with its pickle replaceable.
std::string archive(const std::string& pickle, const std::string& storage = floats({1, 2, 3, 4})) {
    return stored_zip({{"archive/data.pkl", pickle}, {"archive/byteorder", "little"}, {"archive/data/0", storage}});
}
const std::string kGoodPickle = state_dict(str("w") + tensor("0", 4, 0, tuple2(2, 2), tuple2(2, 1)));

}  // namespace

TEST_CASE("torch checkpoint: every dtype and kind of view torch.save wrote reads back to its values") {
    for (const char* file : {"views.bin", "views_deflated.bin", "views_zip64.bin"}) {
        CAPTURE(file);
        const TensorMap t = load_torch_checkpoint(fixture(file));
        CHECK(t.size() == 16);
        std::vector<double> base(12), long_(20);
        for (int i = 0; i < 12; ++i) base[size_t(i)] = i * 0.5 - 1;
        for (int i = 0; i < 20; ++i) long_[size_t(i)] = i * 0.25;
        CHECK(t.at("f32").shape() == Shape{3, 4});
        CHECK(t.at("f32").to_vector<double>() == base);
        std::vector<double> transposed;
        for (int c = 0; c < 4; ++c)
            for (int r = 0; r < 3; ++r) transposed.push_back(base[size_t(r * 4 + c)]);
        CHECK(t.at("f32_t").shape() == Shape{4, 3});
        CHECK(t.at("f32_t").to_vector<double>() == transposed);
        CHECK(t.at("offset").shape() == Shape{2, 3});
        CHECK(t.at("offset").to_vector<double>() == std::vector<double>(long_.begin() + 5, long_.begin() + 11));
        CHECK(t.at("strided").to_vector<double>() == std::vector<double>{0, 0.75, 1.5, 2.25, 3, 3.75, 4.5});
        CHECK(t.at("expanded").shape() == Shape{3, 2});
        CHECK(t.at("expanded").to_vector<double>() == std::vector<double>{1.5, -2.5, 1.5, -2.5, 1.5, -2.5});
        CHECK(t.at("scalar").shape().empty());
        CHECK(t.at("scalar").to_vector<double>() == std::vector<double>{3.5});
        CHECK(t.at("empty").shape() == Shape{0, 4});
        CHECK(t.at("f64").dtype() == DType::F64);
        CHECK(t.at("f64").to_vector<double>() == std::vector<double>{-1, -0.5, 0, 0.5, 1});
        CHECK(t.at("f16").dtype() == DType::F16);
        const std::vector<double> f16 = t.at("f16").to_vector<double>();
        CHECK(f16[0] == 0.5);
        CHECK(f16[1] == -2.0);
        CHECK(f16[2] == 65504.0);
        CHECK(f16[3] == doctest::Approx(1e-4).epsilon(1e-3));
        CHECK(t.at("bf16").dtype() == DType::BF16);
        const std::vector<double> bf16 = t.at("bf16").to_vector<double>();
        CHECK(bf16[0] == 1.5);
        CHECK(bf16[1] == -3.25);
        CHECK(bf16[2] == doctest::Approx(1e30).epsilon(1e-2));
        CHECK(t.at("i64").dtype() == DType::I64);
        CHECK(t.at("i64").to_vector<int64_t>() == std::vector<int64_t>{-5, 0, int64_t(1) << 40});
        CHECK(t.at("i32").to_vector<int64_t>() == std::vector<int64_t>{-7, 1 << 30});
        CHECK(t.at("i16").to_vector<int64_t>() == std::vector<int64_t>{-300, 300});
        CHECK(t.at("i8").to_vector<int64_t>() == std::vector<int64_t>{-128, 127});
        CHECK(t.at("u8").to_vector<int64_t>() == std::vector<int64_t>{0, 255});
        CHECK(t.at("bool").dtype() == DType::BOOL);
        CHECK(t.at("bool").to_vector<int64_t>() == std::vector<int64_t>{1, 0, 1});
        const auto shapes = open_torch_checkpoint(fixture(file))->entries();
        CHECK(shapes.size() == 16);
        CHECK(shapes.at("f32_t").shape == Shape{4, 3});
    }
}

TEST_CASE("torch checkpoint: opened for reading one tensor at a time it gives what load_torch_checkpoint gives") {
    for (const char* file : {"views.bin", "views_deflated.bin", "views_zip64.bin", "parameters_protocol4.bin"}) {
        CAPTURE(file);
        const TensorMap all = load_torch_checkpoint(fixture(file));
        const std::unique_ptr<TensorFile> opened = open_torch_checkpoint(fixture(file));
        REQUIRE(opened->entries().size() == all.size());
        TensorMap got, again;
        for (const auto& entry : opened->entries()) {
            CHECK(entry.second.shape == all.at(entry.first).shape());
            CHECK(entry.second.dtype == all.at(entry.first).dtype());
            got[entry.first] = opened->read(entry.first);
        }
        expect_same_tensors(got, all);
        // each storage's bytes are let go after its last tensor; reading again reads them again
        for (const auto& entry : opened->entries()) again[entry.first] = opened->read(entry.first);
        expect_same_tensors(again, all);
    }
    const std::unique_ptr<TensorFile> views = open_torch_checkpoint(fixture("views.bin"));
    Tensor transposed = Tensor::zeros({4, 3}), as_f64 = Tensor::zeros({4, 3}, DType::F64);
    views->read_into("f32_t", transposed);  // a transposed view, copied out straight into the destination
    views->read_into("f32_t", as_f64);
    CHECK(transposed.to_vector<double>() == load_torch_checkpoint(fixture("views.bin")).at("f32_t").to_vector<double>());
    CHECK(as_f64.to_vector<double>() == transposed.to_vector<double>());
    CHECK_THROWS_WITH_AS(views->read("nope"), doctest::Contains("holds no tensor named nope"), Error);
    // storages are read by pread, not through a mapping: a file cut short after it was opened is an Error naming it
    const auto dir = scratch_dir("torch_cut_after_open");
    const std::string copy = (dir / "pytorch_model.bin").string();
    std::filesystem::copy_file(fixture("tiny_mamba_bin/pytorch_model.bin"), copy);
    const std::unique_ptr<TensorFile> opened = open_torch_checkpoint(copy);
    std::filesystem::resize_file(copy, std::filesystem::file_size(copy) / 2);
    int errors = 0;
    for (const auto& entry : opened->entries()) {
        const std::string error = error_of([&] { opened->read(entry.first); });
        if (error.empty()) continue;
        ++errors;
        CHECK(error.find(copy) != std::string::npos);
        CHECK(error.find("ended early") != std::string::npos);
    }
    CHECK(errors > 0);
}

TEST_CASE("torch checkpoint: parameters pickled with protocol 4 (frames, memoize, stack globals)") {
    const TensorMap t = load_torch_checkpoint(fixture("parameters_protocol4.bin"));
    CHECK(t.at("weight").to_vector<double>() == std::vector<double>{0, 1, 2, 3, 4, 5});
    CHECK(t.at("weight").shape() == Shape{2, 3});
    CHECK(t.at("bias").to_vector<double>() == std::vector<double>{0.25, -0.5});
}

TEST_CASE("torch checkpoint: the legacy format and a training checkpoint are refused with their fixes") {
    const std::string legacy = error_of([] { load_torch_checkpoint(fixture("legacy.bin")); });
    CHECK(legacy.find("legacy format") != std::string::npos);
    CHECK(legacy.find("re-save") != std::string::npos);
    const std::string nested = error_of([] { load_torch_checkpoint(fixture("training_checkpoint.bin")); });
    CHECK(nested.find("model (dict)") != std::string::npos);
    CHECK(nested.find("step (int)") != std::string::npos);
    CHECK(nested.find("ckpt[\"model\"]") != std::string::npos);
}

TEST_CASE("torch checkpoint: a model directory in .bin form loads as its safetensors twin (single and sharded)") {
    const models::AnyModel reference = models::load_model(fixture("tiny_mamba_safetensors"));
    const Tensor ids = Tensor::from_vector<int64_t>({1, 5, 9, 15, 0, 3, 7, 2}, {2, 4});
    const Tensor expected = reference.lm->forward(ids);
    for (const char* dir : {"tiny_mamba_bin", "tiny_mamba_sharded"}) {
        CAPTURE(dir);
        const models::AnyModel m = models::load_model(fixture(dir));
        expect_same_tensors(m.module().state_dict(), reference.module().state_dict());
        CHECK(m.lm->forward(ids).to_vector<double>() == expected.to_vector<double>());
    }
    // the .bin holds lm_head.weight tied to the embedding (one storage), as state-spaces/mamba-* files do
    const TensorMap raw = models::read_model_tensors(fixture("tiny_mamba_bin"));
    CHECK(raw.at("lm_head.weight").to_vector<double>() == raw.at("backbone.embedding.weight").to_vector<double>());
}

TEST_CASE("torch checkpoint: a LoRA adapter saved as adapter_model.bin loads as its safetensors twin") {
    models::AnyModel a = models::load_model(fixture("tiny_mamba_safetensors"));
    models::AnyModel b = models::load_model(fixture("tiny_mamba_safetensors"));
    const Tensor ids = Tensor::from_vector<int64_t>({4, 5, 6, 7, 8, 9}, {1, 6});
    const Tensor base = a.lm->forward(ids);
    peft::Adapter from_bin = peft::load(a.module(), fixture("lora_bin"));
    peft::Adapter from_safetensors = peft::load(b.module(), fixture("lora_safetensors"));
    const Tensor out = a.lm->forward(ids);
    CHECK(out.to_vector<double>() == b.lm->forward(ids).to_vector<double>());
    CHECK(out.to_vector<double>() != base.to_vector<double>());  // the adapter does something
}

TEST_CASE("torch checkpoint: a hand-built archive reads, and each damage is one error naming it") {
    const TensorMap good = parse(archive(kGoodPickle));
    CHECK(good.at("w").to_vector<double>() == std::vector<double>{1, 2, 3, 4});
    CHECK(parse(archive(state_dict(str("w") + tensor("0", 4, 1, tuple2(1, 2), tuple2(0, 2)))))
              .at("w").to_vector<double>() == std::vector<double>{2, 4});
    const auto has = [](const std::string& error, const std::string& part) {
        INFO(error);
        CHECK(error.find(part) != std::string::npos);
    };
    has(parse_error(""), "the file is empty");
    has(parse_error("not a zip at all"), "no zip archive");
    const std::string whole = archive(kGoodPickle);
    for (size_t cut : {size_t(10), whole.size() / 2, whole.size() - 1}) has(parse_error(whole.substr(0, cut)), "zip");
    std::string flipped = whole;
    flipped[whole.find(floats({1, 2, 3, 4}))] ^= 1;  // a storage byte
    has(parse_error(flipped), "CRC-32");
    has(parse_error(archive(kGoodPickle, floats({1, 2, 3}))), "holds 12 bytes but the pickle describes 4 elements");
    has(parse_error(stored_zip({{"archive/data.pkl", kGoodPickle}})), "storage 0 is missing");
    has(parse_error(stored_zip({{"a/data.pkl", kGoodPickle}, {"b/data.pkl", kGoodPickle}})), "2 checkpoint folders");
    has(parse_error(stored_zip({{"archive/data.pkl", kGoodPickle}, {"archive/byteorder", "big"}})), "big-endian");
    // views outside their storage
    has(parse_error(archive(state_dict(str("w") + tensor("0", 4, 1, tuple2(2, 2), tuple2(2, 1))))), "reaches past");
    has(parse_error(archive(state_dict(str("w") + tensor("0", 4, 0, tuple2(2, 3), tuple2(3, 1))))), "reaches past");
    has(parse_error(archive(state_dict(str("w") + tensor("0", 4, 5, tuple2(0, 2), tuple2(2, 1))))), "starts at element 5");
    // an expanded view (stride 0) of a 4-element storage as 2^14 x 2^13 elements: beyond the cap, nothing allocated
    has(parse_error(archive(state_dict(str("w") + tensor("0", 4, 0, "M\x00\x40M\x00\x20\x86"s, tuple2(0, 0))))),
        "exceed 2^26 elements");
    CHECK(parse(archive(state_dict(str("w") + tensor("0", 4, 0, tuple2(3, 2), tuple2(0, 1))))).at("w").numel() == 6);
    // the pickle itself
    has(parse_error(archive(kGoodPickle.substr(0, kGoodPickle.size() - 1))), "before its STOP");
    has(parse_error(archive("\x80\x02\xff.")), "opcode 0xff");
    has(parse_error(archive("\x80\x02" + global("os", "system") + "(" + str("echo hi") + "tR.")), "calls os.system");
    has(parse_error(archive("\x80\x02" + global("builtins", "eval") + "(" + str("1") + "tR.")), "calls builtins.eval");
    has(parse_error(archive("\x80\x02]q\x00h\x00" "a."s)), "holds a list");  // a list inside itself: no leak, no loop
    has(parse_error(archive("\x80\x02h\x07.")), "recalls memo 7");
    has(parse_error(archive("\x80\x02u.")), "never opened");
    has(parse_error(archive(state_dict(small_int(3) + tensor("0", 4, 0, tuple2(2, 2), tuple2(2, 1))))), "not a string (int)");
    has(parse_error(archive(state_dict(str("\xff\xfe") + tensor("0", 4, 0, tuple2(2, 2), tuple2(2, 1))))),
        "not valid UTF-8");
    std::string typed = kGoodPickle;
    typed.replace(typed.find("FloatStorage"), 12, "ComplexFloatStorage");
    has(parse_error(archive(typed)), "torch.ComplexFloatStorage is not one ssmtune holds");
}

TEST_CASE("zip reader: the zip64 and deflated fixtures list the same entries as the stored one") {
    const std::string plain = file_bytes(fixture("views.bin"));
    const ZipArchive a(reinterpret_cast<const uint8_t*>(plain.data()), plain.size(), "views.bin");
    for (const char* other : {"views_deflated.bin", "views_zip64.bin"}) {
        CAPTURE(other);
        const std::string bytes = file_bytes(fixture(other));
        const ZipArchive b(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), other);
        REQUIRE(a.entries().size() == b.entries().size());
        for (const ZipEntry& e : a.entries()) {
            CAPTURE(e.name);
            const ZipEntry* f = b.find(e.name);
            REQUIRE(f != nullptr);
            const ZipBytes x = a.read(e), y = b.read(*f);
            CHECK(std::string(reinterpret_cast<const char*>(x.data), x.size) ==
                  std::string(reinterpret_cast<const char*>(y.data), y.size));
        }
        if (std::string(other) == "views_deflated.bin") CHECK(b.entries()[0].method == 8);
    }
}
