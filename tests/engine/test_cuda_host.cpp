// The CUDA backend's host-side logic, checked on every machine: the caching allocator's policy (over malloc),
// the kernels' broadcast index math, launch shapes, the block-reduction schedule and the argmax rule, and the
// clean error a CUDA launcher gives where no GPU (or no CUDA build) exists, and that cuBLAS and cuFFT (loaded on
// first use) resolve every function the backend calls.
#include <algorithm>
#include <cstdlib>
#include <functional>
#include <limits>

#include "cuda/caching_allocator.h"
#include "cuda/index_math.h"
#include "cuda/kernels.h"
#include "cuda/runtime.h"
#include "engine/strided.h"
#include "models/tiny_models.h"
#include "ops/op_util.h"
#include "test_util.h"

using namespace ssmtune;
using ssmtune::cuda::CachingAllocator;
using ssmtune::testing::error_of;

namespace {

// A raw allocator over malloc with a byte budget, counting live bytes, so tests can run it out of memory.
struct FakeDevice {
    size_t budget = std::numeric_limits<size_t>::max();
    size_t live = 0;
    int frees = 0;
    std::vector<std::pair<void*, size_t>> blocks;
};

void* fake_alloc(size_t n, void* ctx) {
    auto* d = static_cast<FakeDevice*>(ctx);
    if (d->live + n > d->budget) return nullptr;
    void* p = std::malloc(n);
    d->live += n;
    d->blocks.emplace_back(p, n);
    return p;
}

void fake_free(void* p, void* ctx) {
    auto* d = static_cast<FakeDevice*>(ctx);
    auto it = std::find_if(d->blocks.begin(), d->blocks.end(), [p](const auto& b) { return b.first == p; });
    REQUIRE(it != d->blocks.end());
    d->live -= it->second;
    d->blocks.erase(it);
    ++d->frees;
    std::free(p);
}

}  // namespace

TEST_CASE("cuda caching allocator: size classes") {
    CHECK(CachingAllocator::size_class(1) == 512);
    CHECK(CachingAllocator::size_class(512) == 512);
    CHECK(CachingAllocator::size_class(513) == 1024);
    CHECK(CachingAllocator::size_class((1 << 20) - 1) == (1 << 20));
    CHECK(CachingAllocator::size_class(1 << 20) == (1 << 20));
    CHECK(CachingAllocator::size_class((1 << 20) + 1) == (1 << 20) + (128 << 10));
}

TEST_CASE("cuda caching allocator: freed blocks are reused, stats count bytes in use, peak and cache") {
    FakeDevice dev;
    {
        CachingAllocator a(fake_alloc, fake_free, &dev, "fake:0");
        CHECK(a.allocate(0) == nullptr);
        void* p = a.allocate(1000);
        void* q = a.allocate(3 << 20);
        CHECK(a.stats().in_use == 1024 + (3 << 20));
        CHECK(a.stats().raw_allocs == 2);
        a.release(p);
        CHECK(a.stats().cached == 1024);
        CHECK(a.stats().in_use == size_t(3 << 20));
        void* p2 = a.allocate(900);  // same class: the cached block comes back
        CHECK(p2 == p);
        CHECK(a.stats().reuses == 1);
        CHECK(a.stats().cached == 0);
        a.release(q);
        // A smaller request takes the 3 MiB block only while it is at most twice the request's class.
        void* small = a.allocate(1 << 20);
        CHECK(small != q);
        void* big = a.allocate((3 << 20) - 4096);
        CHECK(big == q);
        CHECK(a.stats().peak_in_use == 1024 + size_t(3 << 20) + (1 << 20));
        a.release(small);
        a.release(big);
        a.release(p2);
        CHECK(a.stats().in_use == 0);
        CHECK(a.stats().cached == 1024 + size_t(3 << 20) + (1 << 20));
        a.reset_peak();
        CHECK(a.stats().peak_in_use == 0);
        a.empty_cache();
        CHECK(a.stats().cached == 0);
        CHECK(dev.live == 0);
        const std::string bad = error_of([&] { int x; a.release(&x); });
        CHECK(bad.find("did not hand out") != std::string::npos);
    }
    CHECK(dev.blocks.empty());
}

