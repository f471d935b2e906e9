// The shared training loop: bit-identical resume (from a save point and from a Ctrl-C), the stop on a non-finite
// loss or gradient naming the step and the tensor, best/last checkpoints, the metrics log, faults during checkpoint
// writes, the optimizer groups (train.no_decay, train.ssm_lr), gradient accumulation, early stopping and loading the
// best checkpoint at the end, and the train section's run-config checks.
#include "test_util.h"

#include <sys/resource.h>
#include <unistd.h>

#include <cmath>
#include <csignal>
#include <fstream>

#include <nlohmann/json.hpp>

#include "engine/safetensors.h"
#include "ops/ops.h"
#include "tools/run_config.h"
#include "tools/train_common.h"
#include "tools/trainer.h"

using namespace ssmtune;
using namespace ssmtune::testing;
namespace fs = std::filesystem;

namespace {

// A linear least-squares problem y = x·w* with fresh seeded batches each step.
struct Problem {
    Tensor w = Tensor::zeros({4, 1}, DType::F64).set_requires_grad(true);
    Generator data{7};
    Tensor w_true = Tensor::from_vector<double>({1.0, -2.0, 0.5, 3.0}, {4, 1});
    int64_t poison_at = -1;     // step whose loss is NaN
    int64_t interrupt_at = -1;  // step that raises SIGINT
    int64_t ballast = 0;        // extra F64 values written with each checkpoint's weights (a bigger file)
    std::function<void(int64_t step)> at_step;  // runs at the start of each step's loss
    tools::TrainHooks hooks() {
        tools::TrainHooks h;
        h.params = {{"w", w}};
        h.loss = [this](int64_t step, double& units) {
            if (step == interrupt_at) std::raise(SIGINT);
            if (at_step) at_step(step);
            Tensor x = Tensor::randn({8, 4}, data, DType::F64);
            Tensor err = ops::sub(ops::matmul(x, w), ops::matmul(x, w_true));
            units = 8;
            Tensor loss = ops::mean(ops::mul(err, err));
            if (step == poison_at) loss = ops::mul(loss, Tensor::scalar(std::nan(""), DType::F64));
            return loss;
        };
        h.evaluate = [this] {
            Tensor e = ops::sub(w.detach(), w_true);
            return std::map<std::string, double>{{"loss", ops::sum(ops::mul(e, e)).item()}};
        };
        h.save_weights = [this](const std::string& dir) {
            TensorMap m = {{"w", w.detach()}};
            if (ballast > 0) m["ballast"] = Tensor::zeros({ballast}, DType::F64);
            save_safetensors(dir + "/w.safetensors", m);
        };
        h.load_weights = [this](const std::string& dir) {
            Tensor v = load_safetensors(dir + "/w.safetensors").at("w");
            std::memcpy(w.data<double>(), v.data<double>(), 4 * sizeof(double));
        };
        h.rngs = {&data};
        h.units_name = "samples";
        return h;
    }
};

std::vector<double> logged_losses(const fs::path& dir) {
    std::vector<double> out;
    std::ifstream in(dir / "metrics.jsonl");
    std::string line;
    while (std::getline(in, line)) {
        auto j = nlohmann::json::parse(line);
        if (!j.contains("split")) out.push_back(j["loss"].get<double>());
    }
    return out;
}

tools::TrainLoopOptions options(const fs::path& dir, int64_t steps) {
    tools::TrainLoopOptions o;
    o.steps = steps;
    o.lr = 0.1;
    o.grad_clip = 0;
    o.schedule = "constant";  // the split run below stops early at --steps 13 with the same lr sequence
    o.log_every = 1;
    o.eval_every = 10;
    o.save_every = 5;
    o.out_dir = dir.string();
    o.quiet = true;
    return o;
}

// Trains `o` whole in root/full, then in root/split up to `split_at` and on with --resume; both must log the same
// losses and end with the same weights, bit for bit. Returns the whole run's result.
tools::TrainResult check_split_resume(tools::TrainLoopOptions o, const fs::path& root, int64_t split_at) {
    const int64_t steps = o.steps;
    Problem full, part, resumed;
    auto hf = full.hooks();
    o.out_dir = (root / "full").string();
    const tools::TrainResult r = tools::run_training(o, hf);
    auto hp = part.hooks();
    o.out_dir = (root / "split").string();
    o.steps = split_at;
    tools::run_training(o, hp);  // stops at split_at (a checkpoint there)
    auto hr = resumed.hooks();
    o.steps = steps;
    o.resume = true;
    tools::run_training(o, hr);
    CHECK(logged_losses(root / "split") == logged_losses(root / "full"));
    CHECK(resumed.w.to_vector<double>() == full.w.to_vector<double>());
    return r;
}

}  // namespace

