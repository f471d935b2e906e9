// Faults from outside the process: the real `ssmtune train` is started as a child, killed with SIGKILL at seeded
// random moments (between steps, in the middle of a step or of a checkpoint write), and resumed with --resume
// each time. A kill loses at most the steps since the last checkpoint, and the resumed run's losses and final
// weights are bit-identical to a run that was never killed. (Disk-full and read-only checkpoint writes are in
// test_trainer.cpp.)
#include "test_util.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <random>
#include <thread>

#include <nlohmann/json.hpp>

using namespace ssmtune;
using namespace ssmtune::testing;
namespace fs = std::filesystem;
using json = nlohmann::json;

extern char** environ;

namespace {

constexpr int64_t kSteps = 60, kSaveEvery = 5;

// Starts the program with `args`; `env_override` entries (NAME=value) replace or extend this process's environment.
pid_t start_cli(const std::vector<std::string>& args, const fs::path& log,
                const std::vector<std::string>& env_override = {}) {
    std::vector<std::string> all = {SSMTUNE_CLI_PATH};
    all.insert(all.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : all) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_addopen(&actions, 2, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    std::vector<std::string> env_strings = env_override;
    for (char** e = environ; *e; ++e) {
        const std::string entry = *e, name = entry.substr(0, entry.find('=') + 1);
        bool replaced = false;
        for (auto& o : env_override) replaced = replaced || o.rfind(name, 0) == 0;
        if (!replaced) env_strings.push_back(entry);
    }
    std::vector<char*> envp;
    for (auto& e : env_strings) envp.push_back(e.data());
    envp.push_back(nullptr);
    pid_t pid = -1;
    const int rc = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&actions);
    REQUIRE_MESSAGE(rc == 0, "cannot start " << SSMTUNE_CLI_PATH);
    return pid;
}

int wait_exit(pid_t pid) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// (step, loss) of the training records in metrics.jsonl; a torn last line is ignored.
std::vector<std::pair<int64_t, double>> train_records(const fs::path& run) {
    std::vector<std::pair<int64_t, double>> out;
    std::ifstream in(run / "metrics.jsonl");
    std::string line;
    while (std::getline(in, line)) {
        const json r = json::parse(line, nullptr, false);
        if (r.is_object() && !r.contains("split") && r.contains("loss"))
            out.emplace_back(r["step"].get<int64_t>(), r["loss"].get<double>());
    }
    return out;
}

// The step of the checkpoint --resume would use (`last`, or `last.old` after a kill between the renames).
int64_t checkpoint_step(const fs::path& run) {
    for (const char* name : {"last", "last.old"}) {
        std::ifstream in(run / "checkpoints" / name / "trainer_state.json");
        if (in) return json::parse(in)["step"].get<int64_t>();
    }
    return -1;
}

json small_run_config() {
    return {{"model", {{"model_type", "mamba"}, {"vocab_size", 10}, {"hidden_size", 16}, {"num_hidden_layers", 1},
                       {"state_size", 4}, {"intermediate_size", 32}, {"time_step_rank", 2}}},
            {"data", {{"task", {{"name", "selective_copying"}, {"num_tokens", 8}, {"num_memorize", 4}, {"span", 24}}}}},
            {"train", {{"steps", kSteps}, {"batch_size", 4}, {"seq_len", 32}, {"log_every", 1}, {"eval_every", 0},
                       {"save_every", kSaveEvery}, {"eval_batches", 1}}}};
}

}  // namespace

TEST_CASE("determinism: same seed and thread count give bit-identical losses and weights, run after run") {
    const auto dir = scratch_dir("determinism_runs");
    std::ofstream(dir / "run.json") << small_run_config().dump(2);
    const std::string config = (dir / "run.json").string();
    const fs::path log = dir / "log.txt";
    std::vector<const char*> thread_counts = {"1"};
    if (threads_can_run()) thread_counts.push_back("2");
    for (const char* threads : thread_counts) {
        const std::string env = std::string("OMP_NUM_THREADS=") + threads;
        for (const char* name : {"a", "b"}) {
            const std::string out = (dir / (std::string(name) + threads)).string();
            REQUIRE(wait_exit(start_cli({"train", "--config", config, "--out", out, "--quiet"}, log, {env})) == 0);
        }
        INFO(threads << " thread(s)");
        const fs::path a = dir / (std::string("a") + threads), b = dir / (std::string("b") + threads);
        CHECK(train_records(a) == train_records(b));
        CHECK(file_bytes(a / "model" / "model.safetensors") == file_bytes(b / "model" / "model.safetensors"));
    }
}

TEST_CASE("environment: SSMTUNE_CPU_ISA pins the CPU level, and a misspelt value is one error line and exit 1") {
    const auto dir = scratch_dir("cpu_isa_env");
    const fs::path bad = dir / "bad.txt", base = dir / "baseline.txt";
    CHECK(wait_exit(start_cli({"--version"}, bad, {"SSMTUNE_CPU_ISA=avx3"})) == 1);
    const std::string text = file_bytes(bad);
    INFO(text);
    CHECK(text.rfind("error: SSMTUNE_CPU_ISA=avx3 is not a CPU level", 0) == 0);
    CHECK(text.find("fix: set it to baseline or avx2") != std::string::npos);
    CHECK(std::count(text.begin(), text.end(), '\n') == 1);
    REQUIRE(wait_exit(start_cli({"--version"}, base, {"SSMTUNE_CPU_ISA=baseline"})) == 0);
    CHECK(file_bytes(base).find("CPU kernels: baseline") != std::string::npos);
}

