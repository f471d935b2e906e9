// Reading whole files for the weight readers (safetensors, PyTorch checkpoints): an owned file descriptor, exact
// positioned reads, and a file's bytes as one read-only mapping.
// Not here: writing (see write_file_atomically in safetensors.h) or streaming reads of files larger than the
// address space.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace ssmtune {

// An open file descriptor, closed on scope exit.
struct Fd {
    int fd = -1;
    explicit Fd(int f) : fd(f) {}
    ~Fd();
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
};

// Opens `path` for reading and returns its size; Error naming the path for a missing file or a directory.
uint64_t open_for_read(const std::string& path, Fd& fd);

// Reads exactly n bytes at `offset` (pread, looping over short reads and EINTR); Error naming `path` otherwise.
void read_exact(int fd, void* dst, uint64_t n, uint64_t offset, const std::string& path);

// The whole file's bytes: a read-only mapping, or one read into a heap buffer where mapping is refused.
class FileBytes {
public:
    explicit FileBytes(const std::string& path);
    // The `size` bytes of the open file `fd` (which may be closed afterwards); `path` names it in errors.
    FileBytes(int fd, uint64_t size, const std::string& path);
    ~FileBytes();
    FileBytes(const FileBytes&) = delete;
    FileBytes& operator=(const FileBytes&) = delete;
    const uint8_t* data() const { return data_; }
    uint64_t size() const { return size_; }

private:
    void map(int fd, uint64_t size, const std::string& path);
    void* map_ = nullptr;
    std::unique_ptr<uint8_t[]> buffer_;
    const uint8_t* data_ = nullptr;
    uint64_t size_ = 0;
};

}  // namespace ssmtune