TEST_CASE("trainer resumes bit-identically and keeps best and last checkpoints") {
    const auto root = scratch_dir("trainer_resume");
    tools::TrainResult r = check_split_resume(options(root, 30), root, 13);
    CHECK(r.steps_done == 30);
    CHECK(r.last_eval.at("loss") < 1.0);
    CHECK(fs::exists(root / "full" / "checkpoints" / "last" / "optimizer.safetensors"));
    CHECK(fs::exists(root / "full" / "checkpoints" / "best" / "trainer_state.json"));
}

TEST_CASE("trainer: Ctrl-C saves a checkpoint and --resume continues identically") {
    const auto root = scratch_dir("trainer_sigint");
    Problem ref;
    auto h0 = ref.hooks();
    tools::run_training(options(root / "ref", 20), h0);
    Problem a;
    a.interrupt_at = 7;
    auto ha = a.hooks();
    tools::TrainResult r = tools::run_training(options(root / "cut", 20), ha);
    CHECK(r.interrupted);
    CHECK(r.steps_done == 8);  // the step that saw the signal finishes, then the loop saves and leaves
    Problem b;
    auto hb = b.hooks();
    tools::TrainLoopOptions o = options(root / "cut", 20);
    o.resume = true;
    tools::run_training(o, hb);
    CHECK(logged_losses(root / "cut") == logged_losses(root / "ref"));
}

TEST_CASE("trainer stops on a non-finite loss naming the step, keeping the last good checkpoint") {
    const auto root = scratch_dir("trainer_nan");
    Problem p;
    p.poison_at = 11;
    auto h = p.hooks();
    CHECK_THROWS_WITH_AS(tools::run_training(options(root, 30), h),
                         doctest::Contains("step 12: the loss is nan; stopped. The last good checkpoint is"), Error);
    auto state = nlohmann::json::parse(std::ifstream(root / "checkpoints" / "last" / "trainer_state.json"));
    CHECK(state["step"] == 10);
    // resume without the poison continues from step 10
    Problem q;
    auto hq = q.hooks();
    tools::TrainLoopOptions o = options(root, 12);
    o.resume = true;
    CHECK(tools::run_training(o, hq).steps_done == 12);
}

TEST_CASE("trainer: --resume without a checkpoint is a clear error") {
    const auto root = scratch_dir("trainer_noresume");
    Problem p;
    auto h = p.hooks();
    tools::TrainLoopOptions o = options(root, 5);
    o.resume = true;
    CHECK_THROWS_WITH_AS(tools::run_training(o, h), doctest::Contains("--resume: no checkpoint in"), Error);
}

