// Optimizer base (groups, state save/load) and the SGD and AdamW updates (grad_clip.cpp and lr_schedule.cpp
// hold the rest of optim.h).
//
// The update kernels are plain loops over one parameter's elements in its dtype (float or double), one call
// per element of optim_math.h (which cuda/optim.cu shares for parameters on a GPU), written in the operation order of PyTorch's `_single_tensor_sgd` / `_single_tensor_adam(decoupled_weight_decay)`,
// with scalars rounded to the parameter's dtype where PyTorch rounds them. Agreement with PyTorch is to
// rounding, not bitwise: PyTorch's vectorised CPU kernels use FMA in places (lerp, add with alpha).
// Elementwise, so the OpenMP split cannot change results. Optimizer state is saved from the host and loaded
// onto the parameter's device. Not here: foreach/fused multi-tensor kernels, `maximize`, `differentiable`.
#include "autograd/optim.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <set>
#include <tuple>
#include <unordered_map>

#include "autograd/node.h"
#include "autograd/optim_math.h"
#include "cuda/kernels.h"
#include "engine/tensor_copy.h"

namespace ssmtune::autograd {

namespace {

constexpr int64_t kGrain = 32768;  // elements per thread before OpenMP splits a loop (as ops' kParallelGrain)

std::string fmt_double(double v) {
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%.17g", v);
    return buf;
}

const std::string& meta_get(const Metadata& meta, const std::string& key) {
    auto it = meta.find(key);
    SSMTUNE_CHECK(it != meta.end(), "optimizer state: metadata key '", key,
                  "' is missing; fix: load a file written by Optimizer::save (or state_dict)");
    return it->second;
}

double meta_double(const Metadata& meta, const std::string& key) {
    const std::string& s = meta_get(meta, key);
    char* end = nullptr;
    errno = 0;
    const double v = std::strtod(s.c_str(), &end);
    SSMTUNE_CHECK(!s.empty() && end == s.c_str() + s.size() && errno == 0, "optimizer state: metadata '", key,
                  "' = '", s, "' is not a number");
    return v;
}

int64_t meta_int(const Metadata& meta, const std::string& key) {
    const std::string& s = meta_get(meta, key);
    char* end = nullptr;
    errno = 0;
    const long long v = std::strtoll(s.c_str(), &end, 10);
    SSMTUNE_CHECK(!s.empty() && end == s.c_str() + s.size() && errno == 0 && v >= 0, "optimizer state: metadata '",
                  key, "' = '", s, "' is not a non-negative integer");
    return int64_t(v);
}

bool meta_bool(const Metadata& meta, const std::string& key) {
    const std::string& s = meta_get(meta, key);
    SSMTUNE_CHECK(s == "true" || s == "false", "optimizer state: metadata '", key, "' = '", s,
                  "' is not true or false");
    return s == "true";
}

std::string where(const ParamGroup& group, size_t i) {
    return detail::str_cat("parameter ", i, " of group '", group.name, "'");
}

std::string state_prefix(const ParamGroup& group, size_t i) {
    return detail::str_cat("state.", group.name, ".", i, ".");
}

// Calls fn(float{}) or fn(double{}) for an F32/F64 dtype.
template <class Fn>
void dispatch_param(DType t, Fn&& fn) {
    if (t == DType::F64) fn(double{});
    else fn(float{});
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------
// Optimizer base
// ---------------------------------------------------------------------------------------------------------

Optimizer::Optimizer(std::vector<ParamGroup> groups, double default_lr, double default_weight_decay)
    : groups_(std::move(groups)) {
    std::set<std::string> names;
    size_t total = 0;
    for (size_t k = 0; k < groups_.size(); ++k) {
        ParamGroup& g = groups_[k];
        if (g.name.empty()) g.name = "group" + std::to_string(k);
        SSMTUNE_CHECK(names.insert(g.name).second, "two parameter groups are named '", g.name,
                      "'; fix: give every group a unique name");
        if (g.lr < 0) g.lr = default_lr;
        if (g.weight_decay < 0) g.weight_decay = default_weight_decay;
        SSMTUNE_CHECK(std::isfinite(g.lr) && std::isfinite(g.weight_decay), "group '", g.name, "' has lr ", g.lr,
                      " and weight_decay ", g.weight_decay, "; both must be finite");
        total += g.params.size();
    }
    SSMTUNE_CHECK(total > 0, "optimizer got no parameters; fix: pass the trainable tensors (e.g. the "
                             "model's or adapter's parameters())");
    sync_state();
}

void Optimizer::sync_state() {
    state_.resize(groups_.size());
    std::unordered_map<const TensorImpl*, std::string> seen;
    for (size_t g = 0; g < groups_.size(); ++g) {
        const ParamGroup& group = groups_[g];
        for (size_t i = 0; i < group.params.size(); ++i) {
            const Tensor& p = group.params[i];
            SSMTUNE_CHECK(p.defined(), where(group, i), " is an undefined tensor");
            SSMTUNE_CHECK(is_compute_float(p.dtype()), where(group, i), " is ", p.describe(),
                          "; optimizers update F32/F64 tensors");
            SSMTUNE_CHECK(p.is_leaf() && p.requires_grad(), where(group, i), " (", p.describe(),
                          ") must be a leaf with requires_grad; fix: pass the parameter itself (set_requires_grad"
                          "(true)), not a result computed from it");
            SSMTUNE_CHECK(p.is_contiguous(), where(group, i), " (", p.describe(),
                          ") is not contiguous; fix: make the parameter from a contiguous tensor");
            auto [it, fresh] = seen.emplace(p.impl_ptr().get(), where(group, i));
            SSMTUNE_CHECK(fresh, where(group, i), " is the same tensor as ", it->second,
                          "; fix: list every parameter once");
        }
        state_[g].resize(group.params.size());
    }
}

Tensor Optimizer::checked_grad(size_t g, size_t i) const {
    const Tensor& p = groups_[g].params[i];
    Tensor grad = p.grad();
    if (!grad.defined()) return grad;
    SSMTUNE_CHECK(grad.shape() == p.shape() && grad.dtype() == p.dtype() && grad.device() == p.device(), "the .grad of ",
                  where(groups_[g], i), " is ", grad.describe(), " but the parameter is ", p.describe());
    if (!grad.is_contiguous()) grad = copy_to(grad, grad.dtype(), grad.device());
    return grad;
}

Tensor& Optimizer::buffer(size_t g, size_t i, const std::string& name) {
    Tensor& b = state_[g][i].buffers[name];
    const Tensor& p = groups_[g].params[i];
    if (!b.defined()) b = Tensor::zeros(p.shape(), p.dtype(), p.device());
    else if (b.device() != p.device()) b = copy_to(b, b.dtype(), p.device());  // the parameter was moved
    return b;
}

void Optimizer::zero_grad() {
    for (ParamGroup& g : groups_)
        for (Tensor& p : g.params)
            if (p.defined()) p.zero_grad();
}

std::vector<Tensor> Optimizer::parameters() const {
    std::vector<Tensor> out;
    for (const ParamGroup& g : groups_) out.insert(out.end(), g.params.begin(), g.params.end());
    return out;
}

void Optimizer::set_lr(double lr) {
    SSMTUNE_CHECK(std::isfinite(lr) && lr >= 0, "set_lr(", lr, "): the learning rate must be finite and >= 0");
    for (ParamGroup& g : groups_) g.lr = lr;
}

void Optimizer::set_lr_factor(double factor) {
    SSMTUNE_CHECK(std::isfinite(factor) && factor >= 0, "set_lr_factor(", factor,
                  "): the factor must be finite and >= 0");
    lr_factor_ = factor;
}

double Optimizer::effective_lr(size_t group) const {
    SSMTUNE_CHECK(group < groups_.size(), "effective_lr(", group, "): there are ", groups_.size(), " groups");
    return groups_[group].lr * lr_factor_;
}

TensorMap Optimizer::state_dict(Metadata& meta) const {
    TensorMap tensors;
    meta["optimizer"] = name();
    meta["step_count"] = std::to_string(step_count_);
    meta["lr_factor"] = fmt_double(lr_factor_);
    meta["num_groups"] = std::to_string(groups_.size());
    for (size_t g = 0; g < groups_.size(); ++g) {
        const ParamGroup& group = groups_[g];
        const std::string gk = "group." + std::to_string(g) + ".";
        meta[gk + "name"] = group.name;
        meta[gk + "num_params"] = std::to_string(group.params.size());
        meta[gk + "lr"] = fmt_double(group.lr);
        meta[gk + "weight_decay"] = fmt_double(group.weight_decay);
        for (size_t i = 0; g < state_.size() && i < state_[g].size(); ++i) {
            const ParamState& st = state_[g][i];
            if (st.step == 0 && st.buffers.empty()) continue;
            const std::string prefix = state_prefix(group, i);
            meta[prefix + "step"] = std::to_string(st.step);
            for (const auto& [buf_name, t] : st.buffers)  // saved from the host, whatever device trains
                tensors[prefix + buf_name] = t.device().is_cpu() ? t.detach() : copy_to(t, t.dtype(), Device::cpu());
        }
    }
    write_options(meta);
    return tensors;
}

void Optimizer::load_state_dict(const TensorMap& tensors, const Metadata& meta) {
    std::map<std::string, TensorFile::Entry> entries;
    for (const auto& [key, t] : tensors) entries[key] = TensorFile::Entry{t.dtype(), t.shape()};
    load_state_dict(entries, [&](const std::string& key, Device device) {
        const Tensor& t = tensors.at(key);
        return copy_to(t, t.dtype(), device);
    }, meta);
}

void Optimizer::load_state_dict(const std::map<std::string, TensorFile::Entry>& entries,
                                const std::function<Tensor(const std::string& key, Device device)>& read,
                                const Metadata& meta) {
    const std::string& kind = meta_get(meta, "optimizer");
    SSMTUNE_CHECK(kind == name(), "optimizer state is for ", kind, " but this optimizer is ", name(),
                  "; fix: build the same optimizer type that wrote the state");
    const int64_t step_count = meta_int(meta, "step_count");
    const double lr_factor = meta_double(meta, "lr_factor");
    const int64_t num_groups = meta_int(meta, "num_groups");
    SSMTUNE_CHECK(size_t(num_groups) == groups_.size(), "optimizer state has ", num_groups,
                  " parameter groups but this optimizer has ", groups_.size(),
                  "; fix: build the optimizer with the same groups that wrote the state");
    std::vector<double> lrs, wds;
    for (size_t g = 0; g < groups_.size(); ++g) {
        const std::string gk = "group." + std::to_string(g) + ".";
        const std::string& gname = meta_get(meta, gk + "name");
        SSMTUNE_CHECK(gname == groups_[g].name, "optimizer state: group ", g, " is named '", gname,
                      "' in the state but '", groups_[g].name, "' here");
        const int64_t n = meta_int(meta, gk + "num_params");
        SSMTUNE_CHECK(size_t(n) == groups_[g].params.size(), "optimizer state: group '", gname, "' has ", n,
                      " parameters in the state but ", groups_[g].params.size(),
                      " here; fix: pass the same trainable parameters, in the same order");
        lrs.push_back(meta_double(meta, gk + "lr"));
        wds.push_back(meta_double(meta, gk + "weight_decay"));
    }
    LoadedOptions loaded = parse_options(meta);
    sync_state();

    // Every tensor checked against its parameter before any is read; then read into fresh state.
    std::vector<std::vector<ParamState>> fresh(groups_.size());
    std::vector<std::tuple<ParamState*, std::string, std::string, Device>> reads;  // state, buffer, key, device
    std::set<std::string> used;
    for (size_t g = 0; g < groups_.size(); ++g) {
        const ParamGroup& group = groups_[g];
        fresh[g].resize(group.params.size());
        for (size_t i = 0; i < group.params.size(); ++i) {
            const std::string prefix = state_prefix(group, i);
            if (!meta.count(prefix + "step")) continue;  // never stepped: no state
            ParamState& st = fresh[g][i];
            st.step = meta_int(meta, prefix + "step");
            const Tensor& p = group.params[i];
            for (const std::string& buf_name : loaded.buffers) {
                const std::string key = prefix + buf_name;
                auto it = entries.find(key);
                SSMTUNE_CHECK(it != entries.end(), "optimizer state: tensor '", key, "' for ", where(group, i),
                              " is missing");
                const TensorFile::Entry& t = it->second;
                SSMTUNE_CHECK(t.shape == p.shape() && t.dtype == p.dtype(), "optimizer state: tensor '", key,
                              "' is ", dtype_name(t.dtype), shape_str(t.shape), " but ", where(group, i), " is ",
                              p.describe(), "; fix: load the state into an optimizer over the same parameters, in the "
                              "same order");
                reads.emplace_back(&st, buf_name, key, p.device());
                used.insert(key);
            }
        }
    }
    for (const auto& kv : entries)
        SSMTUNE_CHECK(used.count(kv.first), "optimizer state: unexpected tensor '", kv.first, "' (",
                      dtype_name(kv.second.dtype), shape_str(kv.second.shape),
                      "); it belongs to no parameter with state under this optimizer's groups");
    for (const auto& [st, buf_name, key, device] : reads) st->buffers[buf_name] = read(key, device);

    // Every check passed: commit.
    state_ = std::move(fresh);
    step_count_ = step_count;
    lr_factor_ = lr_factor;
    for (size_t g = 0; g < groups_.size(); ++g) {
        groups_[g].lr = lrs[g];
        groups_[g].weight_decay = wds[g];
    }
    loaded.apply();
}

void Optimizer::save(const std::string& path) const {
    Metadata meta;
    const TensorMap tensors = state_dict(meta);
    save_safetensors(path, tensors, meta);
}

void Optimizer::load(const std::string& path) {
    Metadata meta;
    const std::unique_ptr<TensorFile> file = open_safetensors(path, &meta);
    try {
        load_state_dict(file->entries(), [&](const std::string& key, Device device) {
            const Tensor t = file->read(key);  // a fresh tensor: kept as the state itself on the CPU
            return device.is_cpu() ? t : copy_to(t, t.dtype(), device);
        }, meta);
    } catch (const Error& e) {
        SSMTUNE_FAIL("loading optimizer state from '", path, "': ", e.what());
    }
}

// ---------------------------------------------------------------------------------------------------------
// SGD
// ---------------------------------------------------------------------------------------------------------

namespace {

// p[n], g[n], buf[n] (null when momentum is 0): torch.optim.SGD's single-tensor update (optim_math.h).
template <class T>
void sgd_update(T* p, const T* g, T* buf, int64_t n, const SgdScalars& s) {
#pragma omp parallel for schedule(static) if (n > kGrain)
    for (int64_t i = 0; i < n; ++i) sgd_element<T>(p[i], g[i], buf ? buf + i : nullptr, s);
}

}  // namespace

void SGDOptions::validate() const {
    SSMTUNE_CHECK(std::isfinite(lr_) && lr_ >= 0, "SGD: lr ", lr_, " must be finite and >= 0");
    SSMTUNE_CHECK(std::isfinite(momentum_) && momentum_ >= 0, "SGD: momentum ", momentum_, " must be >= 0");
    SSMTUNE_CHECK(std::isfinite(dampening_), "SGD: dampening ", dampening_, " must be finite");
    SSMTUNE_CHECK(std::isfinite(weight_decay_) && weight_decay_ >= 0, "SGD: weight_decay ", weight_decay_,
                  " must be >= 0");
    SSMTUNE_CHECK(!nesterov_ || (momentum_ > 0 && dampening_ == 0), "SGD: nesterov needs momentum > 0 and "
                  "dampening 0 (got momentum ", momentum_, ", dampening ", dampening_, ")");
}

namespace {
template <class O>
const O& validated(const O& o) {
    o.validate();
    return o;
}
std::vector<ParamGroup> one_group(std::vector<Tensor> params) {
    return {ParamGroup{"default", std::move(params), -1, -1}};
}
}  // namespace

SGD::SGD(std::vector<Tensor> params, Options options) : SGD(one_group(std::move(params)), options) {}

SGD::SGD(std::vector<ParamGroup> groups, Options options)
    : Optimizer(std::move(groups), validated(options).lr(), options.weight_decay()), options_(options) {}

void SGD::step() {
    options_.validate();
    NoGradGuard no_grad;
    sync_state();
    // Check every gradient before changing anything.
    std::vector<std::vector<Tensor>> grads(groups_.size());
    for (size_t g = 0; g < groups_.size(); ++g)
        for (size_t i = 0; i < groups_[g].params.size(); ++i) grads[g].push_back(checked_grad(g, i));
    for (size_t g = 0; g < groups_.size(); ++g) {
        SgdScalars s{groups_[g].lr * lr_factor_, groups_[g].weight_decay, options_.momentum(),
                     options_.dampening(), options_.nesterov(), false};
        for (size_t i = 0; i < groups_[g].params.size(); ++i) {
            if (!grads[g][i].defined()) continue;
            Tensor p = groups_[g].params[i];
            ParamState& st = state_[g][i];
            Tensor buf;
            if (s.momentum != 0) {
                s.first = !st.buffers.count("momentum_buffer");
                buf = buffer(g, i, "momentum_buffer");
            }
            ++st.step;
            if (p.device().is_cuda()) {
                cuda::sgd_update(p.device().index, p.dtype(), p.raw_data(), grads[g][i].raw_data(),
                                 buf.defined() ? buf.raw_data() : nullptr, p.numel(), s);
                continue;
            }
            dispatch_param(p.dtype(), [&](auto tag) {
                using T = decltype(tag);
                sgd_update<T>(p.data<T>(), grads[g][i].data<T>(), buf.defined() ? buf.data<T>() : nullptr,
                              p.numel(), s);
            });
        }
    }
    ++step_count_;
}

void SGD::write_options(Metadata& meta) const {
    meta["lr"] = fmt_double(options_.lr());
    meta["momentum"] = fmt_double(options_.momentum());
    meta["dampening"] = fmt_double(options_.dampening());
    meta["weight_decay"] = fmt_double(options_.weight_decay());
    meta["nesterov"] = options_.nesterov() ? "true" : "false";
}

Optimizer::LoadedOptions SGD::parse_options(const Metadata& meta) {
    Options o;
    o.lr(meta_double(meta, "lr")).momentum(meta_double(meta, "momentum")).dampening(meta_double(meta, "dampening"));
    o.weight_decay(meta_double(meta, "weight_decay")).nesterov(meta_bool(meta, "nesterov"));
    o.validate();
    LoadedOptions out;
    if (o.momentum() != 0) out.buffers = {"momentum_buffer"};
    out.apply = [this, o] { options_ = o; };
    return out;
}

// ---------------------------------------------------------------------------------------------------------
// AdamW
// ---------------------------------------------------------------------------------------------------------

namespace {

// p[n], g[n], m[n], v[n], vmax[n] (null unless amsgrad): torch's _single_tensor_adam with decoupled decay.
template <class T>
void adamw_update(T* p, const T* g, T* m, T* v, T* vmax, int64_t n, const AdamScalars& s) {
    const AdamFactors<T> f = adam_factors<T>(s);
#pragma omp parallel for schedule(static) if (n > kGrain)
    for (int64_t i = 0; i < n; ++i) adamw_element<T>(p[i], g[i], m[i], v[i], vmax ? vmax + i : nullptr, f);
}

}  // namespace

void AdamWOptions::validate() const {
    SSMTUNE_CHECK(std::isfinite(lr_) && lr_ >= 0, "AdamW: lr ", lr_, " must be finite and >= 0");
    SSMTUNE_CHECK(beta1_ >= 0 && beta1_ < 1 && beta2_ >= 0 && beta2_ < 1, "AdamW: betas (", beta1_, ", ", beta2_,
                  ") must lie in [0, 1)");
    SSMTUNE_CHECK(std::isfinite(eps_) && eps_ >= 0, "AdamW: eps ", eps_, " must be finite and >= 0");
    SSMTUNE_CHECK(std::isfinite(weight_decay_) && weight_decay_ >= 0, "AdamW: weight_decay ", weight_decay_,
                  " must be finite and >= 0");
}

AdamW::AdamW(std::vector<Tensor> params, Options options) : AdamW(one_group(std::move(params)), options) {}

AdamW::AdamW(std::vector<ParamGroup> groups, Options options)
    : Optimizer(std::move(groups), validated(options).lr(), options.weight_decay()), options_(options) {}

void AdamW::step() {
    options_.validate();
    NoGradGuard no_grad;
    sync_state();
    std::vector<std::vector<Tensor>> grads(groups_.size());
    for (size_t g = 0; g < groups_.size(); ++g)
        for (size_t i = 0; i < groups_[g].params.size(); ++i) grads[g].push_back(checked_grad(g, i));
    for (size_t g = 0; g < groups_.size(); ++g) {
        for (size_t i = 0; i < groups_[g].params.size(); ++i) {
            if (!grads[g][i].defined()) continue;
            Tensor p = groups_[g].params[i];
            ParamState& st = state_[g][i];
            Tensor m = buffer(g, i, "exp_avg"), v = buffer(g, i, "exp_avg_sq");
            Tensor vmax = options_.amsgrad() ? buffer(g, i, "max_exp_avg_sq") : Tensor();
            ++st.step;
            const AdamScalars s{groups_[g].lr * lr_factor_, groups_[g].weight_decay, options_.beta1(),
                                options_.beta2(), options_.eps(), st.step, options_.amsgrad()};
            if (p.device().is_cuda()) {
                cuda::adamw_update(p.device().index, p.dtype(), p.raw_data(), grads[g][i].raw_data(), m.raw_data(), v.raw_data(),
                                   vmax.defined() ? vmax.raw_data() : nullptr, p.numel(), s);
                continue;
            }
            dispatch_param(p.dtype(), [&](auto tag) {
                using T = decltype(tag);
                adamw_update<T>(p.data<T>(), grads[g][i].data<T>(), m.data<T>(), v.data<T>(),
                                vmax.defined() ? vmax.data<T>() : nullptr, p.numel(), s);
            });
        }
    }
    ++step_count_;
}

void AdamW::write_options(Metadata& meta) const {
    meta["lr"] = fmt_double(options_.lr());
    meta["beta1"] = fmt_double(options_.beta1());
    meta["beta2"] = fmt_double(options_.beta2());
    meta["eps"] = fmt_double(options_.eps());
    meta["weight_decay"] = fmt_double(options_.weight_decay());
    meta["amsgrad"] = options_.amsgrad() ? "true" : "false";
}

Optimizer::LoadedOptions AdamW::parse_options(const Metadata& meta) {
    Options o;
    o.lr(meta_double(meta, "lr")).betas(meta_double(meta, "beta1"), meta_double(meta, "beta2"));
    o.eps(meta_double(meta, "eps")).weight_decay(meta_double(meta, "weight_decay")).amsgrad(meta_bool(meta, "amsgrad"));
    o.validate();
    LoadedOptions out;
    out.buffers = {"exp_avg", "exp_avg_sq"};
    if (o.amsgrad()) out.buffers.push_back("max_exp_avg_sq");
    out.apply = [this, o] { options_ = o; };
    return out;
}

}  // namespace ssmtune::autograd
