// The tokenizer tests' fixture: a tiny byte-level BPE tokenizer.json (GPT-2's byte alphabet, 11 merges, one special
// token), shared by the tokenizer's own tests (test_data.cpp) and the commands that read text with it.
#pragma once

#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

namespace ssmtune::testing {

// GPT-2's byte-to-unicode map, written independently of the tokenizer as a cross-check.
inline std::string byte_symbol(int b) {
    int cp = b;
    if (!((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255))) {
        int n = 0;
        for (int k = 0; k < b; ++k) n += !((k >= 33 && k <= 126) || (k >= 161 && k <= 172) || (k >= 174 && k <= 255));
        cp = 256 + n;
    }
    return cp < 128 ? std::string(1, char(cp)) : std::string{char(0xC0 | (cp >> 6)), char(0x80 | (cp & 0x3F))};
}

// A tiny byte-level BPE tokenizer.json: byte b has id b, then 11 merges (ids 256..266), one special token (300).
// Ġ is the symbol of the space byte, Ã© the two bytes of "é".
inline const char* const kTinyTokenizer = R"({
  "version": "1.0",
  "added_tokens": [{"id": 300, "content": "<|endoftext|>", "single_word": false, "lstrip": false, "rstrip": false,
                    "normalized": false, "special": true}],
  "normalizer": {"type": "NFC"},
  "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
  "post_processor": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
  "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
  "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false,
            "vocab": {"Ġt": 256, "he": 257, "Ġthe": 258, "ll": 259, "ell": 260, "Ġw": 261, "or": 262, "Ġwor": 263,
                      "Ã©": 264, "ĠĠ": 265, "19": 266},
            "merges": ["Ġ t", "h e", "Ġt he", ["l", "l"], "e ll", "Ġ w", "o r", ["Ġw", "or"], "Ã ©", "Ġ Ġ", "1 9"]}
})";

inline nlohmann::json tiny_tokenizer_json() {
    nlohmann::json j = nlohmann::json::parse(kTinyTokenizer);
    for (int b = 0; b < 256; ++b) j["model"]["vocab"][byte_symbol(b)] = b;
    return j;
}

inline std::string write_tokenizer(const std::filesystem::path& dir, const nlohmann::json& j) {
    const std::string path = (dir / "tokenizer.json").string();
    std::ofstream(path) << j.dump();
    return path;
}

}  // namespace ssmtune::testing
