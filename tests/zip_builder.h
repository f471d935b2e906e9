// A zip archive of stored entries, built in memory as torch.save lays one out (without its 64-byte alignment padding):
// for the PyTorch checkpoint reader's tests and its fuzz target, which build checkpoints with chosen pickles and damage.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <zlib.h>

namespace ssmtune::testing {

inline void put_le16(std::string& s, uint32_t v) {
    s += char(v & 255);
    s += char((v >> 8) & 255);
}
inline void put_le32(std::string& s, uint32_t v) {
    put_le16(s, v & 0xFFFF);
    put_le16(s, v >> 16);
}

inline std::string stored_zip(const std::vector<std::pair<std::string, std::string>>& entries) {
    std::string out, directory;
    for (const auto& [name, data] : entries) {
        const uint32_t crc = uint32_t(crc32(0L, reinterpret_cast<const Bytef*>(data.data()), uInt(data.size())));
        const uint32_t offset = uint32_t(out.size()), size = uint32_t(data.size()), name_size = uint32_t(name.size());
        put_le32(out, 0x04034b50);
        put_le16(out, 20);                                    // version needed
        for (int k = 0; k < 4; ++k) put_le16(out, 0);         // flags, method (stored), time, date
        put_le32(out, crc);
        put_le32(out, size);
        put_le32(out, size);
        put_le16(out, name_size);
        put_le16(out, 0);
        out += name + data;
        put_le32(directory, 0x02014b50);
        for (int k = 0; k < 2; ++k) put_le16(directory, 20);  // version made by, needed
        for (int k = 0; k < 4; ++k) put_le16(directory, 0);   // flags, method, time, date
        put_le32(directory, crc);
        put_le32(directory, size);
        put_le32(directory, size);
        put_le16(directory, name_size);
        for (int k = 0; k < 4; ++k) put_le16(directory, 0);   // extra, comment, disk, internal attributes
        put_le32(directory, 0);                               // external attributes
        put_le32(directory, offset);
        directory += name;
    }
    const uint32_t at = uint32_t(out.size());
    out += directory;
    put_le32(out, 0x06054b50);
    put_le32(out, 0);  // disk numbers
    put_le16(out, uint32_t(entries.size()));
    put_le16(out, uint32_t(entries.size()));
    put_le32(out, uint32_t(directory.size()));
    put_le32(out, at);
    put_le16(out, 0);
    return out;
}

}  // namespace ssmtune::testing
