// The SVG writer and `ssmtune plot`: documents are well-formed XML (checked by a small strict parser here:
// one root, balanced tags, quoted attributes, only the five predefined entities), odd inputs (NaN, empty series,
// log axis with non-positive values, markup in labels) do not break them, and bad run directories are errors.
#include "test_util.h"

#include <fstream>

#include "tools/commands.h"
#include "tools/svg_plot.h"

using namespace ssmtune;
using namespace ssmtune::testing;

namespace {

// Strict enough for what we write: returns "" if well-formed, else what is wrong.
std::string xml_problem(const std::string& doc) {
    std::vector<std::string> stack;
    size_t i = 0, roots = 0;
    if (doc.rfind("<?xml", 0) == 0) i = doc.find("?>") + 2;
    while (i < doc.size()) {
        if (doc[i] == '&') {
            static const char* ents[] = {"&amp;", "&lt;", "&gt;", "&quot;", "&apos;"};
            bool ok = false;
            for (const char* e : ents) ok = ok || doc.compare(i, std::strlen(e), e) == 0;
            if (!ok) return "bad entity at " + std::to_string(i);
            ++i;
            continue;
        }
        if (doc[i] != '<') {
            if (stack.empty() && !std::isspace(static_cast<unsigned char>(doc[i]))) return "text outside the root";
            ++i;
            continue;
        }
        const size_t end = doc.find('>', i);
        if (end == std::string::npos) return "unterminated tag";
        std::string tag = doc.substr(i + 1, end - i - 1);
        i = end + 1;
        if (tag[0] == '/') {
            if (stack.empty() || stack.back() != tag.substr(1)) return "mismatched </" + tag.substr(1) + ">";
            stack.pop_back();
            continue;
        }
        const bool self_closing = tag.back() == '/';
        if (self_closing) tag.pop_back();
        const std::string name = tag.substr(0, tag.find_first_of(" \n\t"));
        // attributes: name="value" with no '<' or stray quotes inside
        size_t q = 0;
        for (char c : tag) q += c == '"';
        if (q % 2) return "unbalanced quotes in <" + name + ">";
        if (tag.find('<') != std::string::npos) return "'<' inside <" + name + ">";
        if (stack.empty()) ++roots;
        if (!self_closing) stack.push_back(name);
    }
    if (!stack.empty()) return "unclosed <" + stack.back() + ">";
    return roots == 1 ? "" : "expected one root element, found " + std::to_string(roots);
}

}  // namespace

TEST_CASE("svg plot: well-formed for ordinary and odd inputs") {
    tools::PlotSeries a{"train <loss> & \"more\"", {{0, 2.5}, {10, 1.2}, {20, 0.7}}};
    tools::PlotSeries b{"val", {{0, std::nan("")}, {10, 1.0}, {20, -1.0}}};
    tools::PlotSeries empty{"empty", {}};
    for (bool log_y : {false, true}) {
        const std::string doc = tools::render_svg_plot({a, b, empty}, {"t & t", "step", "loss <nats>", log_y});
        CHECK(xml_problem(doc) == "");
        CHECK(doc.find("train &lt;loss&gt; &amp; &quot;more&quot;") != std::string::npos);
        CHECK(doc.find("<polyline") != std::string::npos);
    }
    CHECK(xml_problem(tools::render_svg_plot({}, {})) == "");
    CHECK(xml_problem(tools::render_svg_plot({{"one point", {{3, 3}}}}, {})) == "");
    CHECK(xml_problem("<a><b></a></b>") != "");  // the checker itself can fail
}

TEST_CASE("plot command redraws loss.svg from metrics.jsonl") {
    const auto dir = scratch_dir("plot_cmd");
    {
        std::ofstream log(dir / "metrics.jsonl");
        log << R"({"step": 10, "loss": 2.0, "lr": 0.001})" << "\n"
            << R"({"step": 20, "loss": 1.5, "lr": 0.001})" << "\n"
            << R"({"step": 20, "split": "val", "loss": 1.7, "accuracy": 0.4})" << "\n";
    }
    auto files = tools::plot_run(dir.string());
    REQUIRE(files.size() == 2);
    for (const auto& f : files) {
        CHECK(xml_problem(file_bytes(f)) == "");
    }
    CHECK_THROWS_WITH_AS(tools::plot_run((dir / "nope").string()), doctest::Contains("no metrics log"), Error);
    std::ofstream(dir / "metrics.jsonl", std::ios::app) << "{\"step\": 30, \"lo";
    CHECK_THROWS_WITH_AS(tools::plot_run(dir.string()), doctest::Contains("line 4 is not JSON"), Error);
}
