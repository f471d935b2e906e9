// --adapter "A+B": several adapter directories active together (see adapter_group.h).
#include "tools/adapter_group.h"

#include <algorithm>
#include <filesystem>

#include "tools/commands.h"

namespace ssmtune::tools {

std::vector<std::string> split_adapter_group(const std::string& value) {
    std::error_code ec;
    if (value.empty()) throw UsageError("--adapter needs a directory");  // (found by fuzzing: AdapterSet's message)
    if (value.find('+') == std::string::npos || std::filesystem::is_directory(value, ec)) return {value};
    std::vector<std::string> dirs;
    size_t start = 0;
    while (true) {
        const size_t plus = value.find('+', start);
        const std::string part = value.substr(start, plus == std::string::npos ? std::string::npos : plus - start);
        if (part.empty())
            throw UsageError("--adapter \"" + value + "\": an empty name around '+' (A+B activates the adapter "
                             "directories A and B together)");
        if (std::find(dirs.begin(), dirs.end(), part) != dirs.end())
            throw UsageError("--adapter \"" + value + "\" names " + part + " twice");
        dirs.push_back(part);
        if (plus == std::string::npos) return dirs;
        start = plus + 1;
    }
}

std::string adapter_set_name(const std::string& dir) {
    std::string name = dir;
    std::replace(name.begin(), name.end(), '+', '_');
    return name;
}

AdapterGroup::AdapterGroup(models::Module& model, const std::string& value)
    : AdapterGroup(model, split_adapter_group(value), /*in_set=*/false) {}

AdapterGroup::AdapterGroup(models::Module& model, std::vector<std::string> dirs)
    : AdapterGroup(model, std::move(dirs), /*in_set=*/true) {}

AdapterGroup::AdapterGroup(models::Module& model, std::vector<std::string> dirs, bool in_set)
    : set_(model), dirs_(std::move(dirs)) {
    if (!in_set && dirs_.size() == 1) {
        single_ = std::make_unique<peft::Adapter>(peft::load(model, dirs_[0]));
        return;
    }
    std::vector<std::string> names;
    for (const std::string& dir : dirs_) {
        names.push_back(adapter_set_name(dir));
        set_.load(names.back(), dir);
    }
    set_.set_active(names);
}

peft::Adapter& AdapterGroup::adapter(size_t i) {
    return const_cast<peft::Adapter&>(static_cast<const AdapterGroup*>(this)->adapter(i));
}

const peft::Adapter& AdapterGroup::adapter(size_t i) const {
    return single_ ? *single_ : set_.get(adapter_set_name(dirs_[i]));
}

std::vector<std::pair<std::string, Tensor>> AdapterGroup::named_tensors() const {
    std::vector<std::pair<std::string, Tensor>> out;
    for (size_t i = 0; i < dirs_.size(); ++i) {
        const std::string prefix = (dirs_.size() > 1 ? std::to_string(i + 1) + "/" : "") + peft::kAdapterTensorPrefix;
        for (auto& [name, t] : adapter(i).named_parameters()) out.emplace_back(prefix + name, t);
    }
    return out;
}

void AdapterGroup::merge() {
    for (size_t i = 0; i < dirs_.size(); ++i) {
        const std::string why = adapter(i).merge_refusal();
        SSMTUNE_CHECK(why.empty(), "the adapter in ", dirs_[i], " cannot be merged into the base weights: ", why);
    }
    for (size_t i = dirs_.size(); i-- > 0;) adapter(i).merge();
}

void AdapterGroup::set_per_sample(const std::vector<std::string>& per_sample) {
    SSMTUNE_CHECK(!single_, "set_per_sample: this group holds its one adapter outside a set; fix: make it from the "
                  "list of directories");
    std::vector<std::string> names;
    for (const std::string& entry : per_sample) {
        const bool known = entry == peft::AdapterSet::kBaseAdapter || std::find(dirs_.begin(), dirs_.end(), entry) != dirs_.end();
        SSMTUNE_CHECK(known, "per-sample adapter ", entry, " is not among the loaded adapter directories; fix: name one of "
                      "them or ", peft::AdapterSet::kBaseAdapter);
        names.push_back(entry == peft::AdapterSet::kBaseAdapter ? entry : adapter_set_name(entry));
    }
    set_.set_batch_adapters(names);
}

std::string AdapterGroup::peft_types() const {
    std::string out;
    for (size_t i = 0; i < dirs_.size(); ++i) out += (out.empty() ? "" : "+") + adapter(i).config().peft_type();
    return out;
}

void AdapterGroup::to(Device device) {
    for (size_t i = 0; i < dirs_.size(); ++i) adapter(i).to(device);
}

}  // namespace ssmtune::tools
