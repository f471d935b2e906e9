// Accuracy, macro-F1 and Matthews' correlation coefficient from a confusion matrix (see class_metrics.h).
#include "tools/data/class_metrics.h"

#include <cmath>

#include "engine/error.h"

namespace ssmtune::data {

std::map<std::string, double> classification_metrics(const std::vector<int64_t>& predicted,
                                                     const std::vector<int64_t>& truth) {
    SSMTUNE_CHECK(!truth.empty() && predicted.size() == truth.size(), "classification_metrics: ", predicted.size(),
                  " predictions for ", truth.size(), " labels; fix: one prediction per item, at least one item");
    // per label: true count (row sum), predicted count (column sum), hits (diagonal)
    std::map<int64_t, double> t_sum, p_sum, tp;
    double correct = 0;
    for (size_t i = 0; i < truth.size(); ++i) {
        t_sum[truth[i]] += 1;
        p_sum[predicted[i]] += 1;
        if (predicted[i] == truth[i]) {
            tp[truth[i]] += 1;
            correct += 1;
        }
    }
    std::map<int64_t, bool> labels;  // the union, as sklearn's unique_labels
    for (auto& [l, c] : t_sum) labels[l] = true;
    for (auto& [l, c] : p_sum) labels[l] = true;
    double f1_sum = 0;
    for (auto& [l, unused] : labels) {
        const double hits = tp[l], fp = p_sum[l] - hits, fn = t_sum[l] - hits;
        f1_sum += 2 * hits / (2 * hits + fp + fn);  // the denominator is > 0: l occurs on one side
    }
    const double n = double(truth.size());
    double tt = 0, pp = 0, tp_dot = 0;  // Σ t_k², Σ p_k², Σ t_k p_k
    for (auto& [l, unused] : labels) {
        tt += t_sum[l] * t_sum[l];
        pp += p_sum[l] * p_sum[l];
        tp_dot += t_sum[l] * p_sum[l];
    }
    const double cov_tp = correct * n - tp_dot, cov_pp = n * n - pp, cov_tt = n * n - tt;
    const double mcc = cov_pp * cov_tt == 0 ? 0.0 : cov_tp / std::sqrt(cov_tt * cov_pp);
    return {{"accuracy", correct / n}, {"macro_f1", f1_sum / double(labels.size())}, {"mcc", mcc}};
}

}  // namespace ssmtune::data
