// libFuzzer target: the JSON run-config parser of the training commands, with --set style assignments, the train
// section as the loop reads it (loop_options), and the adapter-config parser (all take user-written JSON).
#include <nlohmann/json.hpp>

#include "peft/peft.h"
#include "tests/fuzz/fuzz_common.h"
#include "tools/data/synthetic.h"
#include "tools/run_config.h"
#include "tools/train_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string json_text, assignments;
    ssmtune::fuzz::split2(data, size, json_text, assignments);
    try {
        nlohmann::json j = nlohmann::json::parse(json_text, nullptr, /*allow_exceptions=*/false);
        if (j.is_discarded()) return 0;
        nlohmann::json rc = ssmtune::tools::resolve_run_config(j, "fuzz");
        if (!assignments.empty()) ssmtune::tools::apply_assignments(rc, assignments);
        (void)ssmtune::data::SyntheticTask::from_json(rc["data"]["task"], "fuzz task");
        (void)ssmtune::tools::loop_options(rc, false, true);  // the train section as the training loop reads it
    } catch (const ssmtune::Error&) {
    }
    try {
        (void)ssmtune::peft::Config::parse(json_text, "fuzz adapter config");
    } catch (const ssmtune::Error&) {
    }
    return 0;
}
