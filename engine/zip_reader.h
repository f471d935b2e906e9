// A read-only zip archive in memory (PKWARE APPNOTE 6.3: end of central directory, the zip64 records, the central
// directory, local headers), as PyTorch writes its checkpoints (torch.save since 1.6: stored entries, zip64 past
// 4 GiB). Entries stored (method 0) are returned in place; deflated ones (method 8, a re-zipped checkpoint) are
// inflated with zlib. Every entry's CRC-32 is checked when it is read, so a damaged or truncated file is an Error
// naming the entry rather than wrong weights.
// Not here: writing, encryption, multi-disk archives, compression methods other than stored and deflate.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ssmtune {

struct ZipEntry {
    std::string name;
    uint64_t data_offset = 0;      // where the entry's (possibly compressed) bytes start in the archive
    uint64_t compressed_size = 0;
    uint64_t size = 0;             // uncompressed
    uint16_t method = 0;           // 0 stored, 8 deflate
    uint32_t crc32 = 0;
};

// An entry's bytes: `data` points into the archive (stored entries) or into `owned` (inflated ones).
struct ZipBytes {
    const uint8_t* data = nullptr;
    uint64_t size = 0;
    std::vector<uint8_t> owned;
};

class ZipArchive {
public:
    // Parses the directory of `size` bytes at `data` (which must outlive this object); `source` names them in
    // errors. Throws ssmtune::Error for anything that is not a well-formed single-disk archive.
    ZipArchive(const uint8_t* data, uint64_t size, std::string source);
    const std::vector<ZipEntry>& entries() const { return entries_; }
    // The entry called `name`, or nullptr.
    const ZipEntry* find(const std::string& name) const;
    // The entry's uncompressed bytes, CRC-checked.
    ZipBytes read(const ZipEntry& entry) const;
    // The same from the entry's compressed_size bytes as stored, read from the file by the caller (`stored` must
    // outlive the result for a stored entry, which points into it).
    ZipBytes decode(const ZipEntry& entry, const uint8_t* stored) const;
    // Throws naming the entry when its `size` uncompressed bytes at `bytes` fail the CRC-32 the directory gives.
    void check_crc(const ZipEntry& entry, const uint8_t* bytes) const;
    const std::string& source() const { return source_; }

private:
    const uint8_t* data_;
    uint64_t size_;
    std::string source_;
    std::vector<ZipEntry> entries_;
};

// True when the bytes start like a zip archive (a local file header); cheap, for telling formats apart.
bool looks_like_zip(const uint8_t* data, uint64_t size);

}  // namespace ssmtune
