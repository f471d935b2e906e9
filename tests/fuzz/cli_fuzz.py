#!/usr/bin/env python3
"""Black-box fuzzing of the `ssmtune` program: random flags for every command, random run configs for `train` and
random adapter configs for `finetune` (+ `eval` / `merge` / `finetune --adapter`), each run as a process, judged by
the CLI's contract: exit 0, or exit 1 / 2 with exactly one `error: ...` line on stderr (`warning:` and `note:` lines
aside), never a signal, an uncaught exception ("terminate", "what()") or a hang. Two modes judge results too, on
random *valid* adapters and runs: merges (a merge, convert or combine the program accepts gives the adapter's loss;
the saved adapter evaluates to the run's last evaluation; an adapter list evaluated in turn gives each one's loss;
greedy generation agrees with the parallel logits; eval on a token file or IDX images gives grads' loss on what
the data readers define, and the metrics of its logits) and resumes (a run killed with SIGKILL and resumed ends as the
run never killed).

The libFuzzer targets (tests/fuzz/*.cpp) reach the readers in-process; this reaches what only the whole program
does: flag parsing and narrowing, config sections and their defaults, the commands' own checks, the interplay of
model, adapter, data and tokenizer paths. It found the findings listed in the README ("Sanitizers and fuzzing").

    python3 tests/fuzz/cli_fuzz.py --ssmtune build/tools/ssmtune [--mode flags|configs|adapters|merges|resumes|all]
                                   [--runs N] [--seed S] [--timeout SECONDS]

Fixtures (tiny Mamba, Longhorn and S4D models, LoRA / PiSSA / state-offset adapters, batch files) are built with
the binary itself in a temporary directory (cli_fuzz_common.py). The merges and resumes modes live in
cli_fuzz_results.py, the checks of `eval` against `grads` in cli_fuzz_evals.py. Exit status 1 when a run broke the contract; a timeout is reported apart
(a config may ask for that much work: train.steps 1e9). Not here: coverage guidance (libFuzzer's job), GPUs.
"""
import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile

from cli_fuzz_common import Runner, make_fixtures
from cli_fuzz_results import fuzz_merges, fuzz_resumes


NUMS = ["0", "-1", "1", "2", "3", "0.5", "1e9", "1e30", "nan", "inf", "-inf", "abc", "", "1,2", "2147483648",
        "9223372036854775808", "0x10", " 1", "1 ", "-0", "1e-300", "5,", ",", "1,,2", "0.0001", "4294967297"]
VALUES = [0, -1, 1, 2, 3, 7, 10**9, 1e30, -1e30, float("nan"), float("inf"), 0.5, -0.5, "", "abc", True, False, None,
          [], {}, [1, 2], "auto", "mamba", "cuda", "cosine", 1e-12, 64, 2**40, -2**63]


