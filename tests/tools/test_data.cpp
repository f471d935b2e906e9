// Data: the synthetic tasks follow their definitions and are seeded; token streams split and window correctly
// (bytes, safetensors ids, BPE text); the BPE tokenizer gives exact ids on a tiny hand-written tokenizer.json and
// round-trips any text; IDX files (plain and gzipped) load into the three sequence views, and every damaged-file
// case is one clear error.
#include "test_util.h"
#include "tests/tools/cli_test_util.h"
#include "tests/tools/tiny_tokenizer.h"

#include <zlib.h>

#include <cmath>
#include <fstream>
#include <set>

#include "engine/safetensors.h"
#include "models/checkpoint.h"
#include "tools/commands.h"
#include "tools/data/bpe_tokenizer.h"
#include "tools/data/class_metrics.h"
#include "tools/data/idx.h"
#include "tools/data/synthetic.h"
#include "tools/data/text.h"

using namespace ssmtune;
using namespace ssmtune::data;
using namespace ssmtune::testing;

namespace {
std::vector<int64_t> ids_of(const Tensor& t) { return t.to_vector<int64_t>(); }
}  // namespace

// ------------------------------------------------------------------------------------------------ synthetic

TEST_CASE("data: selective copying targets are the data tokens in order of appearance") {
    SelectiveCopyingConfig c;
    c.num_tokens = 5;
    c.num_memorize = 3;
    c.span = 10;
    CHECK(c.vocab_size() == 7);
    CHECK(c.seq_len() == 13);
    const int64_t B = 64, L = 13;
    Generator g(1);
    Batch b = selective_copying(c, g, B);
    CHECK(b.input_ids.shape() == Shape{B, L});
    CHECK(b.targets.shape() == Shape{B, L});
    CHECK(b.input_ids.dtype() == DType::I64);
    const auto x = ids_of(b.input_ids), y = ids_of(b.targets);
    std::set<int64_t> first_positions, tokens_seen;
    for (int64_t r = 0; r < B; ++r) {
        std::vector<int64_t> data, out;
        for (int64_t i = 0; i < 10; ++i) {
            const int64_t v = x[size_t(r * L + i)];
            CHECK((v >= 0 && v <= 5));  // noise 0 or a data token 1..5
            if (v != 0) {
                if (data.empty()) first_positions.insert(i);
                data.push_back(v);
                tokens_seen.insert(v);
            }
            CHECK(y[size_t(r * L + i)] == kIgnoreIndex);
        }
        REQUIRE(data.size() == 3);  // exactly M distinct positions hold data tokens
        for (int64_t i = 10; i < 13; ++i) {
            CHECK(x[size_t(r * L + i)] == 6);  // marker C + 1
            out.push_back(y[size_t(r * L + i)]);
        }
        CHECK(data == out);
    }
    CHECK(tokens_seen.size() == 5);           // every data token occurs
    CHECK(first_positions.count(0) == 1);     // positions are spread over the span
    CHECK(first_positions.size() >= 5);
    // same seed → same bits; the generator advances, so the next batch differs
    Generator g2(1);
    Batch b2 = selective_copying(c, g2, B);
    CHECK(ids_of(b2.input_ids) == x);
    CHECK(ids_of(b2.targets) == y);
    CHECK(ids_of(selective_copying(c, g2, B).input_ids) != x);
    Generator g3(2);
    CHECK(ids_of(selective_copying(c, g3, B).input_ids) != x);
    // reverse + shift: same inputs, targets reversed and shifted by one data token (mod C)
    c.reverse = true;
    c.token_shift = 1;
    Generator g4(1);
    Batch rb = selective_copying(c, g4, B);
    CHECK(ids_of(rb.input_ids) == x);
    const auto ry = ids_of(rb.targets);
    for (int64_t r = 0; r < B; ++r)
        for (int64_t i = 0; i < 3; ++i) CHECK(ry[size_t(r * L + 10 + i)] == y[size_t(r * L + 12 - i)] % 5 + 1);
    // validation names the field and the fix
    c.num_memorize = 11;
    CHECK_THROWS_WITH_AS(c.validate(), doctest::Contains("span = 10 cannot hold num_memorize = 11"), Error);
    c.num_memorize = 3;
    c.num_tokens = 0;
    CHECK_THROWS_WITH_AS(selective_copying(c, g, 2), doctest::Contains("num_tokens = 0"), Error);
}

TEST_CASE("data: induction heads target the token after the first special token") {
    InductionHeadsConfig c;
    c.num_tokens = 6;
    c.seq_len = 8;
    CHECK(c.vocab_size() == 7);
    const int64_t B = 400, L = 8;
    Generator g(2);
    Batch b = induction_heads(c, g, B);
    const auto x = ids_of(b.input_ids), y = ids_of(b.targets);
    std::set<int64_t> trigger_positions;
    for (int64_t r = 0; r < B; ++r) {
        std::vector<int64_t> specials;
        for (int64_t t = 0; t < L; ++t) {
            if (x[size_t(r * L + t)] == 6) specials.push_back(t);
            CHECK((x[size_t(r * L + t)] >= 0 && x[size_t(r * L + t)] <= 6));
            if (t < L - 1) CHECK(y[size_t(r * L + t)] == kIgnoreIndex);
        }
        REQUIRE(specials.size() == 2);  // once inside, once at the end
        CHECK(specials[1] == L - 1);
        CHECK(specials[0] <= L - 3);
        trigger_positions.insert(specials[0]);
        CHECK(y[size_t(r * L + L - 1)] == x[size_t(r * L + specials[0] + 1)]);
    }
    CHECK(trigger_positions.size() == 6);  // p covers [0, L − 3]
    Generator g2(2);
    CHECK(ids_of(induction_heads(c, g2, B).input_ids) == x);
    c.seq_len = 3;
    CHECK_THROWS_WITH_AS(c.validate(), doctest::Contains("seq_len = 3"), Error);
}