namespace {

std::map<std::string, std::string> files_in(const fs::path& dir) {
    std::map<std::string, std::string> out;
    for (auto& e : fs::directory_iterator(dir)) out[e.path().filename().string()] = file_bytes(e.path());
    return out;
}

// Caps the size of any file this process writes (RLIMIT_FSIZE; writes past it fail with EFBIG, SIGXFSZ ignored):
// a disk that fills up in the middle of a checkpoint, without root or a tmpfs. Restored on destruction.
struct FileSizeCap {
    rlimit saved{};
    void (*saved_handler)(int) = SIG_DFL;
    bool active = false;
    void set(rlim_t bytes) {
        ::getrlimit(RLIMIT_FSIZE, &saved);
        saved_handler = std::signal(SIGXFSZ, SIG_IGN);
        rlimit cap = saved;
        cap.rlim_cur = bytes;
        REQUIRE(::setrlimit(RLIMIT_FSIZE, &cap) == 0);
        active = true;
    }
    void restore() {
        if (!active) return;
        ::setrlimit(RLIMIT_FSIZE, &saved);
        std::signal(SIGXFSZ, saved_handler);
        active = false;
    }
    ~FileSizeCap() { restore(); }
};

}  // namespace

TEST_CASE("trainer: a disk that fills up during a checkpoint write leaves the previous checkpoint intact") {
    const auto root = scratch_dir("trainer_disk_full");
    Problem ref;
    auto h_ref = ref.hooks();
    tools::run_training(options(root / "ref", 10), h_ref);

    // Checkpoints at steps 5 and 10; the weights file is ~64 KiB, the log stays far below the 16 KiB cap.
    Problem p;
    p.ballast = 8192;
    std::map<std::string, std::string> saved_at_5;
    FileSizeCap cap;
    p.at_step = [&](int64_t step) {
        if (step != 6) return;
        saved_at_5 = files_in(root / "run" / "checkpoints" / "last");
        cap.set(16 * 1024);
    };
    auto h = p.hooks();
    CHECK_THROWS_WITH_AS(tools::run_training(options(root / "run", 10), h), doctest::Contains("failed"), Error);
    cap.restore();
    REQUIRE(saved_at_5.size() == 3);
    CHECK(files_in(root / "run" / "checkpoints" / "last") == saved_at_5);  // byte for byte
    CHECK(!fs::exists(root / "run" / "checkpoints" / "last.tmp"));          // the partial write was cleaned up
    auto state = nlohmann::json::parse(std::ifstream(root / "run" / "checkpoints" / "last" / "trainer_state.json"));
    CHECK(state["step"] == 5);

    // Space is back: --resume continues from step 5 and ends exactly where the uninterrupted run did.
    Problem q;
    q.ballast = 8192;
    auto hq = q.hooks();
    tools::TrainLoopOptions o = options(root / "run", 10);
    o.resume = true;
    CHECK(tools::run_training(o, hq).steps_done == 10);
    CHECK(logged_losses(root / "run") == logged_losses(root / "ref"));
    CHECK(q.w.to_vector<double>() == ref.w.to_vector<double>());
}

TEST_CASE("trainer: an output directory that becomes read-only keeps the previous checkpoint") {
    if (::geteuid() == 0) {
        MESSAGE("skipped: running as root, where permission bits do not stop writes (the disk-full case covers it)");
        return;
    }
    const auto root = scratch_dir("trainer_readonly");
    Problem p;
    std::map<std::string, std::string> saved_at_5;
    const fs::path ckpts = root / "run" / "checkpoints";
    p.at_step = [&](int64_t step) {
        if (step != 6) return;
        saved_at_5 = files_in(ckpts / "last");
        fs::permissions(ckpts, fs::perms::owner_write | fs::perms::group_write | fs::perms::others_write,
                        fs::perm_options::remove);
    };
    auto h = p.hooks();
    CHECK_THROWS_WITH_AS(tools::run_training(options(root / "run", 10), h), doctest::Contains("checkpoint"), Error);
    fs::permissions(ckpts, fs::perms::owner_write, fs::perm_options::add);
    REQUIRE(saved_at_5.size() == 3);
    CHECK(files_in(ckpts / "last") == saved_at_5);
}

