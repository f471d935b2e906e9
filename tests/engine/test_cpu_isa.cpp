// engine/cpu_isa.h: the level in use is available, switching round-trips and refuses what the CPU or build lacks,
// the bench/version line names it, and the environment variable's spelling is checked.
#include "engine/cpu_isa.h"

#include <string>

#include "engine/version.h"
#include "test_util.h"

using namespace ssmtune;

TEST_CASE("cpu_isa is an available level and set_cpu_isa switches between the available ones") {
    const CpuIsa before = cpu_isa();
    CHECK(cpu_isa_available(before));
    CHECK(cpu_isa_available(CpuIsa::baseline));
    set_cpu_isa(CpuIsa::baseline);
    CHECK(cpu_isa() == CpuIsa::baseline);
    CHECK(build_info().find("CPU kernels: baseline") != std::string::npos);
    if (cpu_isa_available(CpuIsa::avx2)) {
        set_cpu_isa(CpuIsa::avx2);
        CHECK(cpu_isa() == CpuIsa::avx2);
        CHECK(build_info().find("CPU kernels: avx2") != std::string::npos);
    } else {
        const std::string msg = testing::error_of([] { set_cpu_isa(CpuIsa::avx2); });
        INFO(msg);
        CHECK(msg.find("avx2 is not available") != std::string::npos);
        CHECK(msg.find("fix: use baseline") != std::string::npos);
        CHECK(cpu_isa() == CpuIsa::baseline);  // unchanged by the refused switch
    }
    set_cpu_isa(before);
    CHECK(std::string(cpu_isa_name(CpuIsa::avx2)) == "avx2");
    CHECK(std::string(cpu_isa_name(CpuIsa::baseline)) == "baseline");
}