def fuzz_flags(run, rng, d, n, fixtures):
    text, base, adapters, batches = fixtures
    models = [base["mamba"] + "/model", base["longhorn"] + "/model"]
    a = list(adapters.values())
    paths = models + a + ["", "/nonexistent", d, text, os.path.join(d, "empty.txt"), base["mamba"],
                          a[0] + "+" + a[1], a[0] + "," + a[3], models[0] + "/model.safetensors"]
    kinds = {
        "path": lambda: rng.choice(paths), "num": lambda: rng.choice(NUMS),
        "ids": lambda: rng.choice(["1,2,3", "0", "", "-1", "1,,2", "99999", "a,b", "1.5", ",1", "3,4,5,6,7,8,9,1,2"]),
        "str": lambda: rng.choice(["hello", "", "\u00e9\u00e9", "\x01", "true", "frequency", "total", "a" * 3000]),
        "task": lambda: rng.choice(["selective_copying", "induction_heads", "associative_recall", "copying", ""]),
        "comb": lambda: rng.choice(["cat", "svd", "ties", "dare_linear", "magnitude_prune", "linear", "x", ""]),
        "type": lambda: rng.choice(["mamba", "longhorn", "s4d", "x", ""]),
        "op": lambda: rng.choice(["selective_scan", "matmul", "softmax", "gelu", "x", ""]),
        "what": lambda: rng.choice(["scan", "mamba", "peft", "kernels", "x", ""]),
        "dev": lambda: rng.choice(["cpu", "cuda", "cuda:0", "x"]),
        "out": lambda: rng.choice([os.path.join(d, "o1"), os.path.join(d, "o2"), "/proc/ssmtune_x", text]),
        "set": lambda: rng.choice(["train.eval_batches=1", "data.task.span=3", "train.batch_size=0", "x=1",
                                   "train.seq_len=1e9", "adapter=" + a[0], "data.order=pixel"]),
        "peft": lambda: rng.choice(['{"peft_type": "LORA", "r": 1}', '{"peft_type": "STATE_OFFSET"}', "{", text]),
        "batch": lambda: rng.choice(list(batches.values()) + [text, "/nonexistent"]),
        "per": lambda: rng.choice([a[0] + ",__base__", a[0] + "," + a[1], "__base__,__base__", a[3] + ",__base__", ","]),
        "switch": None,
    }
    common = {"config": "path", "set": "set", "data": "path", "task": "task", "tokenizer": "path", "steps": "num",
              "lr": "num", "batch-size": "num", "seq-len": "num", "seed": "num", "eval-every": "num", "out": "out",
              "resume": "switch", "quiet": "switch", "gradient-checkpointing": "switch"}
    commands = {
        "train": dict(common, **{"model-type": "type", "device": "dev"}),
        "finetune": dict(common, model="path", peft="peft", adapter="path"),
        "eval": {"model": "path", "adapter": "path", "task": "task", "data": "path", "batch-size": "num",
                 "seq-len": "num", "seed": "num", "set": "set", "tokenizer": "path", "config": "path"},
        "generate": {"model": "path", "adapter": "path", "ids": "ids", "prompt": "str", "max-new-tokens": "num",
                     "seed": "num", "stop-ids": "ids", "temperature": "num", "tokenizer": "path", "top-k": "num",
                     "top-p": "num"},
        "inspect": {"model": "path", "adapter": "path", "peft": "peft"},
        "study": {"model": "path", "task": "task", "data": "path", "batch": "batch", "batch-size": "num",
                  "seq-len": "num", "seed": "num", "out": "out", "tokenizer": "path"},
        "merge": {"model": "path", "adapter": "path", "out": "out"},
        "convert": {"model": "path", "adapter": "path", "out": "out"},
        "combine": {"model": "path", "adapter": "path", "combination": "comb", "density": "num", "majority-sign": "str",
                    "out": "out", "seed": "num", "svd-clamp": "num", "svd-rank": "num", "weights": "ids"},
        "grads": {"model": "path", "batch": "batch", "out": "out", "dtype": "str", "adapter": "path", "per-sample": "per"},
        "gradcheck": {"atol": "num", "eps": "num", "max-per-tensor": "num", "model": "path", "model-type": "type",
                      "op": "op", "rtol": "num"},
        "bench": {"batch": "num", "inner": "num", "lengths": "ids", "repeats": "num", "state": "num", "steps": "num",
                  "what": "what", "no-reference": "switch", "device": "dev"},
        "plot": {},
    }
    # small defaults where a command would otherwise do a benchmark's or a training run's worth of work
    defaults = {"bench": [("what", "scan"), ("lengths", "8"), ("repeats", "1"), ("batch", "1"), ("inner", "8"),
                          ("state", "4"), ("steps", "1")],
                "train": [("config", os.path.join(d, "mamba.json")), ("steps", "1"), ("out", os.path.join(d, "o_train"))],
                "finetune": [("config", os.path.join(d, "mamba.json")), ("steps", "1"),
                             ("out", os.path.join(d, "o_finetune"))],
                "generate": [("max-new-tokens", "4")]}
    for _ in range(n):
        command = rng.choice(sorted(commands))
        spec, args = commands[command], [command]
        if command == "plot":
            args.append(rng.choice(paths + [base["mamba"]]))
        for flag, kind in spec.items():
            if (flag == "model" and rng.random() < 0.9) or rng.random() < 0.3:
                args += ["--" + flag] if kind == "switch" else ["--" + flag, kinds[kind]()]
        if spec and rng.random() < 0.1:
            args.append("--" + rng.choice(list(spec) + ["bogus"]))  # a value missing, or given twice
        for flag, value in defaults.get(command, []):
            if "--" + flag not in args:
                args += ["--" + flag, value]
        if command in ("train", "finetune"):
            args += ["--quiet"] if "--quiet" not in args else []
            args += ["--set", "train.batch_size=2,train.eval_batches=1"] if "--set" not in args else []
        run(args, " ".join(repr(x) if (" " in x or not x) else x for x in args)[:600])