namespace {

// Named tensors whose loss ignores them but one: with a zero gradient AdamW's update is 0 / (0 + eps) = 0, so a
// tensor only moves by its weight decay, p ← p·(1 − lr·wd) — exactly what tells the groups apart.
struct GroupProblem {
    std::vector<std::pair<std::string, Tensor>> params = {
        {"backbone.layers.0.mixer.in_proj.weight", Tensor::full({3}, 2.0, DType::F64).set_requires_grad(true)},
        {"backbone.layers.0.mixer.A_log", Tensor::full({3}, 2.0, DType::F64).set_requires_grad(true)},
        {"backbone.layers.0.mixer.A_log_delta", Tensor::full({3}, 2.0, DType::F64).set_requires_grad(true)},
        {"s4_layers.0.kernel.log_dt", Tensor::full({3}, 2.0, DType::F64).set_requires_grad(true)},
        {"s4_layers.0.D", Tensor::full({3}, 2.0, DType::F64).set_requires_grad(true)}};
    tools::TrainHooks hooks() {
        tools::TrainHooks h;
        h.params = params;
        h.loss = [this](int64_t, double& units) {
            units = 1;
            Tensor loss = ops::sum(ops::mul(params[0].second, Tensor::scalar(0.0, DType::F64)));
            for (size_t i = 1; i < params.size(); ++i)  // log_dt alone gets a gradient (+1 per element)
                loss = ops::add(loss, ops::sum(ops::mul(params[i].second,
                                                        Tensor::scalar(i == 3 ? 1.0 : 0.0, DType::F64))));
            return loss;
        };
        h.save_weights = [this](const std::string& dir) {
            TensorMap m;
            for (auto& [n, t] : params) m[n] = t.detach();
            save_safetensors(dir + "/w.safetensors", m);
        };
        h.load_weights = [this](const std::string& dir) {
            TensorMap m = load_safetensors(dir + "/w.safetensors");
            for (auto& [n, t] : params) std::memcpy(t.data<double>(), m.at(n).data<double>(), 3 * sizeof(double));
        };
        return h;
    }
    double value(size_t i) const { return params[i].second.to_vector<double>()[0]; }
};

tools::TrainLoopOptions group_options(const fs::path& dir, int64_t steps) {
    tools::TrainLoopOptions o = options(dir, steps);
    o.eval_every = 0;
    o.weight_decay = 0.5;
    o.no_decay = tools::kDefaultNoDecay;
    return o;
}

}  // namespace

TEST_CASE("trainer: train.no_decay leaves the references' SSM tensors undecayed, by whole name parts") {
    const auto root = scratch_dir("trainer_no_decay");
    GroupProblem p;
    auto h = p.hooks();
    tools::run_training(group_options(root, 3), h);
    const double decayed = 2.0 * std::pow(1 - 0.1 * 0.5, 3);
    CHECK(p.value(0) == doctest::Approx(decayed).epsilon(1e-15));  // in_proj.weight: decayed
    CHECK(p.value(1) == 2.0);                                       // mixer.A_log: mamba_ssm's _no_weight_decay
    CHECK(p.value(2) == doctest::Approx(decayed).epsilon(1e-15));  // mixer.A_log_delta is not "mixer.A_log"
    CHECK(p.value(4) == doctest::Approx(decayed).epsilon(1e-15));  // S4D's own D decays, as in example.py
    // kernel.log_dt: no decay; its gradient +1 moves it by lr per step (Adam's first steps: m̂ / √v̂ = 1)
    CHECK(p.value(3) == doctest::Approx(2.0 - 3 * 0.1).epsilon(1e-6));

    GroupProblem all;  // an empty list decays everything
    auto ha = all.hooks();
    tools::TrainLoopOptions o = group_options(root / "all", 3);
    o.no_decay.clear();
    tools::run_training(o, ha);
    CHECK(all.value(1) == doctest::Approx(decayed).epsilon(1e-15));
}

