// Zip archive reading (contract in zip_reader.h). Layout from PKWARE's APPNOTE.TXT 6.3: the end-of-central-directory
// record (EOCD, signature PK\5\6) lies within the last 64 KiB + 22 bytes; when a count, size or offset there is the
// all-ones escape, the zip64 EOCD locator (PK\6\7) just before it points at the zip64 EOCD record (PK\6\6) that
// holds the 64-bit values. Each central-directory header (PK\1\2) gives the entry's method, CRC, sizes and the
// offset of its local header (PK\3\4), whose own name and extra lengths place the data. Every offset and length is
// checked against the archive's size before it is used, with overflow-free arithmetic.
#include "engine/zip_reader.h"

#include <algorithm>
#include <cstring>
#include <set>

#include <zlib.h>

#include "engine/error.h"

namespace ssmtune {

namespace {

constexpr uint32_t kLocalHeader = 0x04034b50, kCentralHeader = 0x02014b50, kEndOfDirectory = 0x06054b50;
constexpr uint32_t kZip64Locator = 0x07064b50, kZip64EndOfDirectory = 0x06064b50;

uint16_t get16(const uint8_t* p) { return uint16_t(p[0] | (p[1] << 8)); }
uint32_t get32(const uint8_t* p) { return uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24); }
uint64_t get64(const uint8_t* p) { return uint64_t(get32(p)) | (uint64_t(get32(p + 4)) << 32); }

// True when [offset, offset + length) lies within `size` bytes.
bool within(uint64_t offset, uint64_t length, uint64_t size) { return offset <= size && length <= size - offset; }

}  // namespace

bool looks_like_zip(const uint8_t* data, uint64_t size) { return size >= 4 && get32(data) == kLocalHeader; }

