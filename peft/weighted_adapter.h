// Combining LORA adapters into one new adapter (HF PEFT's LoraModel.add_weighted_adapter and its merge_utils: task
// arithmetic, TIES (Yadav et al. 2023), DARE (Yu et al. 2024), magnitude pruning), entry point
// AdapterSet::add_weighted_adapter (peft.h). The pieces below work on flat float64 tensors and are exposed for the
// tests. Not here: the adapters themselves (lora.cpp), merging into the base weights (Adapter::merge).
#pragma once

#include <string>
#include <vector>

#include "engine/rng.h"

namespace ssmtune::peft {

// Every combination_type add_weighted_adapter accepts (HF's list).
const std::vector<std::string>& combination_types();

// HF's magnitude_based_pruning: keeps the int(density · numel) entries of largest magnitude (the lower index first
// among equal magnitudes, where torch.topk leaves the choice open), zeroes the rest.
std::vector<double> prune_by_magnitude(const std::vector<double>& t, double density);

// HF's merge functions on task tensors of one size, `merge` one of:
//   linear (task_arithmetic)  Σ w_i t_i
//   magnitude_prune           Σ w_i prune_by_magnitude(t_i)
//   ties                      p_i = prune_by_magnitude(t_i); the majority sign per entry from the unweighted p_i
//                             ("total": sign of Σ p_i, "frequency": of Σ sign(p_i), ≥ 0 counting as +); then
//                             Σ w_i p_i over the i whose sign agrees, divided by their count (at least 1)
//   dare_linear, dare_ties    as linear / ties with p_i = t_i · mask / density, mask ~ Bernoulli(density) drawn
//                             from `gen` (our Philox draws: the same semantics as torch.bernoulli, not its bits)
// density ≥ 1 keeps every entry (HF warns and skips pruning); a negative density is an Error, and so is 0 for dare
// (it divides by the density: HF's tensors would be NaN).
std::vector<double> merge_task_tensors(const std::string& merge, const std::vector<std::vector<double>>& tensors,
                                       const std::vector<double>& weights, double density,
                                       const std::string& majority_sign_method, Generator& gen);

// torch.quantile's default (linear interpolation between the two nearest ranks) of `values` at q in [0, 1].
double torch_quantile(std::vector<double> values, double q);

}  // namespace ssmtune::peft
