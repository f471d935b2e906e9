// Commands of the `ssmtune` program and the small flag parser they share.
#pragma once

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace ssmtune::tools {

// A command-line mistake: printed as one `error:` line, exit status 2.
struct UsageError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// `--name value` and `--flag` pairs. Unknown flags are a UsageError naming the known ones.
class Flags {
public:
    // Spec value marking a boolean switch (a flag that takes no value).
    static constexpr const char* kSwitch = "\x01switch";
    // The largest size (batch, length, width, count) a flag takes: 2^31 − 1, so a product of two stays in int64 and
    // a shape beyond memory is Tensor::empty's one-line error.
    static constexpr long long kMaxSize = (1LL << 31) - 1;
    // spec: flag name -> default value ("" = takes a value, none by default), or kSwitch.
    Flags(int argc, char** argv, const std::map<std::string, std::string>& spec, const std::string& command);
    std::string str(const std::string& name) const;
    // An integer value (beyond long long is an error; it used to clamp to LLONG_MAX); the second form also
    // requires min <= value <= max, so callers that narrow it (int repeats, sizes) see only what they can hold.
    long long integer(const std::string& name) const;
    long long integer(const std::string& name, long long min, long long max) const;
    uint64_t seed(const std::string& name = "seed") const;  // an integer >= 0 (a negative seed used to wrap around)
    std::vector<int64_t> integers(const std::string& name) const;  // "1,2,3" (empty: none)
    double number(const std::string& name) const;
    // The value split at ',' ("a,b" -> {a, b}; as std::getline splits: "a,,b" keeps an empty entry, a trailing ','
    // adds none).
    std::vector<std::string> list(const std::string& name) const;
    bool is_set(const std::string& name) const;
    bool help() const { return help_; }

private:
    std::map<std::string, std::string> values_;
    std::map<std::string, bool> set_;
    std::string command_;
    bool help_ = false;
};

// The whole program: argv[1] is the command. Returns the exit status (0 ok, 1 error, 2 usage error).
int run_cli(int argc, char** argv);
int run_demo(int argc, char** argv);
int run_bench(int argc, char** argv);
int run_grads(int argc, char** argv);
int run_merge(int argc, char** argv);
int run_convert(int argc, char** argv);
int run_combine(int argc, char** argv);
int run_plot(int argc, char** argv);
int run_inspect(int argc, char** argv);
int run_generate(int argc, char** argv);
int run_gradcheck(int argc, char** argv);
int run_train(int argc, char** argv);
int run_finetune(int argc, char** argv);
int run_eval(int argc, char** argv);
int run_quickstart(int argc, char** argv);
int run_study(int argc, char** argv);
int run_experiment(int argc, char** argv);
// Writes RUN_DIR/loss.svg (and accuracy.svg) from RUN_DIR/metrics.jsonl; returns the files written.
std::vector<std::string> plot_run(const std::string& run_dir);

}  // namespace ssmtune::tools