TEST_CASE("trainer: train.ssm_lr trains S4D's kernel tensors at their own lr, without decay, and resumes") {
    const auto root = scratch_dir("trainer_ssm_lr");
    GroupProblem p;
    auto h = p.hooks();
    tools::TrainLoopOptions o = group_options(root / "full", 4);
    o.ssm_lr = 0.01;
    tools::run_training(o, h);
    CHECK(p.value(3) == doctest::Approx(2.0 - 4 * 0.01).epsilon(1e-6));  // 0.01 per step, not the run's 0.1
    CHECK(p.value(1) == 2.0);

    GroupProblem part, resumed;  // three groups in the optimizer state: a split run resumes bit for bit
    auto hp = part.hooks();
    tools::TrainLoopOptions o2 = group_options(root / "split", 2);
    o2.ssm_lr = 0.01;
    o2.save_every = 1;
    tools::run_training(o2, hp);
    auto hr = resumed.hooks();
    o2.steps = 4;
    o2.resume = true;
    tools::run_training(o2, hr);
    for (size_t i = 0; i < p.params.size(); ++i)
        CHECK(resumed.params[i].second.to_vector<double>() == p.params[i].second.to_vector<double>());

    GroupProblem none;  // without kernel tensors (a LoRA run from the same config) ssm_lr changes nothing
    none.params.erase(none.params.begin() + 3);
    auto hn = none.hooks();
    o.out_dir = (root / "none").string();
    o.steps = 3;
    tools::run_training(o, hn);
    CHECK(none.value(0) == doctest::Approx(2.0 * std::pow(1 - 0.1 * 0.5, 3)).epsilon(1e-15));
    CHECK(none.value(1) == 2.0);
}

