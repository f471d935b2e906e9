// The `ssmtune` program: dispatches to the commands of tools/commands.h (the list is print_usage below).
// Every error is printed as one `error: <message>` line with exit status 1 (2 for usage errors).
// Not here: the commands themselves (train.cpp, merge.cpp, ...).
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <string>

#include "engine/error.h"
#include "engine/version.h"
#include "tools/commands.h"

namespace {

void print_usage(FILE* out) {
    std::fprintf(out,
                 "ssmtune %s — a from-scratch C++ training stack for state space models\n\n"
                 "usage: ssmtune <command> [options]\n\n"
                 "commands:\n"
                 "  quickstart  the main job: train a small Mamba, fine-tune it two ways, print the table\n"
                 "  train       train a model (Mamba, Longhorn, S4D) from scratch on a dataset\n"
                 "  finetune    apply a PEFT method to a trained model and train only its tensors\n"
                 "  eval        loss / perplexity / accuracy / bits per byte of a model (+ adapter)\n"
                 "  demo        train a small MLP on a built-in synthetic task (end-to-end check of the engine)\n"
                 "  grads       loss, logits and every parameter gradient of a model on a batch (safetensors)\n"
                 "  merge       fold a PEFT adapter into the base weights and write a plain model\n"
                 "  convert     a PiSSA / OLoRA adapter as the equivalent plain LoRA of the original base, or a model\n"
                 "              (pytorch_model.bin, mamba_ssm names) as config.json + model.safetensors\n"
                 "  combine     combine LoRA adapters into a new one (HF's add_weighted_adapter: cat, svd, ties, ...)\n"
                 "  plot        redraw a run's loss/accuracy plots (SVG) from its metrics log\n"
                 "  inspect     model summary: layers, shapes, parameter counts, what a PEFT config trains\n"
                 "  generate    sample from a language model (+ adapter) with the recurrent step mode\n"
                 "  experiment  the PEFT papers' findings at small scale (s4d-synthetic, mamba-transfer)\n"
                 "  study       gradient studies: how far back dL/dh_t reaches, A_log/Δ gradients, LoRA placement\n"
                 "  gradcheck   float64 finite-difference check of an op or a whole small model, as a table\n"
                 "  bench       speed figures: selective scan forward/backward, Mamba training step\n"
                 "  --version   print the version and how this binary was built\n"
                 "  --help      this text; `ssmtune <command> --help` for a command's options\n",
                 ssmtune::version());
}

}  // namespace

namespace ssmtune::tools {

int run_cli(int argc, char** argv) {
    if (argc < 2) {
        print_usage(stdout);
        return 0;
    }
    const std::string command = argv[1];
    try {
        if (command == "--version" || command == "version") {
            std::printf("ssmtune %s\n%s\n", ssmtune::version(), ssmtune::build_info().c_str());
            return 0;
        }
        if (command == "--help" || command == "-h" || command == "help") {
            print_usage(stdout);
            return 0;
        }
        if (command == "demo") return run_demo(argc - 2, argv + 2);
        if (command == "bench") return run_bench(argc - 2, argv + 2);
        if (command == "grads") return run_grads(argc - 2, argv + 2);
        if (command == "merge") return run_merge(argc - 2, argv + 2);
        if (command == "convert") return run_convert(argc - 2, argv + 2);
        if (command == "combine") return run_combine(argc - 2, argv + 2);
        if (command == "plot") return run_plot(argc - 2, argv + 2);
        if (command == "inspect") return run_inspect(argc - 2, argv + 2);
        if (command == "generate") return run_generate(argc - 2, argv + 2);
        if (command == "gradcheck") return run_gradcheck(argc - 2, argv + 2);
        if (command == "train") return run_train(argc - 2, argv + 2);
        if (command == "finetune") return run_finetune(argc - 2, argv + 2);
        if (command == "eval") return run_eval(argc - 2, argv + 2);
        if (command == "quickstart") return run_quickstart(argc - 2, argv + 2);
        if (command == "study") return run_study(argc - 2, argv + 2);
        if (command == "experiment") return run_experiment(argc - 2, argv + 2);

        std::fprintf(stderr, "error: unknown command '%s'; run `ssmtune --help` for the list\n", command.c_str());
        return 2;
    } catch (const UsageError& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 2;
    } catch (const std::filesystem::filesystem_error& e) {
        // the standard library's own (an output directory that cannot be created, a path too long): with the fix
        std::fprintf(stderr, "error: %s; fix: check that the path is right and its directory writable (--out)\n", e.what());
        return 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}

}  // namespace ssmtune::tools