TEST_CASE("data: associative recall targets the queried key's value") {
    AssociativeRecallConfig c;
    c.num_tokens = 20;
    c.num_pairs = 4;
    CHECK(c.seq_len() == 9);
    CHECK(c.vocab_size() == 20);
    const int64_t B = 200, L = 9;
    Generator g(3);
    Batch b = associative_recall(c, g, B);
    const auto x = ids_of(b.input_ids), y = ids_of(b.targets);
    std::set<int64_t> query_slots;
    for (int64_t r = 0; r < B; ++r) {
        std::set<int64_t> keys;
        int64_t value = -1;
        for (int64_t k = 0; k < 4; ++k) {
            const int64_t key = x[size_t(r * L + 2 * k)], v = x[size_t(r * L + 2 * k + 1)];
            CHECK((key >= 0 && key < 10));
            CHECK((v >= 10 && v < 20));
            keys.insert(key);
            if (key == x[size_t(r * L + 8)]) {
                value = v;
                query_slots.insert(k);
            }
        }
        CHECK(keys.size() == 4);  // distinct keys
        CHECK(y[size_t(r * L + 8)] == value);
        for (int64_t t = 0; t < 8; ++t) CHECK(y[size_t(r * L + t)] == kIgnoreIndex);
    }
    CHECK(query_slots.size() == 4);
    Generator g2(3);
    CHECK(ids_of(associative_recall(c, g2, B).targets) == y);
    c.num_tokens = 21;
    CHECK_THROWS_WITH_AS(c.validate(), doctest::Contains("must be even"), Error);
    c.num_tokens = 6;
    CHECK_THROWS_WITH_AS(c.validate(), doctest::Contains("num_pairs = 4"), Error);
}

TEST_CASE("data: synthetic tasks by name, from JSON, and target accuracy") {
    SyntheticTask ih = SyntheticTask::from_json({{"name", "induction_heads"}, {"num_tokens", 6}, {"span", 16}});
    CHECK(ih.vocab_size() == 7);
    CHECK(ih.seq_len() == 16);
    Generator g1(9), g2(9);
    InductionHeadsConfig ic;
    ic.num_tokens = 6;
    ic.seq_len = 16;
    CHECK(ids_of(ih.sample(g1, 3).input_ids) == ids_of(induction_heads(ic, g2, 3).input_ids));
    SyntheticTask ar = SyntheticTask::from_json({{"name", "associative_recall"}, {"num_tokens", 20}, {"num_memorize", 4}});
    CHECK(ar.seq_len() == 9);
    CHECK(ar.sample(g1, 2).targets.shape() == Shape{2, 9});
    CHECK(SyntheticTask::from_json(ar.to_json()).to_json() == ar.to_json());
    CHECK_THROWS_WITH_AS(SyntheticTask::from_json({{"name", "copying"}}),
                         doctest::Contains("unknown task \"copying\""), Error);
    CHECK_THROWS_WITH_AS(SyntheticTask::from_json({{"spam", 1}}),
                         doctest::Contains("unknown task field \"spam\""), Error);
    CHECK_THROWS_WITH_AS(SyntheticTask::from_json({{"span", "x"}}), doctest::Contains("\"span\" must be an integer"), Error);
    // 2.5 was truncated and 1e30 converted with undefined behaviour (to a negative span); a float 24.0 is 24
    for (double bad : {24.5, 1e30})
        CHECK_THROWS_WITH_AS(SyntheticTask::from_json({{"span", bad}}), doctest::Contains("\"span\" must be an integer"),
                             Error);
    CHECK(SyntheticTask::from_json({{"span", 24.0}}).span == 24);
    CHECK_THROWS_WITH_AS(SyntheticTask::from_json({{"reverse", 1}}), doctest::Contains("must be true or false"), Error);
    CHECK_THROWS_WITH_AS(SyntheticTask::from_json({{"span", nullptr}}), doctest::Contains("is null"), Error);
    CHECK_THROWS_WITH_AS(SyntheticTask::from_json({{"name", "induction_heads"}, {"reverse", true}}),
                         doctest::Contains("selective_copying only"), Error);
    // accuracy counts argmax hits on target positions only
    Tensor logits = Tensor::from_vector<float>({0, 1, 0, /**/ 5, 0, 0, /**/ 0, 0, 1, /**/ 1, 0, 0}, {2, 2, 3});
    Tensor targets = Tensor::from_vector<int64_t>({1, kIgnoreIndex, 0, 2}, {2, 2});
    CHECK(target_accuracy(logits, targets) == doctest::Approx(1.0 / 3));
}

