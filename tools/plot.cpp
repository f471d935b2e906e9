// `ssmtune plot RUN_DIR`: redraws a run's plots from its metrics.jsonl — loss.svg (training loss per logging step
// and validation loss per evaluation, log y) and, when the run logged it, accuracy.svg. Every training command
// calls plot_run() when it ends, so the plots are always there; this command is for runs still in progress or
// for logs copied from elsewhere.
// Not here: the gradient-study plots (written by the study command itself).
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "engine/error.h"
#include "tools/commands.h"
#include "tools/svg_plot.h"

namespace ssmtune::tools {

namespace fs = std::filesystem;

std::vector<std::string> plot_run(const std::string& run_dir) {
    const fs::path log = fs::path(run_dir) / "metrics.jsonl";
    std::ifstream in(log);
    SSMTUNE_CHECK(in.good(), "no metrics log at ", log.string(), "; fix: pass a run directory written by "
                  "`ssmtune train` or `ssmtune finetune`");
    PlotSeries train{"train loss", {}}, val{"val loss", {}}, acc{"val accuracy", {}};
    std::string line;
    int64_t line_no = 0;
    while (std::getline(in, line)) {
        ++line_no;
        if (line.empty()) continue;
        nlohmann::json j;
        try {
            j = nlohmann::json::parse(line);
        } catch (const nlohmann::json::exception&) {  // parse_error, out_of_range (numbers beyond double)
            SSMTUNE_FAIL(log.string(), ": line ", line_no, " is not JSON (a run killed mid-write leaves a partial last "
                         "line; delete it)");
        }
        if (!j.contains("step") || !j["step"].is_number()) continue;
        const double step = j["step"].get<double>();
        const bool is_val = j.contains("split");
        if (j.contains("loss") && j["loss"].is_number()) (is_val ? val : train).points.emplace_back(step, j["loss"].get<double>());
        if (is_val && j.contains("accuracy") && j["accuracy"].is_number()) acc.points.emplace_back(step, j["accuracy"].get<double>());
    }
    SSMTUNE_CHECK(!train.points.empty() || !val.points.empty(), log.string(), " holds no loss records");
    std::vector<std::string> written;
    std::vector<PlotSeries> losses;
    if (!train.points.empty()) losses.push_back(train);
    if (!val.points.empty()) losses.push_back(val);
    const std::string loss_svg = (fs::path(run_dir) / "loss.svg").string();
    write_svg_plot(loss_svg, losses, {"loss — " + fs::path(run_dir).filename().string(), "step", "loss", true});
    written.push_back(loss_svg);
    if (!acc.points.empty()) {
        const std::string acc_svg = (fs::path(run_dir) / "accuracy.svg").string();
        write_svg_plot(acc_svg, {acc}, {"validation accuracy", "step", "accuracy", false});
        written.push_back(acc_svg);
    }
    return written;
}

int run_plot(int argc, char** argv) {
    if (argc >= 1 && (std::string(argv[0]) == "--help" || std::string(argv[0]) == "-h")) {
        std::printf("usage: ssmtune plot RUN_DIR\nRedraws loss.svg (and accuracy.svg) from RUN_DIR/metrics.jsonl.\n");
        return 0;
    }
    if (argc != 1) throw UsageError("plot: expected exactly one argument, the run directory");
    for (const auto& f : plot_run(argv[0])) std::printf("wrote %s\n", f.c_str());
    return 0;
}

}  // namespace ssmtune::tools
