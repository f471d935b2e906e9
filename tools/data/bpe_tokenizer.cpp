// Byte-level BPE (see bpe_tokenizer.h): tokenizer.json loading, GPT-2 pre-tokenization by hand, merge loop.
#include "tools/data/bpe_tokenizer.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <queue>
#include <sstream>

#include "engine/error.h"

namespace ssmtune::data {

using json = nlohmann::json;

namespace {

// ------------------------------------------------------------------------------------------ Unicode classes

struct Range {
    uint32_t lo, hi;
};
// General category L* (letters) and N* (numbers), exact per Unicode 14 inside the blocks named in the header.
const Range kLetters[] = {
    {0x41, 0x5A}, {0x61, 0x7A}, {0xAA, 0xAA}, {0xB5, 0xB5}, {0xBA, 0xBA}, {0xC0, 0xD6}, {0xD8, 0xF6}, {0xF8, 0x2C1},
    {0x2C6, 0x2D1}, {0x2E0, 0x2E4}, {0x2EC, 0x2EC}, {0x2EE, 0x2EE}, {0x370, 0x374}, {0x376, 0x377}, {0x37A, 0x37D},
    {0x37F, 0x37F}, {0x386, 0x386}, {0x388, 0x38A}, {0x38C, 0x38C}, {0x38E, 0x3A1}, {0x3A3, 0x3F5}, {0x3F7, 0x481},
    {0x48A, 0x52F}, {0x531, 0x556}, {0x559, 0x559}, {0x560, 0x588}, {0x5D0, 0x5EA}, {0x5EF, 0x5F2}, {0x620, 0x64A},
    {0x66E, 0x66F}, {0x671, 0x6D3}, {0x6D5, 0x6D5}, {0x6E5, 0x6E6}, {0x6EE, 0x6EF}, {0x6FA, 0x6FC}, {0x6FF, 0x6FF},
    {0x750, 0x77F}, {0x904, 0x939}, {0x93D, 0x93D}, {0x950, 0x950}, {0x958, 0x961}, {0x971, 0x97F}, {0xE01, 0xE30},
    {0xE32, 0xE33}, {0xE40, 0xE46}, {0x10A0, 0x10C5}, {0x10C7, 0x10C7}, {0x10CD, 0x10CD}, {0x10D0, 0x10FA},
    {0x10FC, 0x11FF}, {0x1C80, 0x1C88}, {0x1D00, 0x1DBF}, {0x1E00, 0x1F15}, {0x1F18, 0x1F1D}, {0x1F20, 0x1F45},
    {0x1F48, 0x1F4D}, {0x1F50, 0x1F57}, {0x1F59, 0x1F59}, {0x1F5B, 0x1F5B}, {0x1F5D, 0x1F5D}, {0x1F5F, 0x1F7D},
    {0x1F80, 0x1FB4}, {0x1FB6, 0x1FBC}, {0x1FBE, 0x1FBE}, {0x1FC2, 0x1FC4}, {0x1FC6, 0x1FCC}, {0x1FD0, 0x1FD3},
    {0x1FD6, 0x1FDB}, {0x1FE0, 0x1FEC}, {0x1FF2, 0x1FF4}, {0x1FF6, 0x1FFC}, {0x2071, 0x2071}, {0x207F, 0x207F},
    {0x2090, 0x209C}, {0x2102, 0x2102}, {0x2107, 0x2107}, {0x210A, 0x2113}, {0x2115, 0x2115}, {0x2119, 0x211D},
    {0x2124, 0x2124}, {0x2126, 0x2126}, {0x2128, 0x2128}, {0x212A, 0x212D}, {0x212F, 0x2139}, {0x213C, 0x213F},
    {0x2145, 0x2149}, {0x214E, 0x214E}, {0x2183, 0x2184}, {0x2C00, 0x2CE4}, {0x2CEB, 0x2CEE}, {0x2CF2, 0x2CF3},
    {0x2D00, 0x2D25}, {0x2D27, 0x2D27}, {0x2D2D, 0x2D2D}, {0x3005, 0x3006}, {0x3031, 0x3035}, {0x303B, 0x303C},
    {0x3041, 0x3096}, {0x309D, 0x309F}, {0x30A1, 0x30FA}, {0x30FC, 0x30FF}, {0x3105, 0x312F}, {0x3131, 0x318E},
    {0x31A0, 0x31BF}, {0x31F0, 0x31FF}, {0x3400, 0x4DBF}, {0x4E00, 0xA48C}, {0xA640, 0xA66E}, {0xA67F, 0xA69D},
    {0xA6A0, 0xA6E5}, {0xA717, 0xA71F}, {0xA722, 0xA788}, {0xA78B, 0xA7CA}, {0xA7D0, 0xA7D1}, {0xA7D3, 0xA7D3},
    {0xA7D5, 0xA7D9}, {0xA7F2, 0xA7FF}, {0xA960, 0xA97C}, {0xAB30, 0xAB5A}, {0xAB5C, 0xAB69}, {0xAC00, 0xD7A3},
    {0xD7B0, 0xD7C6}, {0xD7CB, 0xD7FB}, {0xF900, 0xFA6D}, {0xFA70, 0xFAD9}, {0xFB00, 0xFB06}, {0xFB13, 0xFB17},
    {0xFB1D, 0xFB1D}, {0xFB1F, 0xFB28}, {0xFB2A, 0xFB36}, {0xFB38, 0xFB3C}, {0xFB3E, 0xFB3E}, {0xFB40, 0xFB41},
    {0xFB43, 0xFB44}, {0xFB46, 0xFBB1}, {0xFBD3, 0xFD3D}, {0xFD50, 0xFD8F}, {0xFD92, 0xFDC7}, {0xFDF0, 0xFDFB},
    {0xFE70, 0xFE74}, {0xFE76, 0xFEFC}, {0xFF21, 0xFF3A}, {0xFF41, 0xFF5A}, {0xFF66, 0xFFBE}, {0xFFC2, 0xFFC7},
    {0xFFCA, 0xFFCF}, {0xFFD2, 0xFFD7}, {0xFFDA, 0xFFDC}, {0x20000, 0x2A6DF}, {0x2A700, 0x2B738}, {0x2B740, 0x2B81D},
    {0x2B820, 0x2CEA1}, {0x2CEB0, 0x2EBE0}, {0x2F800, 0x2FA1D}, {0x30000, 0x3134A}
};
const Range kNumbers[] = {
    {0x30, 0x39}, {0xB2, 0xB3}, {0xB9, 0xB9}, {0xBC, 0xBE}, {0x660, 0x669}, {0x6F0, 0x6F9}, {0x966, 0x96F},
    {0xE50, 0xE59}, {0x2070, 0x2070}, {0x2074, 0x2079}, {0x2080, 0x2089}, {0x2150, 0x2182}, {0x2185, 0x2189},
    {0x2460, 0x249B}, {0x24EA, 0x24FF}, {0x2776, 0x2793}, {0x2CFD, 0x2CFD}, {0x3007, 0x3007}, {0x3021, 0x3029},
    {0x3038, 0x303A}, {0x3192, 0x3195}, {0x3220, 0x3229}, {0x3248, 0x324F}, {0x3251, 0x325F}, {0x3280, 0x3289},
    {0x32B1, 0x32BF}, {0xA6E6, 0xA6EF}, {0xFF10, 0xFF19}, {0x1D7CE, 0x1D7FF}
};
constexpr uint32_t kInvalid = 0x110000;  // an invalid UTF-8 byte: neither letter, number nor space

template <size_t N>
bool in_table(const Range (&table)[N], uint32_t cp) {
    const Range* it = std::upper_bound(table, table + N, cp, [](uint32_t c, const Range& r) { return c < r.lo; });
    return it != table && cp <= (it - 1)->hi;
}
bool is_letter(uint32_t cp) { return in_table(kLetters, cp); }
bool is_number(uint32_t cp) { return in_table(kNumbers, cp); }
bool is_space(uint32_t cp) {  // Unicode White_Space
    return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
           cp == 0x3000;
}

// Decodes the code point starting at s[i] (n bytes available); `len` gets its byte length. Overlong forms,
// surrogates, values above U+10FFFF and truncated sequences decode as kInvalid of length 1.
uint32_t decode_utf8(const unsigned char* s, size_t n, size_t i, size_t& len) {
    const unsigned char b = s[i];
    len = 1;
    if (b < 0x80) return b;
    int extra = b >= 0xF0 && b <= 0xF4 ? 3 : b >= 0xE0 && b <= 0xEF ? 2 : b >= 0xC2 && b <= 0xDF ? 1 : -1;
    if (extra < 0 || i + size_t(extra) >= n) return kInvalid;
    uint32_t cp = b & (0x3F >> extra);
    for (int k = 1; k <= extra; ++k) {
        const unsigned char c = s[i + size_t(k)];
        if ((c & 0xC0) != 0x80) return kInvalid;
        cp = (cp << 6) | (c & 0x3F);
    }
    const uint32_t min_cp = extra == 1 ? 0x80 : extra == 2 ? 0x800 : 0x10000;
    if (cp < min_cp || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return kInvalid;
    len = size_t(extra) + 1;
    return cp;
}

// ------------------------------------------------------------------------------------------ byte-level alphabet

// GPT-2's bytes_to_unicode: printable bytes ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for themselves, the other 68
// bytes take U+0100.. in increasing byte order. byte_symbol(b) is the UTF-8 of that character.
struct ByteAlphabet {
    std::string symbol[256];
    std::unordered_map<uint32_t, uint8_t> byte_of;
    ByteAlphabet() {
        uint32_t next = 256;
        for (int b = 0; b < 256; ++b) {
            const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            const uint32_t cp = printable ? uint32_t(b) : next++;
            byte_of[cp] = uint8_t(b);
            symbol[b] = cp < 0x80 ? std::string(1, char(cp))
                                  : std::string{char(0xC0 | (cp >> 6)), char(0x80 | (cp & 0x3F))};
        }
    }
};
const ByteAlphabet& alphabet() {
    static const ByteAlphabet a;
    return a;
}

// The bytes a vocabulary token stands for; a token with a character outside the alphabet is taken literally
// (as HF's ByteLevel decoder does).
std::string token_to_bytes(const std::string& token) {
    const auto* s = reinterpret_cast<const unsigned char*>(token.data());
    std::string out;
    for (size_t i = 0; i < token.size();) {
        size_t len;
        const uint32_t cp = decode_utf8(s, token.size(), i, len);
        auto it = alphabet().byte_of.find(cp);
        if (it == alphabet().byte_of.end()) return token;
        out.push_back(char(it->second));
        i += len;
    }
    return out;
}

// ------------------------------------------------------------------------------------------ pre-tokenization

// End (code point index, exclusive) of the GPT-2 pattern's match starting at code point i.
size_t gpt2_match(const std::vector<uint32_t>& c, size_t i) {
    const size_t n = c.size();
    if (c[i] == '\'' && i + 1 < n) {  // 's 't 're 've 'm 'll 'd (case-sensitive, as in GPT-2)
        const uint32_t a = c[i + 1];
        if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
        if (i + 2 < n) {
            const uint32_t b = c[i + 2];
            if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
        }
    }
    const size_t k = i + (c[i] == ' ' ? 1 : 0);  // the optional leading space of the next three alternatives
    if (k < n && !is_space(c[k])) {
        bool (*same)(uint32_t) = is_letter(c[k])   ? +[](uint32_t x) { return is_letter(x); }
                                 : is_number(c[k]) ? +[](uint32_t x) { return is_number(x); }
                                                   : +[](uint32_t x) { return !is_space(x) && !is_letter(x) &&
                                                                              !is_number(x); };
        size_t j = k + 1;
        while (j < n && same(c[j])) ++j;
        return j;
    }
    size_t j = i;  // whitespace: \s+(?!\S) backs off one character before a non-space, else \s+
    while (j < n && is_space(c[j])) ++j;
    if (j == n || j - i == 1) return j;
    return j - 1;
}

bool is_word_cp(uint32_t cp) { return cp == '_' || is_letter(cp) || is_number(cp); }

// The code point that ends just before byte `pos` (kInvalid at the start).
uint32_t cp_before(const std::string& s, size_t pos, size_t& start) {
    if (pos == 0) return start = 0, kInvalid;
    start = pos - 1;
    while (start > 0 && pos - start < 4 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
    size_t len;
    const uint32_t cp = decode_utf8(reinterpret_cast<const unsigned char*>(s.data()), s.size(), start, len);
    if (start + len != pos) return start = pos - 1, kInvalid;
    return cp;
}

uint32_t cp_at(const std::string& s, size_t pos, size_t& len) {
    if (pos >= s.size()) return len = 0, kInvalid;
    return decode_utf8(reinterpret_cast<const unsigned char*>(s.data()), s.size(), pos, len);
}

[[noreturn]] void fail_format(const std::string& source, const std::string& what) {
    SSMTUNE_FAIL(source, ": ", what, "; fix: give the tokenizer.json of a byte-level BPE model (GPT-2 / GPT-NeoX "
                 "kind, e.g. the one shipped with state-spaces/mamba-130m-hf)");
}

}  // namespace

std::vector<std::string> gpt2_pretokenize(const std::string& text) {
    std::vector<uint32_t> cps;
    std::vector<size_t> offset;
    const auto* s = reinterpret_cast<const unsigned char*>(text.data());
    for (size_t i = 0; i < text.size();) {
        size_t len;
        cps.push_back(decode_utf8(s, text.size(), i, len));
        offset.push_back(i);
        i += len;
    }
    offset.push_back(text.size());
    std::vector<std::string> pieces;
    for (size_t i = 0; i < cps.size();) {
        const size_t j = gpt2_match(cps, i);
        pieces.push_back(text.substr(offset[i], offset[j] - offset[i]));
        i = j;
    }
    return pieces;
}

// ------------------------------------------------------------------------------------------ loading

BpeTokenizer BpeTokenizer::from_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    SSMTUNE_CHECK(in.good(), "tokenizer file ", path, " ", std::filesystem::exists(path) ? "cannot be read" : "not found",
                  "; fix: pass the tokenizer.json that comes with the model (e.g. state-spaces/mamba-130m-hf)");
    std::stringstream ss;
    ss << in.rdbuf();
    json j;
    try {
        j = json::parse(ss.str());
    } catch (const json::exception& e) {  // parse_error, and out_of_range for numbers beyond double
        SSMTUNE_FAIL(path, " is not valid JSON (", e.what(), "); fix: a tokenizer.json file as saved by Hugging Face "
                     "tokenizers");
    }
    return from_json(j, path);
}

BpeTokenizer BpeTokenizer::from_json(const json& j, const std::string& source) {
    BpeTokenizer t;
    t.source_ = source;
    try {
        if (!j.is_object() || !j.contains("model") || !j["model"].is_object()) fail_format(source, "no \"model\" object");
        const json& m = j["model"];
        const std::string type = m.value("type", m.contains("merges") ? "BPE" : "");
        if (type != "BPE") fail_format(source, "unsupported tokenizer model type \"" + type + "\" (only BPE is supported)");
        if (m.contains("dropout") && !m["dropout"].is_null() && m["dropout"].get<double>() > 0)
            fail_format(source, "BPE dropout is not supported");
        for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"})
            if (m.contains(k) && !m[k].is_null() && !m[k].get<std::string>().empty())
                fail_format(source, std::string(k) + " is not supported (byte-level BPE uses none)");
        t.ignore_merges_ = m.value("ignore_merges", false);

        const json norm = j.value("normalizer", json());
        if (!norm.is_null() && norm.value("type", "") != "NFC")
            fail_format(source, "unsupported normalizer " + norm.dump() + " (only none or NFC)");
        json pre = j.value("pre_tokenizer", json());
        if (pre.is_object() && pre.value("type", "") == "Sequence" && pre.value("pretokenizers", json()).size() == 1)
            pre = pre["pretokenizers"][0];
        if (!pre.is_object() || pre.value("type", "") != "ByteLevel")
            fail_format(source, "unsupported pre_tokenizer " + pre.dump() + " (only ByteLevel)");
        t.add_prefix_space_ = pre.value("add_prefix_space", false);
        t.use_regex_ = pre.value("use_regex", true);
        const json dec = j.value("decoder", json());
        if (!dec.is_null() && dec.value("type", "") != "ByteLevel")
            fail_format(source, "unsupported decoder " + dec.dump() + " (only ByteLevel)");

        if (!m.contains("vocab") || !m["vocab"].is_object()) fail_format(source, "model.vocab is not an object");
        int64_t max_id = -1;
        for (auto& [tok, id] : m["vocab"].items()) {
            const int64_t v = id.get<int64_t>();
            if (v < 0 || v >= (int64_t(1) << 26))
                fail_format(source, "vocab id " + std::to_string(v) + " of \"" + tok + "\" is out of range");
            t.vocab_.emplace(tok, v);
            max_id = std::max(max_id, v);
        }
        const json added = j.value("added_tokens", json::array());
        for (const json& a : added) {
            AddedToken at;
            at.content = a.at("content").get<std::string>();
            at.id = a.at("id").get<int64_t>();
            at.lstrip = a.value("lstrip", false);
            at.rstrip = a.value("rstrip", false);
            at.single_word = a.value("single_word", false);
            if (at.content.empty() || at.id < 0 || at.id >= (int64_t(1) << 26))
                fail_format(source, "added token " + a.dump() + " has empty content or an id out of range");
            max_id = std::max(max_id, at.id);
            t.added_.push_back(at);
        }
        std::stable_sort(t.added_.begin(), t.added_.end(),
                         [](const AddedToken& a, const AddedToken& b) { return a.content.size() > b.content.size(); });

        t.decoded_.assign(size_t(max_id + 1), std::string());
        t.known_.assign(size_t(max_id + 1), false);
        for (auto& [tok, id] : t.vocab_) {
            t.decoded_[size_t(id)] = token_to_bytes(tok);
            t.known_[size_t(id)] = true;
        }
        for (const AddedToken& a : t.added_) {
            t.decoded_[size_t(a.id)] = a.content;
            t.known_[size_t(a.id)] = true;
        }
        for (int b = 0; b < 256; ++b) {
            auto it = t.vocab_.find(alphabet().symbol[b]);
            if (it == t.vocab_.end())
                fail_format(source, "the vocabulary lacks the byte-level symbol \"" + alphabet().symbol[b] + "\" of byte " +
                            std::to_string(b) + " (all 256 are needed so that any text can be encoded)");
            t.byte_id_[b] = it->second;
        }

        const json merges = m.value("merges", json::array());
        if (!merges.is_array()) fail_format(source, "model.merges is not an array");
        for (size_t r = 0; r < merges.size(); ++r) {
            const json& e = merges[r];
            std::string a, b;
            if (e.is_string()) {
                const std::string s = e.get<std::string>();
                const size_t sp = s.find(' ');
                if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
                    fail_format(source, "merge #" + std::to_string(r) + " \"" + s +
                                "\" is not two tokens separated by one space");
                a = s.substr(0, sp);
                b = s.substr(sp + 1);
            } else if (e.is_array() && e.size() == 2) {
                a = e[0].get<std::string>();
                b = e[1].get<std::string>();
            } else {
                fail_format(source, "merge #" + std::to_string(r) + " " + e.dump() +
                            " is neither \"a b\" nor [\"a\", \"b\"]");
            }
            for (const std::string& tok : {a, b, a + b})
                if (!t.vocab_.count(tok))
                    fail_format(source, "merge #" + std::to_string(r) + " (\"" + a + "\", \"" + b + "\") names \"" + tok +
                                "\", which is not in the vocabulary");
            const uint64_t key = (uint64_t(t.vocab_[a]) << 32) | uint64_t(t.vocab_[b]);
            t.merges_.emplace(key, MergeRule{int32_t(r), t.vocab_[a + b]});
        }
    } catch (const json::exception& e) {
        fail_format(source, std::string("malformed tokenizer.json (") + e.what() + ")");
    }
    return t;
}

// ------------------------------------------------------------------------------------------ encoding

// BPE of one pre-tokenized piece: start from its bytes' symbols and fuse the lowest-rank adjacent pair (leftmost on
// ties) until no pair has a merge. Symbols form a linked list over the byte positions; a heap holds candidate
// pairs, and a popped pair is used only if both symbols still hold the ids it was computed for.
void BpeTokenizer::encode_piece(const char* data, size_t size, std::vector<int64_t>& out) const {
    if (size == 0) return;
    if (ignore_merges_) {  // a piece that is itself a token skips the merges
        std::string sym;
        for (size_t i = 0; i < size; ++i) sym += alphabet().symbol[static_cast<unsigned char>(data[i])];
        auto it = vocab_.find(sym);
        if (it != vocab_.end()) return out.push_back(it->second);
    }
    struct Symbol {
        int64_t id;
        int32_t prev, next;
    };
    std::vector<Symbol> sym(size);
    for (size_t i = 0; i < size; ++i)
        sym[i] = {byte_id_[static_cast<unsigned char>(data[i])], int32_t(i) - 1, i + 1 < size ? int32_t(i + 1) : -1};
    struct Candidate {
        int32_t rank, pos;
        int64_t left, right, result;
        bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
    };
    std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> heap;
    auto consider = [&](int32_t pos) {
        const int32_t nx = sym[size_t(pos)].next;
        if (nx < 0) return;
        const int64_t l = sym[size_t(pos)].id, r = sym[size_t(nx)].id;
        auto it = merges_.find((uint64_t(l) << 32) | uint64_t(r));
        if (it != merges_.end()) heap.push({it->second.rank, pos, l, r, it->second.result});
    };
    for (size_t i = 0; i + 1 < size; ++i) consider(int32_t(i));
    while (!heap.empty()) {
        const Candidate c = heap.top();
        heap.pop();
        Symbol& left = sym[size_t(c.pos)];
        if (left.id != c.left || left.next < 0 || sym[size_t(left.next)].id != c.right) continue;  // stale
        const Symbol right = sym[size_t(left.next)];
        sym[size_t(left.next)].id = -1;  // removed
        left.id = c.result;
        left.next = right.next;
        if (right.next >= 0) sym[size_t(right.next)].prev = c.pos;
        if (left.prev >= 0) consider(left.prev);
        consider(c.pos);
    }
    for (int32_t i = 0; i >= 0; i = sym[size_t(i)].next) out.push_back(sym[size_t(i)].id);
}

void BpeTokenizer::encode_segment(const std::string& segment, std::vector<int64_t>& out) const {
    if (segment.empty()) return;
    const std::string text = add_prefix_space_ && segment[0] != ' ' ? " " + segment : segment;
    if (!use_regex_) return encode_piece(text.data(), text.size(), out);
    for (const std::string& piece : gpt2_pretokenize(text)) encode_piece(piece.data(), piece.size(), out);
}

std::vector<int64_t> BpeTokenizer::encode(const std::string& text) const {
    std::vector<int64_t> out;
    bool first_byte[256] = {};  // a quick filter: bytes that can start an added token
    for (const AddedToken& a : added_) first_byte[static_cast<unsigned char>(a.content[0])] = true;
    size_t seg_start = 0, i = 0;
    while (i < text.size()) {
        const AddedToken* hit = nullptr;
        for (size_t k = 0; k < added_.size() && first_byte[static_cast<unsigned char>(text[i])]; ++k) {  // longest first
            const AddedToken& a = added_[k];
            if (text.compare(i, a.content.size(), a.content) != 0) continue;
            if (a.single_word) {
                size_t s, len;
                if (is_word_cp(cp_before(text, i, s)) || is_word_cp(cp_at(text, i + a.content.size(), len))) continue;
            }
            hit = &a;
            break;
        }
        if (!hit) {
            ++i;
            continue;
        }
        size_t begin = i, end = i + hit->content.size(), s, len;
        if (hit->lstrip)
            while (begin > seg_start && is_space(cp_before(text, begin, s))) begin = s;
        if (hit->rstrip)
            while (end < text.size() && is_space(cp_at(text, end, len))) end += len;
        encode_segment(text.substr(seg_start, begin - seg_start), out);
        out.push_back(hit->id);
        seg_start = i = end;
    }
    encode_segment(text.substr(seg_start), out);
    return out;
}

std::string BpeTokenizer::decode(const std::vector<int64_t>& ids) const {
    std::string out;
    for (int64_t id : ids) {
        SSMTUNE_CHECK(id >= 0 && id < vocab_size() && known_[size_t(id)], "token id ", id, " is not in the vocabulary of ",
                      source_, " (", vocab_size(), " ids); fix: decode ids produced with this tokenizer");
        out += decoded_[size_t(id)];
    }
    return out;
}

int64_t BpeTokenizer::token_to_id(const std::string& token) const {
    for (const AddedToken& a : added_)
        if (a.content == token) return a.id;
    auto it = vocab_.find(token);
    return it == vocab_.end() ? -1 : it->second;
}

int64_t BpeTokenizer::token_bytes(int64_t id) const {
    SSMTUNE_CHECK(id >= 0 && id < vocab_size() && known_[size_t(id)], "token id ", id, " is not in the vocabulary of ",
                  source_);
    return int64_t(decoded_[size_t(id)].size());
}

}  // namespace ssmtune::data