def fuzz_configs(run, rng, d, n, fixtures):
    text = fixtures[0]
    bases = [{"model": {"model_type": "mamba", "vocab_size": 10, "hidden_size": 16, "num_hidden_layers": 2,
                        "state_size": 4, "time_step_rank": "auto"},
              "data": {"kind": "synthetic", "task": {"name": "selective_copying", "span": 12}},
              "train": {"steps": 3, "batch_size": 4, "eval_every": 2, "log_every": 1, "eval_batches": 1}},
             {"model": {"model_type": "longhorn", "vocab_size": 256, "hidden_size": 16, "num_hidden_layers": 2,
                        "state_size": 4, "time_step_rank": "auto"},
              "data": {"kind": "text", "path": text},
              "train": {"steps": 3, "batch_size": 2, "seq_len": 16, "eval_every": 2, "eval_batches": 1}}]
    keys = {"model": ["use_bias", "tie_word_embeddings", "rms_norm", "layer_norm_epsilon", "time_step_min",
                      "time_step_scale", "d_state", "input_size", "conv_kernel", "expand", "intermediate_size"],
            "train": ["schedule", "warmup_steps", "min_lr_ratio", "grad_clip", "ssm_lr", "adam_beta1", "adam_beta2",
                      "adam_epsilon", "gradient_accumulation_steps", "save_every", "best_metric",
                      "early_stopping_patience", "load_best_at_end", "seed", "weight_decay", "no_decay", "lr",
                      "batch_size", "seq_len", "steps"],
            "data": ["val_fraction", "order", "classes", "limit", "permutation_seed", "tokenizer", "path", "kind"]}
    for i in range(n):
        cfg = json.loads(json.dumps(rng.choice(bases)))
        for _ in range(rng.randint(1, 3)):
            section = rng.choice(["model", "train", "data", "task"])
            if section == "task":
                cfg["data"].setdefault("task", {})[rng.choice(["span", "num_tokens", "num_memorize", "reverse",
                                                               "token_shift", "name"])] = rng.choice(VALUES)
            else:
                cfg[section][rng.choice(keys[section])] = rng.choice(VALUES)
        cfg["out"] = os.path.join(d, "o_config")
        path = os.path.join(d, "config.json")
        with open(path, "w") as f:
            f.write(json.dumps(cfg))  # NaN / Infinity as Python writes them: not JSON, the parser's case too
        run(["train", "--config", path, "--quiet"], "train --config " + json.dumps(cfg))


