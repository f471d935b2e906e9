// The tiny configurations the model, PEFT and GPU tests share (LM: D=8, E=16, N=4, R=2, K=3, 2 layers, vocabulary
// 11; S4D: 3 inputs, 4 classes, H=6, N=4, 2 layers, no dropout) and a fixed batch of ids, so every test file
// builds the same small model the same way.
#pragma once

#include <string>

#include "models/s4d_model.h"
#include "models/ssm_lm.h"

namespace ssmtune::testing {

inline models::LMConfig tiny_lm_config(const std::string& type = "mamba") {
    models::LMConfig c;
    c.model_type = type;
    c.vocab_size = 11;
    c.hidden_size = 8;
    c.num_hidden_layers = 2;
    c.state_size = 4;
    c.expand = 2;
    c.intermediate_size = 16;
    c.conv_kernel = 3;
    c.time_step_rank = 2;
    return c;
}

inline models::S4DConfig tiny_s4d_config() {
    models::S4DConfig c;
    c.d_input = 3;
    c.d_output = 4;
    c.d_model = 6;
    c.d_state = 4;
    c.n_layers = 2;
    c.dropout = 0.0;
    return c;
}

inline Tensor tiny_ids() { return Tensor::from_vector<int64_t>({1, 4, 2, 9, 0, 3, 7, 5, 5, 10, 2, 1, 8, 6}, {2, 7}); }

}  // namespace ssmtune::testing