TEST_CASE("run config: the optimizer and accumulation keys reach the loop, and bad values are one-line errors") {
    nlohmann::json rc = tools::resolve_run_config(nlohmann::json::object(), "test");
    tools::TrainLoopOptions o = tools::loop_options(rc, false, true);
    CHECK(o.no_decay == tools::kDefaultNoDecay);
    CHECK(o.ssm_lr == 0);
    tools::apply_assignments(rc, "train.no_decay=[\"bias\",\"norm\"],train.ssm_lr=0.001");
    o = tools::loop_options(rc, false, true);
    CHECK(o.no_decay == std::vector<std::string>{"bias", "norm"});
    CHECK(o.ssm_lr == 0.001);
    tools::apply_assignments(rc, "train.adam_beta2=0.95,train.adam_epsilon=1e-6,train.gradient_accumulation_steps=4");
    o = tools::loop_options(rc, false, true);
    CHECK(o.adam_beta1 == 0.9);
    CHECK(o.adam_beta2 == 0.95);
    CHECK(o.adam_epsilon == 1e-6);
    CHECK(o.grad_accum_steps == 4);
    CHECK(o.best_metric == "loss");
    CHECK(o.early_stopping_patience == 0);
    CHECK_FALSE(o.load_best_at_end);
    tools::apply_assignments(rc, "train.best_metric=\"accuracy\",train.early_stopping_patience=3,"
                                 "train.early_stopping_threshold=0.01,train.load_best_at_end=true");
    o = tools::loop_options(rc, false, true);
    CHECK(o.best_metric == "accuracy");
    CHECK(o.early_stopping_patience == 3);
    CHECK(o.early_stopping_threshold == 0.01);
    CHECK(o.load_best_at_end);
    tools::apply_assignments(rc, "train.steps=1e3,train.warmup_steps=2000");  // an integral number is an integer
    o = tools::loop_options(rc, false, true);
    CHECK(o.steps == 1000);
    CHECK(o.warmup_steps == 1000);  // a warm-up longer than the run is the whole run
    for (const char* bad : {"train.ssm_lr=-1", "train.ssm_lr=\"fast\"", "train.no_decay=[1]", "train.no_decay=[\"\"]",
                            "train.adam_beta1=1", "train.adam_beta2=-0.1",
                            "train.adam_epsilon=-1", "train.gradient_accumulation_steps=0",
                            "train.gradient_accumulation_steps=1.5", "train.steps=1e300", "train.steps=2.5",
                            "train.steps=18446744073709551615", "train.eval_every=-1", "train.lr=-0.1",
                            "train.min_lr_ratio=2", "train.grad_clip=-1", "train.early_stopping_patience=-1",
                            "train.early_stopping_threshold=-0.1", "train.best_metric=\"\"",
                            "train.early_stopping_patience=2,train.eval_every=0"}) {
        CAPTURE(bad);
        nlohmann::json r = tools::resolve_run_config(nlohmann::json::object(), "test");
        // a non-integral value is refused by the assignment itself, a value out of range by the loop
        CHECK_THROWS_AS((tools::apply_assignments(r, bad), tools::loop_options(r, false, true)), Error);
    }
    nlohmann::json r = tools::resolve_run_config(nlohmann::json::object(), "test");
    CHECK_THROWS_WITH_AS(tools::apply_assignments(r, "train.no_decay=\"A_log\""), doctest::Contains("must be array"),
                         Error);
    CHECK_THROWS_WITH_AS(tools::apply_assignments(r, "train.load_best_at_end=1"), doctest::Contains("must be boolean"),
                         Error);
    CHECK_THROWS_WITH_AS(tools::apply_assignments(r, "train.best_metric=3"), doctest::Contains("must be string"), Error);
    // null where the default is not null: one line naming the key (it used to pass the merge and fail later with
    // nlohmann's "type must be number, but is null")
    for (const char* key : {"train.steps", "train.lr", "out", "data.task", "train.no_decay", "data.kind"}) {
        CAPTURE(key);
        CHECK_THROWS_WITH_AS(tools::apply_assignments(r, std::string(key) + "=null"), doctest::Contains("got null"),
                             Error);
    }
    CHECK_THROWS_WITH_AS(tools::resolve_run_config(nlohmann::json::parse(R"({"train": {"steps": null}})"), "file.json"),
                         doctest::Contains("\"train.steps\" must be number"), Error);
    tools::apply_assignments(r, "train.ssm_lr=null,data.path=null");  // keys whose default is null take it
    // integer fields: a float with an integral value becomes an integer; 2.5, 1e30, a negative seed are refused by
    // name (nlohmann's get<int64_t> truncated them or, beyond the range, converted them with undefined behaviour)
    const nlohmann::json rs = tools::resolve_run_config(
        nlohmann::json::parse(R"({"train": {"steps": 1e3, "seed": 7.0}, "data": {"classes": [2.0]}})"), "f");
    CHECK(rs["train"]["steps"].is_number_integer());
    CHECK(rs["train"]["steps"] == 1000);
    CHECK(rs["train"]["seed"] == 7);
    CHECK(rs["data"]["classes"][0].is_number_integer());
    CHECK(tools::resolve_run_config(nlohmann::json::parse(R"({"train": {"seed": 18446744073709551615}})"), "f")
              ["train"]["seed"].get<uint64_t>() == 18446744073709551615ull);
    for (const char* bad : {R"({"train": {"seed": -1}})", R"({"train": {"seed": 1e30}})", R"({"train": {"batch_size": 2.5}})",
                            R"({"train": {"eval_batches": 1e30}})", R"({"data": {"limit": -1}})",
                            R"({"data": {"classes": [1e30]}})"}) {
        CAPTURE(bad);
        CHECK_THROWS_WITH_AS(tools::resolve_run_config(nlohmann::json::parse(bad), "f"),
                             doctest::Contains("must be an integer in"), Error);
    }
}