TEST_CASE("cuda caching allocator: out of memory empties the cache, retries once, then reports the sizes") {
    FakeDevice dev;
    dev.budget = 4 << 20;
    CachingAllocator a(fake_alloc, fake_free, &dev, "fake:0");
    void* p = a.allocate(3 << 20);
    a.release(p);  // 3 MiB cached
    // 1.25 MiB: the cached 3 MiB block is more than twice its class, and both do not fit: cache emptied, retried.
    void* q = a.allocate(1280 << 10);
    CHECK(q != nullptr);
    CHECK(a.stats().cached == 0);
    CHECK(dev.frees == 1);
    const std::string oom = error_of([&] { a.allocate(3 << 20); });
    CHECK(oom.find("fake:0 out of memory") != std::string::npos);
    CHECK(oom.find("asked for 3145728 bytes") != std::string::npos);
    CHECK(oom.find("1310720 bytes in use") != std::string::npos);
    a.release(q);
}

TEST_CASE("cuda index math: the indexer maps elements like the CPU's strided walk, merging what it can") {
    // A permuted, narrowed view broadcast against an output, with a second operand expanded along two dims.
    const Tensor base = Tensor::randn({4, 5, 6, 3}, 1);
    const Tensor a = base.permute({2, 0, 3, 1}).narrow(3, 1, 3);  // [6, 4, 3, 3], non-contiguous
    const Tensor b = Tensor::randn({4, 1, 3}, 2);                 // broadcast to [6, 4, 3, 3]
    const Shape out_shape = {6, 4, 3, 3};
    const Tensor out = Tensor::empty(out_shape);
    const Shape strides[3] = {out.strides(), ops::broadcast_strides(a, out_shape), ops::broadcast_strides(b, out_shape)};
    const int64_t offsets[3] = {0, a.offset(), b.offset()};
    const auto ix = cuda::make_indexer<3>(out_shape, strides, offsets);
    for (int64_t i = 0; i < shape_numel(out_shape); ++i) {
        int64_t off[3];
        ix.operand_offsets(i, off);
        CHECK(off[0] == i);
        CHECK(off[1] == strided_offset(out_shape, strides[1], a.offset(), i));
        CHECK(off[2] == strided_offset(out_shape, strides[2], b.offset(), i));
    }
    // Contiguous operands merge to one dim; size-1 dims vanish.
    const Shape c_strides[2] = {contiguous_strides({2, 1, 3, 4}), contiguous_strides({2, 1, 3, 4})};
    const int64_t c_offsets[2] = {0, 5};
    CHECK(cuda::make_indexer<2>({2, 1, 3, 4}, c_strides, c_offsets).rank == 1);
    // More than kMaxDims dims that cannot merge: a clean error naming the fix.
    const Shape many(10, 2);
    Shape reversed = contiguous_strides(many);
    std::reverse(reversed.begin(), reversed.end());
    const Shape m_strides[2] = {contiguous_strides(many), reversed};
    const int64_t m_offsets[2] = {0, 0};
    CHECK(error_of([&] { cuda::make_indexer<2>(many, m_strides, m_offsets); }).find(".contiguous()") !=
          std::string::npos);
}

TEST_CASE("cuda launch shapes cover n and stay within the grid limit") {
    CHECK(cuda::launch_blocks(0, 256) == 1);
    CHECK(cuda::launch_blocks(1, 256) == 1);
    CHECK(cuda::launch_blocks(256, 256) == 1);
    CHECK(cuda::launch_blocks(257, 256) == 2);
    CHECK(cuda::launch_blocks(int64_t(1) << 40, 256) == 65535);
}

TEST_CASE("cuda block reduction schedule: exact on integers, close on random rows, same whatever the row length") {
    for (int64_t count : {0, 1, 7, 255, 256, 257, 1000, 4099}) {
        std::vector<float> ints(static_cast<size_t>(count));
        double exact = 0;
        for (int64_t j = 0; j < count; ++j) {
            ints[size_t(j)] = float((j * 37) % 101) - 50.0f;
            exact += ints[size_t(j)];
        }
        CHECK(cuda::reduce_row_emulated<double>(ints.data(), count, 256) == exact);
        const Tensor r = Tensor::randn({count}, 3 + uint64_t(count), DType::F64);
        const std::vector<double> v = r.to_vector<double>();
        double seq = 0;
        for (double x : v) seq += x;
        CHECK(cuda::reduce_row_emulated<double>(v.data(), count, 256) == doctest::Approx(seq).epsilon(1e-12));
    }
}