// ------------------------------------------------------------------------------------------------ BPE tokenizer


TEST_CASE("data: GPT-2 pre-tokenization pieces") {
    using V = std::vector<std::string>;
    CHECK(gpt2_pretokenize("It's 1999!  Ok\n") == V{"It", "'s", " 1999", "!", " ", " Ok", "\n"});
    CHECK(gpt2_pretokenize("we'll've 'S x''d") == V{"we", "'ll", "'ve", " '", "S", " x", "''", "d"});
    CHECK(gpt2_pretokenize("a \n\n b   ") == V{"a", " \n\n", " b", "   "});
    CHECK(gpt2_pretokenize("ΑΒΓ δ Привет 東京x٣٤ ½") == V{"ΑΒΓ", " δ", " Привет", " 東京x", "٣٤", " ½"});
    CHECK(gpt2_pretokenize("e\xCC\x81t\xC2\xA0") == V{"e", "\xCC\x81", "t", "\xC2\xA0"});  // combining mark; NBSP
    CHECK(gpt2_pretokenize("a\xFF\xFE b") == V{"a", "\xFF\xFE", " b"});                  // invalid bytes: "other"
    CHECK(gpt2_pretokenize("").empty());
}

TEST_CASE("data: BPE tokenizer exact ids on a tiny tokenizer.json") {
    const auto dir = scratch_dir("data_bpe");
    BpeTokenizer tok = BpeTokenizer::from_file(write_tokenizer(dir, tiny_tokenizer_json()));
    CHECK(tok.vocab_size() == 301);
    CHECK(tok.num_merges() == 11);
    CHECK(tok.token_to_id("Ġthe") == 258);
    CHECK(tok.token_to_id("<|endoftext|>") == 300);
    CHECK(tok.token_to_id("nope") == -1);
    // "Hello": l+l, then e+ll; " the": Ġ+t, h+e, Ġt+he; " world": Ġ+w, o+r, Ġw+or
    CHECK(tok.encode("Hello the world") == std::vector<int64_t>{72, 260, 111, 258, 263, 108, 100});
    // the special token is cut out before pre-tokenization; "  x" is " " + " x"
    CHECK(tok.encode("the<|endoftext|>  x") == std::vector<int64_t>{116, 257, 300, 32, 32, 120});
    // equal ranks merge leftmost first: ĠĠ Ġ, not Ġ ĠĠ
    CHECK(tok.encode("   \n") == std::vector<int64_t>{265, 32, 10});
    CHECK(tok.encode("café 1999") == std::vector<int64_t>{99, 97, 102, 264, 32, 266, 57, 57});
    CHECK(tok.encode("").empty());
    CHECK(tok.decode({258, 300, 264}) == " the<|endoftext|>é");
    CHECK(tok.token_bytes(264) == 2);
    CHECK(tok.token_bytes(300) == 13);
    CHECK_THROWS_WITH_AS(tok.decode({299}), doctest::Contains("token id 299 is not in the vocabulary"), Error);
    // add_prefix_space puts a space before text that does not start with one
    nlohmann::json j = tiny_tokenizer_json();
    j["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", {{{"type", "ByteLevel"}, {"add_prefix_space", true}}}}};
    CHECK(BpeTokenizer::from_json(j).encode("the") == std::vector<int64_t>{258});
}

TEST_CASE("data: BPE tokenizer round-trips mixed text and arbitrary bytes") {
    BpeTokenizer tok = BpeTokenizer::from_json(tiny_tokenizer_json());
    const std::vector<std::string> texts = {
        "Hello, wörld! Ünïcödé — naïve café, résumé; ΑΒΓ δ, Привет мир; 東京タワー 서울 🙂🎉👩‍👩‍👧\n",
        "\n\n\tTabs\tand   spaces   \r\n end   ", "   ", "It's 1999's 'quote' I'M", "<|endoftext|>x<|endoftext|>",
    };
    const char raw[] = "bytes \xFF\xFE\x80 and \xE2\x82 cut\0zero";
    std::vector<std::string> all = texts;
    all.push_back(std::string(raw, sizeof raw - 1));  // not UTF-8, with a NUL inside
    for (const std::string& s : all) {
        const auto ids = tok.encode(s);
        CHECK(tok.decode(ids) == s);
        int64_t bytes = 0;
        for (int64_t id : ids) bytes += tok.token_bytes(id);
        CHECK(bytes == int64_t(s.size()));
    }
    CHECK(tok.encode(texts[0]).size() < texts[0].size());  // the merges do fire on real text
}

