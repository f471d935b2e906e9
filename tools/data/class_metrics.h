// Classification metrics from predicted and true labels, as scikit-learn defines them (the metrics the ssm-peft and
// state-offset papers report next to accuracy, e.g. for GLUE): accuracy, macro-averaged F1 (f1_score with
// average="macro": the unweighted mean over every label that occurs in either list of 2·tp / (2·tp + fp + fn)) and
// Matthews' correlation coefficient (matthews_corrcoef: Gorodkin's multi-class R_K from the confusion matrix, 0 when
// either side has a single label).
// Not here: averaged variants other than macro, per-class reports, generation metrics (BLEU, ROUGE).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace ssmtune::data {

// {"accuracy", "macro_f1", "mcc"} of `predicted` against `truth` (same length, at least one item). Labels are any
// integers: a prediction that is no class of the truth (a language model answering with another token) is a label
// of its own, as scikit-learn counts it.
std::map<std::string, double> classification_metrics(const std::vector<int64_t>& predicted,
                                                     const std::vector<int64_t>& truth);

}  // namespace ssmtune::data
