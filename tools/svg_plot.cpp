// SVG line plots (see svg_plot.h). Ticks: 1-2-5 steps on linear axes, powers of ten on log axes.
#include "tools/svg_plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <sstream>

#include "engine/error.h"
#include "engine/safetensors.h"

namespace ssmtune::tools {

namespace {

std::string escape_xml(const std::string& s) {
    std::string out;
    for (char c : s) {
        switch (c) {
            case '&': out += "&amp;"; break;
            case '<': out += "&lt;"; break;
            case '>': out += "&gt;"; break;
            case '"': out += "&quot;"; break;
            case '\'': out += "&apos;"; break;
            default:
                if (static_cast<unsigned char>(c) >= 0x20 || c == '\n' || c == '\t') out += c;  // XML 1.0 chars only
        }
    }
    return out;
}

std::string num(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.4g", v);
    return buf;
}

// Round tick positions covering [lo, hi]: steps of 1, 2 or 5 × 10^k, about `target` of them.
std::vector<double> linear_ticks(double lo, double hi, int target = 6) {
    const double raw = (hi - lo) / target, mag = std::pow(10.0, std::floor(std::log10(raw)));
    double step = mag;
    for (double m : {1.0, 2.0, 5.0, 10.0})
        if (m * mag >= raw) { step = m * mag; break; }
    std::vector<double> t;
    for (double v = std::ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) t.push_back(std::fabs(v) < step * 1e-9 ? 0 : v);
    return t;
}

const char* const kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"};

}  // namespace

std::string render_svg_plot(const std::vector<PlotSeries>& series, const PlotOptions& o) {
    const double left = 70, right = 160, top = 40, bottom = 50;
    const double pw = o.width - left - right, ph = o.height - top - bottom;
    double x0 = std::numeric_limits<double>::infinity(), x1 = -x0, y0 = x0, y1 = -x0;
    auto usable = [&](double x, double y) { return std::isfinite(x) && std::isfinite(y) && (!o.log_y || y > 0); };
    for (const auto& s : series)
        for (auto [x, y] : s.points) {
            if (!usable(x, y)) continue;
            const double yy = o.log_y ? std::log10(y) : y;
            x0 = std::min(x0, x); x1 = std::max(x1, x); y0 = std::min(y0, yy); y1 = std::max(y1, yy);
        }
    if (!std::isfinite(x0)) { x0 = 0; x1 = 1; y0 = 0; y1 = 1; }
    if (x1 == x0) { x0 -= 0.5; x1 += 0.5; }
    if (y1 == y0) { y0 -= 0.5; y1 += 0.5; }
    const double pad = (y1 - y0) * 0.05;
    y0 -= pad; y1 += pad;
    auto px = [&](double x) { return left + (x - x0) / (x1 - x0) * pw; };
    auto py = [&](double y) { return top + (1 - ((o.log_y ? std::log10(y) : y) - y0) / (y1 - y0)) * ph; };

    std::ostringstream svg;
    svg << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << o.width << "\" height=\"" << o.height
        << "\" viewBox=\"0 0 " << o.width << " " << o.height << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
        << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        << "<text x=\"" << o.width / 2 << "\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">" << escape_xml(o.title) << "</text>\n";
    // axes and ticks
    svg << "<rect x=\"" << left << "\" y=\"" << top << "\" width=\"" << pw << "\" height=\"" << ph
        << "\" fill=\"none\" stroke=\"#444\"/>\n";
    for (double t : linear_ticks(x0, x1)) {
        svg << "<line x1=\"" << num(px(t)) << "\" y1=\"" << top + ph << "\" x2=\"" << num(px(t)) << "\" y2=\"" << top + ph + 5
            << "\" stroke=\"#444\"/><text x=\"" << num(px(t)) << "\" y=\"" << top + ph + 18 << "\" text-anchor=\"middle\">"
            << num(t) << "</text>\n";
    }
    std::vector<double> yt;
    if (o.log_y) {
        for (double e = std::ceil(y0); e <= y1; e += 1) yt.push_back(std::pow(10.0, e));
        if (yt.size() < 2) for (double t : linear_ticks(std::pow(10.0, y0), std::pow(10.0, y1), 4)) if (t > 0) yt.push_back(t);
    } else {
        yt = linear_ticks(y0, y1);
    }
    for (double t : yt) {
        svg << "<line x1=\"" << left - 5 << "\" y1=\"" << num(py(t)) << "\" x2=\"" << left + pw << "\" y2=\"" << num(py(t))
            << "\" stroke=\"#ddd\"/><text x=\"" << left - 8 << "\" y=\"" << num(py(t) + 4) << "\" text-anchor=\"end\">"
            << num(t) << "</text>\n";
    }
    svg << "<text x=\"" << left + pw / 2 << "\" y=\"" << o.height - 12 << "\" text-anchor=\"middle\">" << escape_xml(o.x_label)
        << "</text>\n<text x=\"16\" y=\"" << top + ph / 2 << "\" text-anchor=\"middle\" transform=\"rotate(-90 16 "
        << top + ph / 2 << ")\">" << escape_xml(o.y_label + (o.log_y ? " (log)" : "")) << "</text>\n";
    // series and legend
    for (size_t i = 0; i < series.size(); ++i) {
        const char* color = kColors[i % (sizeof kColors / sizeof kColors[0])];
        std::string pts;
        for (auto [x, y] : series[i].points)
            if (usable(x, y)) pts += num(px(x)) + "," + num(py(y)) + " ";
        if (!pts.empty())
            svg << "<polyline fill=\"none\" stroke=\"" << color << "\" stroke-width=\"1.6\" points=\"" << pts << "\"/>\n";
        const double ly = top + 14 + 18 * double(i);
        svg << "<line x1=\"" << left + pw + 12 << "\" y1=\"" << ly << "\" x2=\"" << left + pw + 32 << "\" y2=\"" << ly
            << "\" stroke=\"" << color << "\" stroke-width=\"2\"/><text x=\"" << left + pw + 36 << "\" y=\"" << ly + 4
            << "\">" << escape_xml(series[i].name) << "</text>\n";
    }
    svg << "</svg>\n";
    return svg.str();
}

void write_svg_plot(const std::string& path, const std::vector<PlotSeries>& series, const PlotOptions& options) {
    const std::string doc = render_svg_plot(series, options);
    write_file_atomically(path, [&](const std::string& tmp) {
        std::ofstream out(tmp, std::ios::binary);
        out << doc;
        out.close();
        SSMTUNE_CHECK(out.good(), "writing ", tmp, " failed");
    });
}

}  // namespace ssmtune::tools