TEST_CASE("data: BPE tokenizer errors") {
    const auto dir = scratch_dir("data_bpe_err");
    CHECK_THROWS_WITH_AS(BpeTokenizer::from_file((dir / "none.json").string()), doctest::Contains("not found"), Error);
    std::ofstream(dir / "bad.json") << "{\"model\": {\"type\": \"BPE\", ";
    CHECK_THROWS_WITH_AS(BpeTokenizer::from_file((dir / "bad.json").string()),
                         doctest::Contains("is not valid JSON"), Error);
    nlohmann::json j = tiny_tokenizer_json();
    j["model"]["type"] = "WordPiece";
    CHECK_THROWS_WITH_AS(BpeTokenizer::from_json(j),
                         doctest::Contains("unsupported tokenizer model type \"WordPiece\""), Error);
    j = tiny_tokenizer_json();
    j["model"]["merges"].push_back("z q");
    CHECK_THROWS_WITH_AS(BpeTokenizer::from_json(j),
                         doctest::Contains("\"zq\", which is not in the vocabulary"), Error);
    j = tiny_tokenizer_json();
    j["model"]["vocab"].erase("Ġ");
    CHECK_THROWS_WITH_AS(BpeTokenizer::from_json(j), doctest::Contains("lacks the byte-level symbol"), Error);
    j = tiny_tokenizer_json();
    j["pre_tokenizer"] = {{"type", "Metaspace"}};
    CHECK_THROWS_WITH_AS(BpeTokenizer::from_json(j), doctest::Contains("unsupported pre_tokenizer"), Error);
    j = tiny_tokenizer_json();
    j["model"]["vocab"]["he"] = "x";
    CHECK_THROWS_WITH_AS(BpeTokenizer::from_json(j), doctest::Contains("malformed tokenizer.json"), Error);
}

// ------------------------------------------------------------------------------------------------ token streams

TEST_CASE("data: byte text split, random training windows and sequential evaluation windows") {
    const auto dir = scratch_dir("data_text");
    std::string text;
    for (int i = 0; i < 200; ++i) text += char('a' + (i * 7) % 26);
    text += std::string(50, 'Z');
    std::ofstream(dir / "t.txt", std::ios::binary) << text;
    TokenDataset d = TokenDataset::from_bytes_file((dir / "t.txt").string(), 0.2);
    CHECK(d.vocab_size == 256);
    CHECK(d.train.size() == 200);
    CHECK(d.val == std::vector<int64_t>(50, 'Z'));
    Generator g(3);
    Batch b = d.sample(g, 6, 8);
    CHECK(b.input_ids.shape() == Shape{6, 8});
    const auto x = ids_of(b.input_ids), y = ids_of(b.targets);
    for (int64_t r = 0; r < 6; ++r) {  // a window of the training text; targets are the next tokens
        const int64_t start = int64_t(d.train.size());
        int64_t s = -1;
        for (int64_t k = 0; k + 8 < start && s < 0; ++k)
            if (std::equal(x.begin() + r * 8, x.begin() + r * 8 + 8, d.train.begin() + k)) s = k;
        REQUIRE(s >= 0);
        for (int64_t t = 0; t < 8; ++t) CHECK(y[size_t(r * 8 + t)] == d.train[size_t(s + t + 1)]);
    }
    Generator g2(3);
    CHECK(ids_of(d.sample(g2, 6, 8).input_ids) == x);
    // evaluation: (50 − 1) / 8 = 6 windows starting at 0, 8, ..., 40, in batches of 4
    std::ofstream(dir / "u.txt", std::ios::binary) << text.substr(0, 150) + "0123456789012345678901234567890123456789!?";
    TokenDataset e = TokenDataset::from_bytes_file((dir / "u.txt").string(), 0.25);
    REQUIRE(e.val.size() == 48);
    auto vb = e.eval_batches(4, 8);
    REQUIRE(vb.size() == 2);
    CHECK(vb[0].input_ids.shape() == Shape{4, 8});
    CHECK(vb[1].input_ids.shape() == Shape{1, 8});  // 47 / 8 = 5 windows
    const auto ex = ids_of(vb[0].input_ids), ey = ids_of(vb[0].targets);
    for (int64_t w = 0; w < 4; ++w)
        for (int64_t t = 0; t < 8; ++t) {
            CHECK(ex[size_t(w * 8 + t)] == e.val[size_t(w * 8 + t)]);
            CHECK(ey[size_t(w * 8 + t)] == e.val[size_t(w * 8 + t + 1)]);
        }
    CHECK(e.eval_batches(4, 8, 1).size() == 1);
    std::ofstream(dir / "empty.txt") << "";
    CHECK_THROWS_WITH_AS(TokenDataset::from_bytes_file((dir / "empty.txt").string(), 0.1),
                         doctest::Contains("is empty"), Error);
    CHECK_THROWS_WITH_AS(TokenDataset::from_bytes_file((dir / "none.txt").string(), 0.1),
                         doctest::Contains("no such file"), Error);
    CHECK_THROWS_WITH_AS(d.eval_batches(1, 64),
                         doctest::Contains("validation split has 50 tokens, fewer than one window"), Error);
    CHECK_THROWS_WITH_AS(d.sample(g, 1, 200), doctest::Contains("training split has 200 tokens"), Error);
    CHECK_THROWS_WITH_AS(TokenDataset::from_bytes_file((dir / "t.txt").string(), 0.0),
                         doctest::Contains("(0, 1)"), Error);
    CHECK_THROWS_WITH_AS(TokenDataset::from_ids({1, 2, 3}, 0.5, 4, "tiny"),
                         doctest::Contains("at least one window"), Error);
    CHECK(bits_per_byte(std::log(2.0), 7, 7) == doctest::Approx(1.0));
    CHECK(bits_per_byte(2.0, 10, 40) == doctest::Approx(2.0 * 10 / (std::log(2.0) * 40)));
    CHECK(d.token_bytes == std::vector<int64_t>(256, 1));  // a byte is a byte
}