TEST_CASE("trainer: gradient accumulation steps on the mean of its micro-batches, logs their mean loss, resumes") {
    // Two fixed batches A and B: accumulating them over two micro-batches must give the step of (loss_A + loss_B) / 2.
    const Tensor xa = Tensor::from_vector<double>({1, 2, 0, -1, 0.5, 1, 3, 0}, {2, 4});
    const Tensor xb = Tensor::from_vector<double>({0, 1, -2, 1, 2, 0, 1, 1}, {2, 4});
    const Tensor target = Tensor::from_vector<double>({1.0, -1.0}, {2, 1});
    auto batch_loss = [&](const Tensor& w, const Tensor& x) {
        Tensor err = ops::sub(ops::matmul(x, w), target);
        return ops::mean(ops::mul(err, err));
    };
    auto run = [&](const fs::path& dir, int64_t accum, bool averaged_by_hand) {
        Tensor w = Tensor::full({4, 1}, 0.25, DType::F64).set_requires_grad(true);
        int64_t calls = 0;
        tools::TrainHooks h;
        h.params = {{"w", w}};
        h.loss = [&](int64_t, double& units) {
            units = 2;
            if (averaged_by_hand) return ops::mul_scalar(ops::add(batch_loss(w, xa), batch_loss(w, xb)), 0.5);
            return batch_loss(w, calls++ % 2 == 0 ? xa : xb);
        };
        h.save_weights = [](const std::string&) {};
        h.load_weights = [](const std::string&) {};
        tools::TrainLoopOptions o = options(dir, 5);
        o.eval_every = 0;
        o.save_every = 0;
        o.grad_clip = 0.5;  // the clip sees the averaged gradient
        o.grad_accum_steps = accum;
        tools::run_training(o, h);
        CHECK(calls == (averaged_by_hand ? 0 : 10));
        return w.to_vector<double>();
    };
    const auto root = scratch_dir("trainer_accum");
    const std::vector<double> accumulated = run(root / "accum", 2, false), by_hand = run(root / "hand", 1, true);
    for (size_t i = 0; i < by_hand.size(); ++i) CHECK(accumulated[i] == doctest::Approx(by_hand[i]).epsilon(1e-14));
    const std::vector<double> la = logged_losses(root / "accum"), lh = logged_losses(root / "hand");
    REQUIRE(la.size() == lh.size());
    for (size_t i = 0; i < la.size(); ++i) CHECK(la[i] == doctest::Approx(lh[i]).epsilon(1e-14));

    // the data generator advances once per micro-batch; a resumed run continues with the same draws
    tools::TrainLoopOptions o = options(root, 20);
    o.grad_accum_steps = 3;
    check_split_resume(o, root / "resume", 10);
}

