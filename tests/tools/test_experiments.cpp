// The experiments harness on tiny settings: both experiments run, write results.csv/.md with one row per method
// and a claims section; bad arguments are usage errors.
#include "test_util.h"
#include "tests/tools/cli_test_util.h"

#include <fstream>

#include "tools/commands.h"

using namespace ssmtune;
using namespace ssmtune::testing;
namespace fs = std::filesystem;

namespace {
int64_t lines(const fs::path& p) {
    std::ifstream in(p);
    int64_t n = 0;
    for (std::string l; std::getline(in, l);) ++n;
    return n;
}
}  // namespace

TEST_CASE("experiments run on tiny settings and write their tables") {
    const auto dir = scratch_dir("experiments");
    REQUIRE(cli({"experiment", "s4d-synthetic", "--iters", "2", "--batch", "2", "--seq-len", "8", "--out",
                 (dir / "s4d").string()}) == 0);
    CHECK(lines(dir / "s4d" / "results.csv") == 1 + 11);
    const std::string md = file_bytes(dir / "s4d" / "results.md");
    CHECK(md.find("## Claims") != std::string::npos);
    CHECK(md.find("state-offset h >= initial state") != std::string::npos);
    REQUIRE(cli({"experiment", "mamba-transfer", "--base-steps", "2", "--iters", "1", "--out", (dir / "mamba").string()}) == 0);
    CHECK(lines(dir / "mamba" / "results.csv") == 1 + 16);
    CHECK(file_bytes(dir / "mamba" / "results.md").find("prompt/prefix weaker than state-based") != std::string::npos);
    CHECK(file_bytes(dir / "mamba" / "results.md").find("PiSSA >= LoRA") != std::string::npos);
    CHECK(cli({"experiment", "nope"}) == 2);
    CHECK(cli({"experiment", "s4d-synthetic", "--iters", "0"}) == 2);
    CHECK(cli({"experiment", "--help"}) == 0);
}