TEST_CASE("data: token ids from safetensors and BPE-encoded text") {
    const auto dir = scratch_dir("data_tokens");
    const std::string p32 = (dir / "ids32.safetensors").string(), p64 = (dir / "ids64.safetensors").string();
    std::vector<int32_t> v32;
    for (int i = 0; i < 20; ++i) v32.push_back(i % 9);
    save_safetensors(p32, {{"input_ids", Tensor::from_vector<int32_t>(v32, {4, 5})}});
    TokenDataset s = TokenDataset::from_safetensors(p32, 0.25, 10);
    CHECK(s.train == std::vector<int64_t>(v32.begin(), v32.begin() + 15));  // [4, 5] flattened row by row
    CHECK(s.val == std::vector<int64_t>(v32.begin() + 15, v32.end()));
    CHECK(s.vocab_size == 10);
    CHECK(TokenDataset::from_safetensors(p32, 0.25).vocab_size == 9);  // max id + 1
    save_safetensors(p64, {{"input_ids", Tensor::from_vector<int64_t>({5, 1, 4, 1, 5, 9}, {6})},
                           {"other", Tensor::zeros({1})}});
    CHECK(TokenDataset::from_safetensors(p64, 0.5).train == std::vector<int64_t>{5, 1, 4});
    CHECK_THROWS_WITH_AS(TokenDataset::from_safetensors(p32, 0.25, 5),
                         doctest::Contains("outside the model's vocabulary of 5"), Error);
    save_safetensors((dir / "f.safetensors").string(), {{"input_ids", Tensor::zeros({4})}});
    CHECK_THROWS_WITH_AS(TokenDataset::from_safetensors((dir / "f.safetensors").string(), 0.5),
                         doctest::Contains("I64 or I32"), Error);
    save_safetensors((dir / "n.safetensors").string(), {{"tokens", Tensor::from_vector<int64_t>({1, 2}, {2})}});
    CHECK_THROWS_WITH_AS(TokenDataset::from_safetensors((dir / "n.safetensors").string(), 0.5),
                         doctest::Contains("no tensor \"input_ids\" (it holds: tokens)"), Error);

    BpeTokenizer tok = BpeTokenizer::from_json(tiny_tokenizer_json());
    std::string text;
    for (int i = 0; i < 30; ++i) text += "Hello the world, café 1999!\n";
    std::ofstream(dir / "t.txt", std::ios::binary) << text;
    TokenDataset b = TokenDataset::from_bpe_file((dir / "t.txt").string(), tok, 0.1);
    CHECK(b.vocab_size == 301);
    std::vector<int64_t> all = b.train;
    all.insert(all.end(), b.val.begin(), b.val.end());
    CHECK(all == tok.encode(text));
    CHECK(tok.decode(b.train) + tok.decode(b.val) == text);
    // bits per byte count the bytes of the targets evaluated (until 2026-12-07: the whole validation split's mean
    // bytes per token, whichever windows were evaluated): the targets of window w are val[w·L + 1 .. w·L + L]
    const std::vector<Batch> windows = b.eval_batches(2, 5, 1);
    REQUIRE(windows.size() == 1);
    const std::vector<int64_t> targets(b.val.begin() + 1, b.val.begin() + 11);
    CHECK(b.target_bytes(windows[0]) == int64_t(tok.decode(targets).size()));
    CHECK(b.target_bytes(windows[0]) > 13);  // BPE: more bytes than tokens
    TokenDataset ids = TokenDataset::from_ids(targets, 0.5, 301, "ids");
    CHECK_THROWS_WITH_AS(ids.target_bytes(windows[0]), doctest::Contains("bytes of its tokens are unknown"), Error);
    Generator g(4);
    CHECK(b.sample(g, 2, 16).input_ids.shape() == Shape{2, 16});
}

// ------------------------------------------------------------------------------------------------ IDX

