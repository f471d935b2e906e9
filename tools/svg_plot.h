// A small SVG line-plot writer (no plotting dependency): several named series on shared axes, linear or log y,
// axis ticks with round numbers, a legend, escaped text. Used for loss curves and the gradient studies.
// Not here: bar charts, subplots, interactive output.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace ssmtune::tools {

struct PlotSeries {
    std::string name;
    std::vector<std::pair<double, double>> points;  // (x, y); non-finite points are skipped
};

struct PlotOptions {
    std::string title, x_label, y_label;
    bool log_y = false;  // non-positive values are skipped on a log axis
    int width = 720, height = 420;
};

// The SVG document as a string (well-formed XML).
std::string render_svg_plot(const std::vector<PlotSeries>& series, const PlotOptions& options);
// Writes it atomically to `path`.
void write_svg_plot(const std::string& path, const std::vector<PlotSeries>& series, const PlotOptions& options);

}  // namespace ssmtune::tools