TEST_CASE("trainer: early stopping counts evaluations without a gain beyond the threshold, resumes, loads the best") {
    const auto dir = scratch_dir("trainer_early_stop");
    // scripted evaluations, by the step they follow (eval_every 2): the loss, and an accuracy that mirrors it
    const std::map<int64_t, double> script = {{2, 1.0},  {4, 0.8},  {6, 0.79}, {8, 0.85}, {10, 0.78},
                                              {12, 0.9}, {14, 0.95}, {16, 0.7}, {18, 0.7}, {20, 0.7}};
    auto scripted = [&](Problem& p, tools::TrainHooks& h) {
        auto step = std::make_shared<int64_t>(0);
        p.at_step = [step](int64_t s) { *step = s + 1; };
        h.evaluate = [step, &script] {
            const double v = script.count(*step) ? script.at(*step) : 0.5;
            return std::map<std::string, double>{{"loss", v}, {"accuracy", 1.0 - v}};
        };
    };
    auto run = [&](const std::string& name, double threshold, const std::string& metric, int64_t interrupt_at = -1,
                   bool resume = false, bool load_best = false) {
        Problem p;
        p.interrupt_at = interrupt_at;
        tools::TrainHooks h = p.hooks();
        scripted(p, h);
        tools::TrainLoopOptions o = options(dir / name, 30);
        o.eval_every = 2;
        o.save_every = 0;
        o.early_stopping_patience = 2;
        o.early_stopping_threshold = threshold;
        o.best_metric = metric;
        o.resume = resume;
        o.load_best_at_end = load_best;
        const tools::TrainResult r = tools::run_training(o, h);
        return std::make_pair(r, p.w.to_vector<double>());
    };
    auto best_step = [&](const std::string& name) {
        return models::read_json_file((dir / name / "checkpoints" / "best" / "trainer_state.json").string())["step"];
    };
    // threshold 0.05: 1.0 (first), 0.8 (a gain), 0.79 (better, but by 0.01: no gain, 1), 0.85 (2) -> stop at step 8,
    // the best at step 6 all the same (it is the lowest loss)
    const auto [r, w] = run("threshold", 0.05, "loss");
    CHECK(r.early_stopped);
    CHECK(r.steps_done == 8);
    CHECK(logged_losses(dir / "threshold").size() == 8);
    CHECK(r.best_eval.at("loss") == 0.79);
    CHECK(best_step("threshold") == 6);
    CHECK_FALSE(r.loaded_best);
    // threshold 0: 0.79 is a gain, 0.85 (1), 0.78 (gain), 0.9 (1), 0.95 (2) -> stop at step 14
    const auto [r0, w0] = run("no_threshold", 0.0, "loss");
    CHECK(r0.steps_done == 14);
    CHECK(best_step("no_threshold") == 10);
    // higher is better for accuracy: the same sequence mirrored stops at the same step
    const auto [ra, wa] = run("accuracy", 0.0, "accuracy");
    CHECK(ra.steps_done == 14);
    CHECK(best_step("accuracy") == 10);
    CHECK(ra.best_eval.at("accuracy") == doctest::Approx(0.22));
    // Ctrl-C at step 7 (after the third evaluation: one without a gain), then --resume: the count is kept, so the run
    // stops at step 8 with the weights of the uninterrupted run
    const auto [ri, wi] = run("split", 0.05, "loss", 6);  // SIGINT during step 7, honoured before step 8
    CHECK(ri.interrupted);
    CHECK(ri.steps_done == 7);
    const auto [rr, wr] = run("split", 0.05, "loss", -1, true);
    CHECK(rr.early_stopped);
    CHECK(rr.steps_done == 8);
    CHECK(logged_losses(dir / "split") == logged_losses(dir / "threshold"));
    CHECK(wr == w);
    // --resume after the stop trains nothing more
    const auto [ra2, wa2] = run("split", 0.05, "loss", -1, true);
    CHECK(ra2.early_stopped);
    CHECK(ra2.steps_done == 8);
    CHECK(logged_losses(dir / "split").size() == 8);
    // load_best_at_end: the weights end as the best checkpoint (step 6) holds them, not as they were at step 8
    const auto [rb, wb] = run("best", 0.05, "loss", -1, false, true);
    CHECK(rb.loaded_best);
    const std::vector<double> saved =
        load_safetensors((dir / "best" / "checkpoints" / "best" / "w.safetensors").string()).at("w").to_vector<double>();
    CHECK(wb == saved);
    CHECK(wb != w);
    // a fresh run without evaluations never loads the checkpoints/best an earlier run left in its directory
    {
        Problem q;
        tools::TrainHooks hq = q.hooks();
        hq.evaluate = nullptr;
        tools::TrainLoopOptions oq = options(dir / "best", 3);
        oq.load_best_at_end = true;
        CHECK_FALSE(tools::run_training(oq, hq).loaded_best);
    }
    // a metric the evaluation does not report is an error naming the ones it does
    Problem p;
    tools::TrainHooks h = p.hooks();
    tools::TrainLoopOptions o = options(dir / "bad_metric", 4);
    o.best_metric = "f1";
    CHECK_THROWS_WITH_AS(tools::run_training(o, h), doctest::Contains("is not one of the evaluation's metrics (loss)"),
                         Error);
}
