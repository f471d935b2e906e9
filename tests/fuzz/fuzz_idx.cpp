// libFuzzer target: IDX image and label files (plain or gzip) and the sequence views.
#include "tests/fuzz/fuzz_common.h"
#include "tools/data/idx.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    namespace fz = ssmtune::fuzz;
    std::string images, labels;
    fz::split2(data, size, images, labels);
    const auto dir = fz::scratch();
    fz::write_bytes(dir / "images", reinterpret_cast<const uint8_t*>(images.data()), images.size());
    fz::write_bytes(dir / "labels", reinterpret_cast<const uint8_t*>(labels.data()), labels.size());
    try {
        auto im = ssmtune::data::read_idx_images((dir / "images").string());
        auto lb = ssmtune::data::read_idx_labels((dir / "labels").string());
        ssmtune::data::ImageViewOptions o;
        o.order = size % 3 == 0 ? "pixel" : size % 3 == 1 ? "row" : "permuted";
        (void)ssmtune::data::image_sequences(im, lb, o);
    } catch (const ssmtune::Error&) {
    }
    return 0;
}