TEST_CASE("cuda argmax rule: any combination order gives the CPU's first maximum, NaN first") {
    const std::vector<std::vector<double>> rows = {
        {1, 3, 3, 2}, {5, 5, 5}, {-1, NAN, 7, NAN}, {7, 2, 7, NAN}, {0}, {-INFINITY, -INFINITY}};
    const std::vector<int64_t> expected = {1, 0, 1, 3, 0, 0};
    for (size_t k = 0; k < rows.size(); ++k) {
        const auto& row = rows[k];
        // Lanes of 2: each lane scans its elements in order, then a two-step tree, as max_rows does.
        for (int threads : {1, 2, 4}) {
            std::vector<double> best(size_t(threads), row[0]);
            std::vector<int64_t> best_index(size_t(threads), 0);
            for (int lane = 0; lane < threads; ++lane)
                for (size_t j = size_t(lane); j < row.size(); j += size_t(threads))
                    if (cuda::max_candidate_wins(row[j], int64_t(j), best[size_t(lane)], best_index[size_t(lane)])) {
                        best[size_t(lane)] = row[j];
                        best_index[size_t(lane)] = int64_t(j);
                    }
            for (int half = threads / 2; half > 0; half /= 2)
                for (int lane = 0; lane < half; ++lane)
                    if (cuda::max_candidate_wins(best[size_t(lane + half)], best_index[size_t(lane + half)],
                                                 best[size_t(lane)], best_index[size_t(lane)])) {
                        best[size_t(lane)] = best[size_t(lane + half)];
                        best_index[size_t(lane)] = best_index[size_t(lane + half)];
                    }
            CHECK(best_index[0] == expected[k]);
        }
        // The CPU op agrees.
        CHECK(ops::argmax(Tensor::from_vector(row, {int64_t(row.size())}), 0).item() == double(expected[k]));
    }
}

TEST_CASE("cuda launchers without a GPU are one clean error") {
    if (cuda::available()) {
        MESSAGE("a CUDA GPU is visible; the GPU suite runs the launchers");
        return;
    }
    const std::string e = error_of([] { cuda::fill(0, nullptr, DType::F32, 4, 1.0); });
    CHECK(!e.empty());
    CHECK(e.find(cuda::built_with_cuda() ? "does not exist" : "no CUDA backend") != std::string::npos);
    CHECK(error_of([] { cuda::memory_stats(0); }).find("fix:") != std::string::npos);
}

TEST_CASE("cuda index math: per-row position lists group indices in order") {
    const cuda::IndexLists l = cuda::build_index_lists({3, 0, 3, 1, 3, 0}, 5);
    CHECK(l.offsets == std::vector<int64_t>{0, 2, 3, 3, 6, 6});
    CHECK(l.positions == std::vector<int64_t>{1, 5, 3, 0, 2, 4});
    const cuda::IndexLists empty = cuda::build_index_lists({}, 2);
    CHECK(empty.offsets == std::vector<int64_t>{0, 0, 0});
    CHECK(empty.positions.empty());
}

TEST_CASE("moving a model to a GPU where none is usable is one clean error, and the model stays on the CPU") {
    if (cuda::available()) {
        MESSAGE("a CUDA GPU is visible; the GPU suite moves models");
        return;
    }
    models::LanguageModel model(testing::tiny_lm_config(), 1);
    CHECK(error_of([&] { model.to(Device::cuda()); }).find("fix:") != std::string::npos);
    for (const auto& [name, t] : model.named_parameters()) CHECK(t.device().is_cpu());
    CHECK(std::isfinite(model.loss(testing::tiny_ids()).item()));
}

TEST_CASE("cuBLAS and cuFFT load on first use and every function the backend calls resolves, GPU or not") {
    // Loaded here if no earlier test case of this process did (cuda/math_libs.h: CPU-only runs never map them).
    const std::string loaded = cuda::load_math_libraries();
    INFO(loaded);
    if (!cuda::built_with_cuda()) {
        CHECK(loaded == "none (built without CUDA)");
    } else if (loaded.rfind("emulated", 0) != 0) {  // real CUDA (the host emulation has no libraries to load)
        CHECK(loaded.find("libcublas.so.") != std::string::npos);
        CHECK(loaded.find("libcufft.so.") != std::string::npos);
        CHECK(cuda::load_math_libraries() == loaded);  // loaded once
    }
}
