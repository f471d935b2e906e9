// Byte-level BPE tokenizer read from a Hugging Face `tokenizer.json` (the GPT-2 / GPT-NeoX kind that ships with
// state-spaces/mamba-*-hf and EleutherAI models): "model": {"type": "BPE", "vocab": {token: id}, "merges": [...]},
// pre_tokenizer ByteLevel (GPT-2 regex split, optional add_prefix_space), GPT-2's byte-to-unicode alphabet,
// and "added_tokens" (special tokens such as <|endoftext|>, matched in the raw text before anything else).
//
// Encoding: added tokens are cut out first (leftmost-longest match; lstrip / rstrip / single_word honoured); each
// remaining segment is split by the GPT-2 pattern
//     's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// (implemented by hand on code points), each piece's bytes become byte-level symbols, and merges are applied by
// rank: repeatedly the adjacent pair with the lowest merge rank, leftmost first, is fused. Decoding maps the
// symbols back to bytes, so decode(encode(s)) == s for any UTF-8 (or even arbitrary byte) string s, as long as no
// lstrip/rstrip added token swallows whitespace and add_prefix_space is off.
//
// Approximated (ids can then differ from HF's `tokenizers`, the round trip stays exact):
//   * \p{L} and \p{N} are exact (Unicode 14) inside these blocks only: Latin (incl. Extended A-E and Additional),
//     IPA and phonetic extensions, Greek (+Extended), Cyrillic (+Ext. B, C), Armenian, Hebrew, Arabic (+Supplement,
//     presentation forms), Devanagari, Thai, Georgian, Hangul (+Jamo), Glagolitic/Coptic/Latin Ext.-C, Yi,
//     letterlike symbols, number forms, super/subscripts, enclosed numbers, CJK (symbols, kana, Bopomofo, unified
//     ideographs with extensions A-H, compatibility ideographs), alphabetic presentation forms, half/fullwidth
//     forms, mathematical digits. Letters and numbers of other scripts (other Indic scripts, Ethiopic, Canadian
//     syllabics, mathematical letters, ...) count as "other", neither letter nor number. \s is Unicode
//     White_Space. Invalid UTF-8 bytes count as "other".
//   * an NFC normalizer (named by GPT-NeoX-style tokenizer.json files) is accepted but not applied: text is taken
//     as already NFC (almost all text is); other normalizers are refused.
// Not here: BPE dropout, other model types (WordPiece, Unigram), continuing-subword prefixes, post-processors
// (no BOS/EOS is added), offsets, training a tokenizer.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

namespace ssmtune::data {

class BpeTokenizer {
public:
    // Reads a tokenizer.json; every problem (missing file, malformed JSON, unsupported model / pre-tokenizer /
    // normalizer, a merge naming tokens that are not in the vocabulary) is one ssmtune::Error.
    static BpeTokenizer from_file(const std::string& path);
    static BpeTokenizer from_json(const nlohmann::json& j, const std::string& source = "tokenizer.json");

    std::vector<int64_t> encode(const std::string& text) const;
    std::string decode(const std::vector<int64_t>& ids) const;  // throws on an id outside the vocabulary

    int64_t vocab_size() const { return int64_t(decoded_.size()); }  // largest id + 1 (vocab and added tokens)
    int64_t token_to_id(const std::string& token) const;           // vocab or added token; −1 when absent
    int64_t token_bytes(int64_t id) const;                         // length of decode({id}) in bytes
    int64_t num_merges() const { return int64_t(merges_.size()); }

private:
    struct AddedToken {
        std::string content;
        int64_t id = 0;
        bool lstrip = false, rstrip = false, single_word = false;
    };
    struct MergeRule {
        int32_t rank;
        int64_t result;
    };
    void encode_piece(const char* data, size_t size, std::vector<int64_t>& out) const;
    void encode_segment(const std::string& segment, std::vector<int64_t>& out) const;

    std::string source_;
    std::unordered_map<std::string, int64_t> vocab_;         // byte-level token string → id
    std::unordered_map<uint64_t, MergeRule> merges_;         // (left id << 32 | right id) → rank, merged id
    std::vector<AddedToken> added_;                          // sorted by content length, longest first
    std::vector<std::string> decoded_;                       // id → its bytes ("" where the id is unused)
    std::vector<bool> known_;                                // id → present
    int64_t byte_id_[256] = {};                              // id of each single-byte symbol
    bool add_prefix_space_ = false, use_regex_ = true, ignore_merges_ = false;
};

// The GPT-2 pre-tokenization pattern above applied to `text` (its pieces concatenate back to `text`).
std::vector<std::string> gpt2_pretokenize(const std::string& text);

}  // namespace ssmtune::data
