// Module tree walking, counting and strict loading (see module.h).
#include "models/module.h"

#include <set>
#include <unordered_set>

#include "engine/tensor_copy.h"
#include "ops/ops.h"

namespace ssmtune::models {

namespace {
std::string join(const std::string& prefix, const std::string& name) { return prefix.empty() ? name : prefix + "." + name; }
}  // namespace

Tensor& Module::register_parameter(const std::string& name, Tensor value, bool requires_grad) {
    for (const auto& [n, t] : params_) SSMTUNE_CHECK(n != name, "parameter '", name, "' registered twice");
    if (requires_grad) value.set_requires_grad(true);
    params_.emplace_back(name, value);
    return params_.back().second;
}

void Module::replace_parameter(const std::string& name, Tensor value) {
    for (auto& [n, t] : params_) {
        if (n == name) { t = value; return; }
    }
    SSMTUNE_FAIL("no parameter '", name, "' in ", type_name());
}

void Module::attach_parameter_delta(const std::string& param, const std::string& child_name,
                                    std::shared_ptr<ParameterDelta> delta) {
    bool found = false;
    for (const auto& [n, t] : params_) found = found || n == param;
    SSMTUNE_CHECK(found, type_name(), " has no parameter '", param, "' to attach a delta to");
    SSMTUNE_CHECK(!parameter_delta(param), type_name(), ".", param, " already has a delta attached; fix: detach it first");
    param_deltas_.emplace_back(param, delta);
    delta->train(is_training());
    register_module(child_name, delta);
}

void Module::detach_parameter_delta(const std::string& param) {
    for (auto it = param_deltas_.begin(); it != param_deltas_.end(); ++it) {
        if (it->first == param) {
            remove_child(it->second.get());
            param_deltas_.erase(it);
            return;
        }
    }
}

ParameterDelta* Module::parameter_delta(const std::string& param) {
    for (auto& [n, d] : param_deltas_)
        if (n == param) return d.get();
    return nullptr;
}

void Module::remove_child(const Module* child) {
    for (auto it = children_.begin(); it != children_.end(); ++it) {
        if (it->second.get() == child) { children_.erase(it); return; }
    }
}

Tensor Module::effective(size_t index) {
    const auto& [name, t] = params_.at(index);
    if (param_deltas_.empty()) return t;
    ParameterDelta* d = parameter_delta(name);
    return d ? ops::add(t, d->delta()) : t;
}

Tensor Module::effective(const std::string& param) {
    for (size_t i = 0; i < params_.size(); ++i)
        if (params_[i].first == param) return effective(i);
    SSMTUNE_FAIL(type_name(), " has no parameter '", param, "'");
}

std::vector<std::pair<std::string, Tensor>> Module::named_parameters(const std::string& prefix) const {
    std::vector<std::pair<std::string, Tensor>> out;
    for (const auto& [n, t] : params_) out.emplace_back(join(prefix, n), t);
    for (const auto& [n, child] : children_) {
        auto sub = child->named_parameters(join(prefix, n));
        out.insert(out.end(), sub.begin(), sub.end());
    }
    return out;
}

std::vector<Tensor> Module::parameters() const {
    std::vector<Tensor> out;
    for (auto& [n, t] : named_parameters()) out.push_back(t);
    return out;
}

std::vector<std::pair<std::string, Module*>> Module::named_modules(const std::string& prefix) {
    std::vector<std::pair<std::string, Module*>> out = {{prefix, this}};
    for (auto& [n, child] : children_) {
        auto sub = child->named_modules(join(prefix, n));
        out.insert(out.end(), sub.begin(), sub.end());
    }
    return out;
}

std::vector<Generator*> training_generators(Module& m) {
    std::vector<Generator*> out;
    for (auto& [name, module] : m.named_modules())
        if (Generator* g = module->training_generator()) out.push_back(g);
    return out;
}

Tensor* Module::find_parameter(const std::string& name) {
    for (auto& [n, t] : params_)
        if (n == name) return &t;
    for (auto& [n, child] : children_) {
        if (name.size() > n.size() && name.compare(0, n.size(), n) == 0 && name[n.size()] == '.') {
            if (Tensor* t = child->find_parameter(name.substr(n.size() + 1))) return t;
        }
    }
    return nullptr;
}

Module* Module::find_module(const std::string& name) {
    if (name.empty()) return this;
    for (auto& [n, child] : children_) {
        if (name == n) return child.get();
        if (name.size() > n.size() && name.compare(0, n.size(), n) == 0 && name[n.size()] == '.')
            if (Module* m = child->find_module(name.substr(n.size() + 1))) return m;
    }
    return nullptr;
}

int64_t Module::num_parameters(bool trainable_only) const {
    int64_t n = 0;
    for (const auto& [name, t] : named_parameters())
        if (!trainable_only || t.requires_grad()) n += t.numel();
    return n;
}

void Module::set_requires_grad(bool on) {
    for (auto& [name, t] : named_parameters()) t.set_requires_grad(on);
}

void Module::train(bool on) {
    training_ = on;
    for (auto& [n, child] : children_) child->train(on);
}

TensorMap Module::state_dict() const {
    TensorMap out;
    for (const auto& [n, t] : named_parameters()) out[n] = t;
    return out;
}

void Module::load_state_dict(const TensorMap& tensors, bool strict, const std::string& source) {
    std::map<std::string, Shape> shapes;
    for (const auto& [name, t] : tensors) shapes[name] = t.shape();
    load_state_dict(shapes, [&](const std::string& name, Tensor& dst) { copy_into(dst, tensors.at(name)); }, strict,
                    source);
}

void Module::load_state_dict(const std::map<std::string, Shape>& shapes,
                             const std::function<void(const std::string& name, Tensor& dst)>& read, bool strict,
                             const std::string& source) {
    std::vector<std::string> missing, mismatched, unexpected;
    const auto params = named_parameters();
    std::set<std::string> known;
    for (const auto& [name, t] : params) {
        known.insert(name);
        auto it = shapes.find(name);
        if (it == shapes.end()) { missing.push_back(name); continue; }
        if (it->second != t.shape())
            mismatched.push_back(name + " (file " + shape_str(it->second) + ", model " + shape_str(t.shape()) + ")");
    }
    for (const auto& [name, shape] : shapes)
        if (!known.count(name)) unexpected.push_back(name);
    std::string problems;
    const auto list = [&](const char* what, const std::vector<std::string>& names) {
        if (names.empty()) return;
        problems += std::string(problems.empty() ? "" : "; ") + what + ":";
        for (const auto& n : names) problems += " " + n;
    };
    list("missing", missing);
    list("wrong shape", mismatched);
    if (strict) list("unexpected", unexpected);
    SSMTUNE_CHECK(problems.empty() || (!strict && mismatched.empty()), "cannot load ", source, " into ", type_name(),
                  ": ", problems);
    for (auto& [name, t] : params) {
        if (!shapes.count(name)) continue;
        Tensor dst = t.detach();
        read(name, dst);
    }
}

void Module::to(DType dtype) {
    for (auto& [n, t] : params_) {
        if (t.dtype() == dtype) continue;
        const bool requires_grad = t.requires_grad();
        t = t.detach().to(dtype);
        if (requires_grad) t.set_requires_grad(true);
    }
    for (auto& [n, child] : children_) child->to(dtype);
}

void Module::to(Device device) {
    std::vector<Tensor> all;
    std::unordered_set<const TensorImpl*> seen;  // a tied weight is moved once
    for (auto& [n, t] : named_parameters())
        if (seen.insert(t.impl_ptr().get()).second) all.push_back(t);
    move_in_place(all, device);
}

}  // namespace ssmtune::models