def fuzz_adapters(run, rng, d, n, fixtures):
    base = fixtures[1]["mamba"]
    types = ["LORA", "SURM", "PARALLEL_ADAPTER", "SDLORA", "STATE_OFFSET", "INITIAL_STATE", "PROMPT", "PREFIX",
             "ADDITIONAL_SCAN", "BITFIT", "PARTIAL", "FULL", "TRAINABLE_TOKENS"]
    keys = ["r", "lora_alpha", "target_modules", "layers_to_transform", "init_lora_weights", "use_dora", "use_rslora",
            "bias", "modules_to_save", "num_virtual_tokens", "variant", "init", "structure", "mode", "d_state",
            "dimensions", "channel_ratio", "state_ratio", "kron_factor", "surm_alpha", "activation", "token_indices",
            "param_names", "lora_dropout", "rank_pattern", "alpha_pattern", "exclude_modules", "task_type"]
    modules = ["in_proj", "x_proj", "dt_proj", "out_proj", "embeddings", "lm_head", "conv1d", "A_log", "D", ".*"]
    own = {}  # each type's own keys, as its error for an unknown key lists them
    for t in types:
        r = subprocess.run([run.binary, "inspect", "--model", base + "/model", "--peft",
                            json.dumps({"peft_type": t, "zz_unknown": 1})], capture_output=True, text=True)
        listed = r.stderr.split("valid keys: ", 1)[-1].split(" (and", 1)[0] if "valid keys: " in r.stderr else ""
        own[t] = [k.strip() for k in listed.split(",") if k.strip() and not k.startswith("none")] or keys
    for _ in range(n):
        peft = {"peft_type": rng.choice(types)}
        for _ in range(rng.randint(1, 4)):
            key = rng.choice(own[peft["peft_type"]] if rng.random() < 0.8 else keys)
            peft[key] = (rng.sample(modules, rng.randint(0, 3)) if key.endswith("modules") and rng.random() < 0.7
                         else rng.choice([1, 2, 4, 8] if rng.random() < 0.3 else VALUES))
        out = os.path.join(d, "o_adapter")
        shutil.rmtree(out, ignore_errors=True)
        show = "finetune --peft " + json.dumps(peft)
        status = run(["finetune", "--model", base + "/model", "--config", os.path.join(d, "mamba.json"), "--peft",
                      json.dumps(peft), "--steps", "2", "--set", "train.batch_size=2,train.eval_batches=1", "--out",
                      out, "--quiet"], show)
        if status == 0 and rng.random() < 0.5:  # what it wrote must load again (its results: the merges mode)
            run(["eval", "--model", base + "/model", "--adapter", out + "/adapter", "--task", "selective_copying",
                 "--set", "data.task.span=12,train.batch_size=2,train.eval_batches=1"], "eval after " + show)
            run(["merge", "--model", base + "/model", "--adapter", out + "/adapter", "--out", out + "/merged"],
                "merge after " + show)
            run(["finetune", "--model", base + "/model", "--config", os.path.join(d, "mamba.json"), "--adapter",
                 out + "/adapter", "--steps", "1", "--set", "train.batch_size=2,train.eval_batches=1", "--out",
                 out + "/on", "--quiet"], "finetune --adapter after " + show)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ssmtune", required=True, help="the ssmtune binary")
    p.add_argument("--mode", default="all", choices=["flags", "configs", "adapters", "merges", "resumes", "all"])
    p.add_argument("--runs", type=int, default=300, help="runs per mode (merge cases: a tenth of it in --mode all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=int, default=60, help="seconds before a run counts as slow")
    p.add_argument("--verbose", action="store_true", help="print every run, with its error line")
    args = p.parse_args()
    run = Runner(os.path.abspath(args.ssmtune), args.timeout)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="ssmtune_cli_fuzz_") as d:
        run.cwd = d
        run.verbose = args.verbose
        fixtures = make_fixtures(run, d)
        run.runs = 0
        for mode, fuzz in [("flags", fuzz_flags), ("configs", fuzz_configs), ("adapters", fuzz_adapters),
                           ("merges", fuzz_merges), ("resumes", fuzz_resumes)]:
            # "all" leaves out resumes (their kill points depend on timing) and runs a tenth as many merge cases (four
            # runs each, training)
            if args.mode == mode or (args.mode == "all" and mode != "resumes"):
                fuzz(run, rng, d, args.runs // 10 if mode == "merges" and args.mode == "all" else args.runs, fixtures)
    print("cli_fuzz: %d runs (seed %d), %d broke the contract, %d slow" % (run.runs, args.seed, run.broken, run.slow))
    return 1 if run.broken else 0


if __name__ == "__main__":
    sys.exit(main())