TEST_CASE("faults: SIGKILL at random points, then --resume, loses only the steps since the last checkpoint") {
    const auto dir = scratch_dir("faults_sigkill");
    std::ofstream(dir / "run.json") << small_run_config().dump(2);
    const std::string config = (dir / "run.json").string();
    const fs::path log = dir / "log.txt";

    // The run that is never killed.
    REQUIRE(wait_exit(start_cli({"train", "--config", config, "--out", (dir / "ref").string(), "--quiet"}, log)) == 0);
    const auto reference = train_records(dir / "ref");
    REQUIRE(reference.size() == size_t(kSteps));

    // Kill three times at seeded random moments, resuming after each; then let the last resume finish.
    const fs::path run = dir / "killed";
    std::mt19937_64 pick(2026);  // the kill points: seeded, so a failure can be replayed
    int kills = 0;
    for (int attempt = 0; attempt < 4; ++attempt) {
        std::vector<std::string> args = {"train", "--config", config, "--out", run.string(), "--quiet"};
        if (attempt > 0) args.push_back("--resume");
        const size_t logged_before = train_records(run).size();
        const pid_t pid = start_cli(args, log);
        if (attempt == 3) {
            REQUIRE(wait_exit(pid) == 0);
            break;
        }
        // Wait for a random number of new records (at least past the first checkpoint), plus a random delay of
        // up to 3 ms so the kill can fall inside a step or a checkpoint write, not only just after a log line.
        const size_t target =
            std::max<size_t>(kSaveEvery + 2, logged_before + 1 + size_t(pick() % 15));
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
        bool exited = false;
        while (train_records(run).size() < target && std::chrono::steady_clock::now() < deadline) {
            int status = 0;
            if (::waitpid(pid, &status, WNOHANG) == pid) {
                exited = true;
                break;
            }
            std::this_thread::sleep_for(std::chrono::microseconds(200));
        }
        if (exited) break;  // finished before the kill point: nothing to kill
        std::this_thread::sleep_for(std::chrono::microseconds(pick() % 3000));
        ::kill(pid, SIGKILL);
        CHECK(wait_exit(pid) == 128 + SIGKILL);
        ++kills;
        const auto records = train_records(run);
        const int64_t saved = checkpoint_step(run);
        INFO("kill " << kills << ": " << records.size() << " steps logged, checkpoint at step " << saved);
        REQUIRE(saved >= kSaveEvery);
        CHECK(saved % kSaveEvery == 0);
        // steps done after the checkpoint are the only ones lost: fewer than a save interval (plus the step whose
        // checkpoint the kill interrupted)
        CHECK(int64_t(records.size()) - saved <= kSaveEvery);
    }
    CHECK(kills >= 1);
    CHECK(train_records(run) == reference);  // the resumed log reads as one run, with the same losses
    CHECK(file_bytes(run / "model" / "model.safetensors") == file_bytes(dir / "ref" / "model" / "model.safetensors"));
}

TEST_CASE("faults: a kill after the final checkpoint, then --resume, evaluates nothing twice") {
    // The final evaluation logs its record and then writes the final checkpoint (step == steps); a kill after that
    // (while the model is written) leaves a run whose --resume has no step left. Until 2026-12-07 that resume ran the
    // final evaluation again: a second record in metrics.jsonl, one more evaluation without a gain counted for early
    // stopping. Found by the CLI fuzzer's resumes mode.
    const auto dir = scratch_dir("faults_resume_final");
    json cfg = small_run_config();
    cfg["train"]["steps"] = 12;
    cfg["train"]["eval_every"] = 4;
    cfg["train"]["early_stopping_patience"] = 5;
    std::ofstream(dir / "run.json") << cfg.dump(2);
    const std::vector<std::string> args = {"train", "--config", (dir / "run.json").string(), "--out",
                                           (dir / "run").string(), "--quiet"};
    REQUIRE(wait_exit(start_cli(args, dir / "log.txt")) == 0);
    const std::string log = file_bytes(dir / "run" / "metrics.jsonl"),
                      state = file_bytes(dir / "run" / "checkpoints" / "last" / "trainer_state.json"),
                      weights = file_bytes(dir / "run" / "model" / "model.safetensors");
    CHECK(std::count(log.begin(), log.end(), '\n') == 12 + 3);  // 12 steps, evaluations at 4, 8 and 12
    std::vector<std::string> resume = args;
    resume.push_back("--resume");
    CHECK(wait_exit(start_cli(resume, dir / "log.txt")) == 0);
    CHECK(file_bytes(dir / "run" / "metrics.jsonl") == log);
    CHECK(file_bytes(dir / "run" / "checkpoints" / "last" / "trainer_state.json") == state);
    CHECK(file_bytes(dir / "run" / "model" / "model.safetensors") == weights);
}
