// cuBLAS and cuFFT loaded on first use (see math_libs.h): dlopen by soname (the system's search: LD_LIBRARY_PATH,
// the ld.so cache, ...), then from the CUDA Toolkit's library directory found at configure time; dlsym per function.
// Also cuda::load_math_libraries(), which loads both now and resolves every function the backend calls (tests,
// `ssmtune --version`-style checks). The emulation build has no libraries to load (host_simt.cpp plays them);
// a build without CUDA has nothing here either. Not here: unloading (libraries stay loaded until exit).
#include "cuda/runtime.h"

#if defined(SSMTUNE_WITH_CUDA) && !defined(SSMTUNE_CUDA_EMULATION)

#include <dlfcn.h>

#include <string>

#include "cuda/math_libs.h"
#include "engine/error.h"

namespace ssmtune::cuda {

namespace lib {

namespace {

#define SSMTUNE_SONAME_(base, major) base #major
#define SSMTUNE_SONAME(base, major) SSMTUNE_SONAME_(base, major)

struct Loaded {
    void* handle = nullptr;
    std::string path;
};

// dlopen(soname), else dlopen(<toolkit lib dir>/soname); the first failure's dlerror() goes into the Error.
Loaded open_library(const char* soname, const char* what) {
    Loaded l;
    l.handle = ::dlopen(soname, RTLD_NOW | RTLD_LOCAL);
    l.path = soname;
    if (l.handle) return l;
    std::string tried = soname;
#ifdef SSMTUNE_CUDA_LIBRARY_DIR
    const std::string in_toolkit = std::string(SSMTUNE_CUDA_LIBRARY_DIR) + "/" + soname;
    l.handle = ::dlopen(in_toolkit.c_str(), RTLD_NOW | RTLD_LOCAL);
    l.path = in_toolkit;
    if (l.handle) return l;
    tried += " and " + in_toolkit;
#endif
    const char* err = ::dlerror();
    SSMTUNE_FAIL(what, " could not be loaded (tried ", tried, "): ", err ? err : "unknown dlopen error",
                 "; fix: install the CUDA Toolkit's ", what, " library or add its directory to LD_LIBRARY_PATH");
}

const Loaded& library(Library which) {
    // Magic statics: each library opened once, thread-safe.
    if (which == Library::cublas) {
        static const Loaded cublas = open_library(SSMTUNE_SONAME("libcublas.so.", CUBLAS_VER_MAJOR), "cuBLAS");
        return cublas;
    }
    static const Loaded cufft = open_library(SSMTUNE_SONAME("libcufft.so.", CUFFT_VER_MAJOR), "cuFFT");
    return cufft;
}

}  // namespace

void* symbol(Library which, const char* name) {
    const Loaded& l = library(which);
    void* p = ::dlsym(l.handle, name);
    SSMTUNE_CHECK(p != nullptr, "function ", name, " not found in ", l.path,
                  "; fix: use the cuBLAS/cuFFT of the CUDA Toolkit this build was configured with");
    return p;
}

}  // namespace lib

std::string load_math_libraries() {
#define SSMTUNE_RESOLVE_CUBLAS(fn) lib::symbol(lib::Library::cublas, SSMTUNE_LIB_NAME(fn));
#define SSMTUNE_RESOLVE_CUFFT(fn) lib::symbol(lib::Library::cufft, SSMTUNE_LIB_NAME(fn));
    SSMTUNE_CUBLAS_FUNCTIONS(SSMTUNE_RESOLVE_CUBLAS)
    SSMTUNE_CUFFT_FUNCTIONS(SSMTUNE_RESOLVE_CUFFT)
#undef SSMTUNE_RESOLVE_CUBLAS
#undef SSMTUNE_RESOLVE_CUFFT
    return lib::library(lib::Library::cublas).path + ", " + lib::library(lib::Library::cufft).path;
}

}  // namespace ssmtune::cuda

#else  // emulated CUDA, or no CUDA

namespace ssmtune::cuda {

std::string load_math_libraries() {
#ifdef SSMTUNE_CUDA_EMULATION
    return "emulated (cuda/emulation/host_simt.cpp)";
#else
    return "none (built without CUDA)";
#endif
}

}  // namespace ssmtune::cuda

#endif