namespace {
std::vector<uint8_t> idx_bytes(uint32_t magic, std::vector<uint32_t> dims, const std::vector<uint8_t>& payload) {
    std::vector<uint8_t> b;
    auto put = [&](uint32_t v) { for (int s = 24; s >= 0; s -= 8) b.push_back(uint8_t(v >> s)); };
    put(magic);
    for (uint32_t d : dims) put(d);
    b.insert(b.end(), payload.begin(), payload.end());
    return b;
}
void write_file(const std::filesystem::path& p, const std::vector<uint8_t>& b, bool gz) {
    if (gz) {
        gzFile f = gzopen(p.string().c_str(), "wb");
        REQUIRE(f != nullptr);
        REQUIRE(gzwrite(f, b.data(), unsigned(b.size())) == int(b.size()));
        gzclose(f);
    } else {
        std::ofstream(p, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
    }
}
// 6 images of 2x3 pixels, pixel (k, r, c) = 40k + 3r + c; labels 0 5 7 5 9 1.
std::vector<uint8_t> image_payload() {
    std::vector<uint8_t> p;
    for (int k = 0; k < 6; ++k)
        for (int i = 0; i < 6; ++i) p.push_back(uint8_t(40 * k + i));
    return p;
}
const std::vector<uint8_t> kLabels = {0, 5, 7, 5, 9, 1};
}  // namespace

TEST_CASE("data: IDX images plain and gzipped as pixel, row and permuted sequences") {
    const auto dir = scratch_dir("data_idx");
    for (bool gz : {false, true}) {
        CAPTURE(gz);
        const std::string sfx = gz ? ".gz" : "";
        write_file(dir / ("t10k-images-idx3-ubyte" + sfx), idx_bytes(0x803, {6, 2, 3}, image_payload()), gz);
        write_file(dir / ("t10k-labels-idx1-ubyte" + sfx), idx_bytes(0x801, {6}, kLabels), gz);
        ImageViewOptions o;
        o.order = "row";
        ImageSequences s = load_fashion_mnist(dir.string(), "test", o);
        CHECK(s.inputs.shape() == Shape{6, 2, 3});  // L = rows, d = cols
        CHECK(s.inputs.dtype() == DType::F32);
        CHECK(s.labels.to_vector<int64_t>() == std::vector<int64_t>{0, 5, 7, 5, 9, 1});
        CHECK(s.num_classes == 10);
        const auto rows = s.inputs.to_vector<float>();
        for (int k = 0; k < 6; ++k)
            for (int i = 0; i < 6; ++i) CHECK(rows[size_t(k * 6 + i)] == doctest::Approx((40 * k + i) / 255.0));
        o.order = "pixel";
        ImageSequences px = load_fashion_mnist(dir.string(), "test", o);
        CHECK(px.inputs.shape() == Shape{6, 6, 1});
        CHECK(px.inputs.to_vector<float>() == rows);
        // class filter: keep 5 and 9, renumbered 0 and 1
        o.classes = {5, 9};
        ImageSequences f = load_fashion_mnist(dir.string(), "test", o);
        CHECK(f.inputs.shape() == Shape{3, 6, 1});
        CHECK(f.labels.to_vector<int64_t>() == std::vector<int64_t>{0, 0, 1});
        CHECK(f.num_classes == 2);
        CHECK(f.inputs.to_vector<float>()[0] == doctest::Approx(40 / 255.0));
        o.classes = {9, 5};
        CHECK(load_fashion_mnist(dir.string(), "test", o).labels.to_vector<int64_t>() == std::vector<int64_t>{1, 1, 0});
        o.classes = {};
        o.limit = 2;
        CHECK(load_fashion_mnist(dir.string(), "test", o).inputs.size(0) == 2);
        o.limit = 0;
        // permuted: one fixed permutation of the pixels, the same for every image and every load
        o.order = "permuted";
        o.permutation_seed = 7;
        const auto p1 = load_fashion_mnist(dir.string(), "test", o).inputs.to_vector<float>();
        CHECK(load_fashion_mnist(dir.string(), "test", o).inputs.to_vector<float>() == p1);
        CHECK(p1 != rows);
        std::vector<int> perm;
        for (int i = 0; i < 6; ++i) perm.push_back(int(std::lround(p1[size_t(i)] * 255)));
        CHECK(std::set<int>(perm.begin(), perm.end()).size() == 6);
        for (int k = 0; k < 6; ++k)
            for (int i = 0; i < 6; ++i) CHECK(p1[size_t(k * 6 + i)] == doctest::Approx((40 * k + perm[size_t(i)]) / 255.0));
        std::filesystem::remove(dir / ("t10k-images-idx3-ubyte" + sfx));
        std::filesystem::remove(dir / ("t10k-labels-idx1-ubyte" + sfx));
    }
}

TEST_CASE("data: damaged IDX files are one clear error each") {
    const auto dir = scratch_dir("data_idx_bad");
    CHECK_THROWS_WITH_AS(load_fashion_mnist(dir.string(), "train"),
                         doctest::Contains("train-images-idx3-ubyte.gz"), Error);
    CHECK_THROWS_WITH_AS(load_fashion_mnist(dir.string(), "train"), doctest::Contains("--data DIR"), Error);
    CHECK_THROWS_WITH_AS(load_fashion_mnist(dir.string(), "valid"), doctest::Contains("train or test"), Error);
    write_file(dir / "bad_magic", idx_bytes(0x802, {1, 2, 2}, {0, 0, 0, 0}), false);
    CHECK_THROWS_WITH_AS(read_idx_images((dir / "bad_magic").string()),
                         doctest::Contains("wrong magic number 0x802"), Error);
    CHECK_THROWS_WITH_AS(read_idx_labels((dir / "bad_magic").string()), doctest::Contains("wrong magic number"), Error);
    write_file(dir / "short.gz", idx_bytes(0x803, {10, 28, 28}, std::vector<uint8_t>(100, 1)), true);
    CHECK_THROWS_WITH_AS(read_idx_images((dir / "short.gz").string()), doctest::Contains("truncated"), Error);
    write_file(dir / "short_labels", idx_bytes(0x801, {10}, {1, 2, 3}), false);
    CHECK_THROWS_WITH_AS(read_idx_labels((dir / "short_labels").string()),
                         doctest::Contains("promises 10 labels"), Error);
    write_file(dir / "tiny", {0, 0, 8}, false);
    CHECK_THROWS_WITH_AS(read_idx_labels((dir / "tiny").string()), doctest::Contains("truncated IDX header"), Error);
    CHECK_THROWS_WITH_AS(read_idx_images((dir / "none").string()), doctest::Contains("no such file"), Error);
    write_file(dir / "ok", idx_bytes(0x803, {2, 1, 1}, {0, 255}), false);
    IdxImages im = read_idx_images((dir / "ok").string());
    CHECK(im.count == 2);
    CHECK_THROWS_WITH_AS(image_sequences(im, {1}, {}), doctest::Contains("count mismatch"), Error);
    CHECK_THROWS_WITH_AS(image_sequences(im, {1, 12}, {}), doctest::Contains("out of range"), Error);
    ImageViewOptions o;
    o.classes = {3, 3};
    CHECK_THROWS_WITH_AS(image_sequences(im, {1, 2}, o), doctest::Contains("listed twice"), Error);
    o.classes = {7};
    CHECK_THROWS_WITH_AS(image_sequences(im, {1, 2}, o), doctest::Contains("no examples left"), Error);
    // a gzip stream cut short
    write_file(dir / "cut.gz", idx_bytes(0x801, {2000}, std::vector<uint8_t>(2000, 3)), true);
    std::filesystem::resize_file(dir / "cut.gz", std::filesystem::file_size(dir / "cut.gz") - 12);
    CHECK_THROWS_WITH_AS(read_idx_labels((dir / "cut.gz").string()), doctest::Contains("truncated gzip data"), Error);
}

TEST_CASE("data: accuracy, macro-F1 and MCC as scikit-learn computes them") {
    // 3 classes: confusion rows (truth) [1 1 0], [0 2 0], [1 0 2]
    auto m = data::classification_metrics({0, 1, 1, 1, 2, 0, 2}, {0, 0, 1, 1, 2, 2, 2});
    CHECK(m.at("accuracy") == doctest::Approx(5.0 / 7));
    CHECK(m.at("macro_f1") == doctest::Approx((0.5 + 0.8 + 0.8) / 3));  // 2tp / (2tp + fp + fn) per class
    CHECK(m.at("mcc") == doctest::Approx(19.0 / 32));                   // (5·7 − 16) / √((49 − 17)(49 − 17))
    // scikit-learn's documented examples: f1_score(..., average="macro") = 0.2667, matthews_corrcoef = −0.3333
    CHECK(data::classification_metrics({0, 2, 1, 0, 0, 1}, {0, 1, 2, 0, 1, 2}).at("macro_f1") == doctest::Approx(0.26666667));
    CHECK(data::classification_metrics({1, -1, 1, 1}, {1, 1, 1, -1}).at("mcc") == doctest::Approx(-1.0 / 3));
    // a prediction outside the truth's classes is a label of its own; one predicted label: MCC 0
    m = data::classification_metrics({0, 0, 7}, {0, 1, 1});
    CHECK(m.at("macro_f1") == doctest::Approx((2.0 / 3 + 0 + 0) / 3));
    CHECK(data::classification_metrics({1, 1, 1}, {0, 1, 1}).at("mcc") == 0.0);
    CHECK(data::classification_metrics({0, 1}, {0, 1}).at("mcc") == 1.0);
    CHECK_THROWS_AS(data::classification_metrics({0}, {0, 1}), Error);
}

namespace {

// 16 images of 2x3 pixels in IDX files (train and test the same): class 0 dark (intensities 0..15), class 1
// bright (240..255), alternating.
void write_dark_bright_images(const std::filesystem::path& dir) {
    std::vector<uint8_t> pixels, labels;
    for (int k = 0; k < 16; ++k) {
        labels.push_back(uint8_t(k % 2));
        for (int i = 0; i < 6; ++i) pixels.push_back(uint8_t(k % 2 ? 240 + (k + i) % 16 : (k + i) % 16));
    }
    for (const char* split : {"train", "t10k"}) {
        write_file(dir / (std::string(split) + "-images-idx3-ubyte"), idx_bytes(0x803, {16, 2, 3}, pixels), false);
        write_file(dir / (std::string(split) + "-labels-idx1-ubyte"), idx_bytes(0x801, {16}, labels), false);
    }
}

// A metric (accuracy by default) of the last evaluation in a run's metrics.jsonl.
double last_eval_accuracy(const std::filesystem::path& run, const std::string& metric = "accuracy") {
    nlohmann::json last;
    std::ifstream log(run / "metrics.jsonl");
    for (std::string line; std::getline(log, line);) {
        auto j = nlohmann::json::parse(line);
        if (j.contains("split")) last = j;
    }
    INFO("final eval: " << last.dump());
    REQUIRE(last.contains(metric));
    return last[metric].get<double>();
}

}  // namespace

TEST_CASE("data: Mamba and Longhorn read Fashion-MNIST as pixel tokens and learn the class token") {
    const auto dir = scratch_dir("data_idx_tokens");
    write_dark_bright_images(dir);
    for (const char* type : {"mamba", "longhorn"}) {
        const auto out = dir / type;
        REQUIRE(cli({"train", "--model-type", type, "--data", dir.string(), "--steps", "60", "--lr", "0.01", "--set",
                     "data.order=pixel,train.batch_size=8,train.eval_batches=1,train.warmup_steps=0", "--out",
                     out.string(), "--quiet"}) == 0);
        const auto rc = nlohmann::json::parse(std::ifstream(out / "run_config.json"));
        CHECK(rc["model"]["model_type"] == type);
        CHECK(rc["model"]["vocab_size"] == 256 + 10);  // pixel levels + the 10 Fashion-MNIST class tokens
        INFO(type);
        CHECK(last_eval_accuracy(out) == 1.0);  // dark vs bright, read from the last pixel's logits
        CHECK(last_eval_accuracy(out, "macro_f1") == 1.0);
        CHECK(last_eval_accuracy(out, "mcc") == 1.0);
    }
    // row order gives 3 features per step, which a token model cannot read
    CHECK(cli({"eval", "--model", (dir / "mamba" / "model").string(), "--data", dir.string(), "--set",
               "data.order=row"}) == 1);
}

TEST_CASE("data: Mamba and Longhorn frame models read Fashion-MNIST rows, fine-tune and evaluate") {
    const auto dir = scratch_dir("data_idx_frames");
    write_dark_bright_images(dir);
    for (const char* type : {"mamba", "longhorn"}) {
        INFO(type);
        const auto out = dir / type;
        REQUIRE(cli({"train", "--model-type", type, "--data", dir.string(), "--steps", "40", "--lr", "0.01", "--set",
                     "data.order=row,train.batch_size=8,train.eval_batches=1,train.warmup_steps=0", "--out",
                     out.string(), "--quiet"}) == 0);
        const auto rc = nlohmann::json::parse(std::ifstream(out / "run_config.json"));
        CHECK(rc["model"]["model_type"] == type);
        CHECK(rc["model"]["input_size"] == 3);  // one row of 3 pixels per step
        CHECK(rc["model"]["vocab_size"] == 10);  // the class head
        CHECK(last_eval_accuracy(out) == 1.0);
        CHECK(last_eval_accuracy(out, "macro_f1") == 1.0);
        CHECK(last_eval_accuracy(out, "mcc") == 1.0);
        const std::string model = (out / "model").string();
        CHECK(cli({"eval", "--model", model, "--data", dir.string(), "--set", "data.order=row"}) == 0);
        // PEFT on a frame model: state offset (the default) and LoRA train, write adapters, and evaluate with them
        REQUIRE(cli({"finetune", "--model", model, "--data", dir.string(), "--steps", "3", "--set", "data.order=row",
                     "--out", (out / "ft").string(), "--quiet"}) == 0);
        REQUIRE(cli({"finetune", "--model", model, "--data", dir.string(), "--steps", "3", "--set", "data.order=row",
                     "--peft", R"({"peft_type": "LORA", "r": 2})", "--out", (out / "ft_lora").string(), "--quiet"}) == 0);
        CHECK(cli({"eval", "--model", model, "--adapter", (out / "ft_lora" / "adapter").string(), "--data",
                   dir.string(), "--set", "data.order=row"}) == 0);
        CHECK(cli({"inspect", "--model", model}) == 0);
        CHECK(cli({"gradcheck", "--model", model, "--max-per-tensor", "2"}) == 0);
        // pixel order gives 1 feature per step; this model reads 3
        CHECK(cli({"eval", "--model", model, "--data", dir.string(), "--set", "data.order=pixel"}) == 1);
        // a frame model cannot read token data, nor generate
        CHECK(cli({"eval", "--model", model, "--task", "selective_copying"}) == 1);
        CHECK(cli({"generate", "--model", model, "--prompt", "ab"}) == 1);
    }
}

TEST_CASE("data: --model-type over a model section of the other family keeps the default model and names the fields") {
    const auto dir = scratch_dir("data_idx_model_type");
    write_dark_bright_images(dir);
    std::ofstream(dir / "s4d.json") << R"({"model": {"model_type": "s4d", "d_model": 8, "n_layers": 1},
        "data": {"kind": "fashion_mnist", "order": "row"}, "train": {"steps": 1, "batch_size": 2, "eval_batches": 1}})";
    const auto out = dir / "mamba";
    const auto run = cli_captured({"train", "--config", (dir / "s4d.json").string(), "--data", dir.string(),
                                   "--model-type", "mamba", "--out", out.string(), "--quiet"}, 2);
    REQUIRE(run.first == 0);
    CHECK(run.second.find("warning: --model-type mamba leaves out the s4d model section's field(s) \"d_model\", "
                          "\"n_layers\"") != std::string::npos);
    const auto rc = nlohmann::json::parse(std::ifstream(out / "run_config.json"));
    CHECK(rc["model"]["model_type"] == "mamba");
    CHECK(rc["model"]["input_size"] == 3);  // the default frame model for row-order images
    CHECK_FALSE(rc["model"].contains("d_model"));
}