ZipArchive::ZipArchive(const uint8_t* data, uint64_t size, std::string source)
    : data_(data), size_(size), source_(std::move(source)) {
    const std::string fix = "; fix: use an intact copy of the file";
    SSMTUNE_CHECK(size >= 22, source_, ": not a zip archive (", size, " bytes, shorter than any)", fix);
    // The EOCD record: the last PK\5\6 whose comment length reaches the end of the file exactly (a comment may
    // itself hold the signature's bytes, so the scan goes backwards and accepts the first record that fits).
    uint64_t eocd = UINT64_MAX;
    const uint64_t lowest = size - 22 > 65535 ? size - 22 - 65535 : 0;
    for (uint64_t at = size - 22 + 1; at-- > lowest;) {
        if (get32(data + at) == kEndOfDirectory && at + 22 + get16(data + at + 20) == size) { eocd = at; break; }
    }
    SSMTUNE_CHECK(eocd != UINT64_MAX, source_, ": not a zip archive, or a truncated one (no end-of-central-directory "
                  "record in its last 64 KiB)", fix);
    const uint8_t* e = data + eocd;
    SSMTUNE_CHECK(get16(e + 4) == 0 && get16(e + 6) == 0, source_, ": a multi-disk zip archive; fix: join its parts "
                  "into one file");
    uint64_t count = get16(e + 10), directory_size = get32(e + 12), directory_offset = get32(e + 16);
    if (count == 0xFFFF || directory_size == 0xFFFFFFFFu || directory_offset == 0xFFFFFFFFu) {
        SSMTUNE_CHECK(eocd >= 20 && get32(data + eocd - 20) == kZip64Locator, source_, ": its end-of-central-directory "
                      "record defers to zip64 records, but there is no zip64 locator before it", fix);
        const uint64_t record = get64(data + eocd - 20 + 8);
        SSMTUNE_CHECK(within(record, 56, eocd - 20) && get32(data + record) == kZip64EndOfDirectory, source_,
                      ": the zip64 locator points at byte ", record, ", where no zip64 end-of-central-directory record is",
                      fix);
        const uint8_t* z = data + record;
        SSMTUNE_CHECK(get32(z + 16) == 0 && get32(z + 20) == 0, source_, ": a multi-disk zip archive; fix: join its "
                      "parts into one file");
        count = get64(z + 32);
        directory_size = get64(z + 40);
        directory_offset = get64(z + 48);
    }
    SSMTUNE_CHECK(within(directory_offset, directory_size, size), source_, ": the central directory (", directory_size,
                  " bytes at byte ", directory_offset, ") runs past the end of the ", size, "-byte file", fix);
    SSMTUNE_CHECK(count <= directory_size / 46, source_, ": ", count, " entries cannot fit a central directory of ",
                  directory_size, " bytes", fix);
    entries_.reserve(size_t(count));
    std::set<std::string> names;
    uint64_t at = directory_offset;
    const uint64_t directory_end = directory_offset + directory_size;
    for (uint64_t i = 0; i < count; ++i) {
        SSMTUNE_CHECK(within(at, 46, directory_end) && get32(data + at) == kCentralHeader, source_, ": central-directory "
                      "entry ", i, " of ", count, " is damaged (no header at byte ", at, ")", fix);
        const uint8_t* c = data + at;
        const uint16_t flags = get16(c + 8), name_length = get16(c + 28), extra_length = get16(c + 30),
                       comment_length = get16(c + 32);
        const uint64_t header_length = 46 + uint64_t(name_length) + extra_length + comment_length;
        SSMTUNE_CHECK(within(at, header_length, directory_end), source_, ": central-directory entry ", i,
                      " runs past the directory's end", fix);
        ZipEntry entry;
        entry.name.assign(reinterpret_cast<const char*>(c + 46), name_length);
        SSMTUNE_CHECK(!(flags & 1u), source_, ": entry ", entry.name, " is encrypted; fix: store it unencrypted");
        entry.method = get16(c + 10);
        entry.crc32 = get32(c + 16);
        entry.compressed_size = get32(c + 20);
        entry.size = get32(c + 24);
        uint64_t local = get32(c + 42);
        // The zip64 extra field (id 1) holds, in this order, each of these whose 32-bit field is all ones.
        const uint8_t* extra = c + 46 + name_length;
        for (uint64_t x = 0; x + 4 <= extra_length;) {
            const uint16_t id = get16(extra + x), length = get16(extra + x + 2);
            SSMTUNE_CHECK(x + 4 + length <= extra_length, source_, ": entry ", entry.name, "'s extra fields are damaged",
                          fix);
            if (id == 1) {
                const uint8_t* v = extra + x + 4;
                uint64_t left = length;
                auto take = [&](uint64_t& field) {
                    if (field != 0xFFFFFFFFu) return;
                    SSMTUNE_CHECK(left >= 8, source_, ": entry ", entry.name, "'s zip64 field is too short", fix);
                    field = get64(v);
                    v += 8;
                    left -= 8;
                };
                take(entry.size);
                take(entry.compressed_size);
                take(local);
            }
            x += 4 + uint64_t(length);
        }
        SSMTUNE_CHECK(names.insert(entry.name).second, source_, ": two entries are called ", entry.name, fix);
        SSMTUNE_CHECK(within(local, 30, size) && get32(data + local) == kLocalHeader, source_, ": entry ", entry.name,
                      "'s local header (byte ", local, ") is missing or damaged", fix);
        const uint64_t local_name = get16(data + local + 26), local_extra = get16(data + local + 28);
        SSMTUNE_CHECK(local_name == name_length && within(local + 30, local_name, size) &&
                          std::memcmp(data + local + 30, entry.name.data(), name_length) == 0,
                      source_, ": entry ", entry.name, "'s local header names another file", fix);
        entry.data_offset = local + 30 + local_name + local_extra;
        SSMTUNE_CHECK(within(entry.data_offset, entry.compressed_size, size), source_, ": entry ", entry.name, " (",
                      entry.compressed_size, " bytes at byte ", entry.data_offset, ") runs past the end of the ", size,
                      "-byte file (truncated?)", fix);
        SSMTUNE_CHECK(entry.method == 0 || entry.method == 8, source_, ": entry ", entry.name, " uses compression "
                      "method ", entry.method, "; only stored (0) and deflate (8) are read; fix: re-zip it with one of "
                      "those, or save it with torch.save");
        SSMTUNE_CHECK(entry.method != 0 || entry.size == entry.compressed_size, source_, ": stored entry ", entry.name,
                      " gives two sizes (", entry.size, " and ", entry.compressed_size, ")", fix);
        // deflate expands at most about 1032:1; a larger claim is a damaged or hostile header, not a real entry
        SSMTUNE_CHECK(entry.method != 8 || entry.size / 1032 <= entry.compressed_size, source_, ": entry ", entry.name,
                      " claims to inflate ", entry.compressed_size, " bytes to ", entry.size, ", beyond deflate's limit",
                      fix);
        entries_.push_back(std::move(entry));
        at += header_length;
    }
}

