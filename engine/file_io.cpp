// File reading shared by the weight readers (contract in file_io.h).
#include "engine/file_io.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/error.h"

namespace ssmtune {

Fd::~Fd() {
    if (fd >= 0) ::close(fd);
}

uint64_t open_for_read(const std::string& path, Fd& fd) {
    fd.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    SSMTUNE_CHECK(fd.fd >= 0, "cannot open ", path, ": ", std::strerror(errno));
    struct stat st {};
    SSMTUNE_CHECK(::fstat(fd.fd, &st) == 0, "cannot stat ", path, ": ", std::strerror(errno));
    SSMTUNE_CHECK(!S_ISDIR(st.st_mode), "cannot read ", path, ": it is a directory, not a weights file");
    return uint64_t(st.st_size);
}

void read_exact(int fd, void* dst, uint64_t n, uint64_t offset, const std::string& path) {
    // A 32-bit build without large-file support has a 32-bit off_t: an offset past it would wrap, not fail.
    const uint64_t max_offset = uint64_t(std::numeric_limits<off_t>::max());
    SSMTUNE_CHECK(offset <= max_offset && n <= max_offset - offset, "reading ", path, " at byte ", offset,
                  ": past the ", sizeof(off_t) * 8, "-bit file offsets of this build; fix: build with "
                  "-D_FILE_OFFSET_BITS=64 (CMake does)");
    auto* p = static_cast<uint8_t*>(dst);
    while (n > 0) {
        const ssize_t got = ::pread(fd, p, size_t(std::min<uint64_t>(n, uint64_t(1) << 30)), off_t(offset));
        if (got < 0 && errno == EINTR) continue;
        SSMTUNE_CHECK(got >= 0, "reading ", path, " failed: ", std::strerror(errno));
        SSMTUNE_CHECK(got > 0, "reading ", path, " failed: the file ended early (changed while being read?)");
        p += got;
        offset += uint64_t(got);
        n -= uint64_t(got);
    }
}

FileBytes::FileBytes(const std::string& path) {
    Fd fd(-1);
    const uint64_t size = open_for_read(path, fd);
    map(fd.fd, size, path);
}

FileBytes::FileBytes(int fd, uint64_t size, const std::string& path) { map(fd, size, path); }

void FileBytes::map(int fd, uint64_t size, const std::string& path) {
    size_ = size;
    if (size_ == 0) return;
    SSMTUNE_CHECK(size_ <= uint64_t(std::numeric_limits<size_t>::max()), path, " is ", size_, " bytes, more than a ",
                  sizeof(size_t) * 8, "-bit build can hold in memory; fix: use a 64-bit build");
    void* m = ::mmap(nullptr, size_t(size_), PROT_READ, MAP_PRIVATE, fd, 0);
    if (m != MAP_FAILED) {
        map_ = m;
        ::madvise(m, size_t(size_), MADV_SEQUENTIAL);
        data_ = static_cast<const uint8_t*>(m);
        return;
    }
    buffer_.reset(new uint8_t[size_t(size_)]);
    read_exact(fd, buffer_.get(), size_, 0, path);
    data_ = buffer_.get();
}

FileBytes::~FileBytes() {
    if (map_) ::munmap(map_, size_t(size_));
}

}  // namespace ssmtune