const ZipEntry* ZipArchive::find(const std::string& name) const {
    for (const ZipEntry& e : entries_)
        if (e.name == name) return &e;
    return nullptr;
}

ZipBytes ZipArchive::read(const ZipEntry& entry) const {
    SSMTUNE_CHECK(within(entry.data_offset, entry.compressed_size, size_), source_, ": entry ", entry.name,
                  " does not lie within this archive; fix: read it through the archive that listed it");
    return decode(entry, data_ + entry.data_offset);
}

void ZipArchive::check_crc(const ZipEntry& entry, const uint8_t* bytes) const {
    uLong crc = crc32_z(0L, Z_NULL, 0);
    crc = crc32_z(crc, bytes, z_size_t(entry.size));
    SSMTUNE_CHECK(uint32_t(crc) == entry.crc32, source_, ": entry ", entry.name, " fails its CRC-32 check (damaged "
                  "file); fix: use an intact copy of the file");
}

ZipBytes ZipArchive::decode(const ZipEntry& entry, const uint8_t* stored) const {
    ZipBytes out;
    if (entry.method == 0) {
        out.data = stored;
        out.size = entry.size;
    } else {
        out.owned.resize(size_t(entry.size));
        z_stream z{};
        SSMTUNE_CHECK(inflateInit2(&z, -15) == Z_OK, "zlib: inflateInit2 failed (out of memory?)");
        uint64_t in_left = entry.compressed_size, out_left = entry.size;
        z.next_in = const_cast<Bytef*>(stored);
        uint8_t none = 0;  // zlib refuses a null output pointer, which an empty entry's buffer has
        z.next_out = entry.size ? out.owned.data() : &none;
        int rc = Z_OK;
        while (rc == Z_OK) {  // in pieces that fit zlib's 32-bit counters
            if (z.avail_in == 0) {
                z.avail_in = uInt(std::min<uint64_t>(in_left, 1u << 30));
                in_left -= z.avail_in;
            }
            if (z.avail_out == 0) {
                z.avail_out = uInt(std::min<uint64_t>(out_left, 1u << 30));
                out_left -= z.avail_out;
            }
            rc = inflate(&z, Z_NO_FLUSH);
            if (rc == Z_BUF_ERROR && z.avail_in == 0 && in_left == 0) break;  // input used up before the end mark
            if (rc == Z_BUF_ERROR && z.avail_out == 0 && out_left == 0) break;  // more output than the header said
        }
        const uint64_t produced = uint64_t(z.total_out);
        inflateEnd(&z);
        SSMTUNE_CHECK(rc == Z_STREAM_END && produced == entry.size, source_, ": entry ", entry.name,
                      " does not inflate to its ", entry.size, " bytes (damaged deflate data)",
                      "; fix: use an intact copy of the file");
        out.data = out.owned.data();
        out.size = entry.size;
    }
    check_crc(entry, out.data);
    return out;
}

}  // namespace ssmtune
