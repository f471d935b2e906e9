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

Fixtures (tiny Mamba and Longhorn models, LoRA / PiSSA / state-offset adapters, batch files) are built with the
binary itself in a temporary directory. Exit status 1 when a run broke the contract; a timeout is reported apart
(a config may ask for that much work: train.steps 1e9). Not here: coverage guidance (libFuzzer's job), GPUs.
"""
import argparse
import json
import math
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

NUMS = ["0", "-1", "1", "2", "3", "0.5", "1e9", "1e30", "nan", "inf", "-inf", "abc", "", "1,2", "2147483648",
        "9223372036854775808", "0x10", " 1", "1 ", "-0", "1e-300", "5,", ",", "1,,2", "0.0001", "4294967297"]
VALUES = [0, -1, 1, 2, 3, 7, 10**9, 1e30, -1e30, float("nan"), float("inf"), 0.5, -0.5, "", "abc", True, False, None,
          [], {}, [1, 2], "auto", "mamba", "cuda", "cosine", 1e-12, 64, 2**40, -2**63]


def write_safetensors(path, tensors):
    """tensors: name -> (dtype name, shape, flat list); I64 and F32 only."""
    header, blobs, offset = {}, [], 0
    for name, (dtype, shape, values) in tensors.items():
        blob = struct.pack("<%d%s" % (len(values), "q" if dtype == "I64" else "f"), *values)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


class Runner:
    def __init__(self, binary, timeout):
        self.binary, self.timeout, self.cwd = binary, timeout, None  # cwd: where default outputs (runs/...) land
        self.runs = self.broken = self.slow = 0
        self.verbose = False
        self.stdout = ""  # the last run's

    def __call__(self, args, show):
        """Runs `ssmtune args`; returns its exit status (None on a timeout). Prints the runs that break the contract."""
        self.runs += 1
        try:
            r = subprocess.run([self.binary] + args, capture_output=True, text=True, errors="replace",
                               timeout=self.timeout, cwd=self.cwd, env=dict(os.environ, OMP_NUM_THREADS="1"))
        except subprocess.TimeoutExpired:
            self.slow += 1
            print("slow (over %ds): %s" % (self.timeout, show), flush=True)
            return None
        self.stdout = r.stdout
        errors = [l for l in r.stderr.splitlines()
                  if l.strip() and not l.startswith("warning:") and not l.startswith("note:")]
        broken = (r.returncode not in (0, 1, 2) or (r.returncode in (1, 2) and len(errors) != 1)
                  or (r.returncode in (1, 2) and not errors[0].startswith("error: "))
                  or "terminate" in r.stderr or "what()" in r.stderr)
        if broken:
            self.broken += 1
            print("BROKEN (exit %d): %s\n    %s" % (r.returncode, show, r.stderr[-800:].replace("\n", "\n    ")),
                  flush=True)
        elif self.verbose:
            print("exit %d: %s%s" % (r.returncode, show[:300], (" => " + errors[0][:200]) if errors else ""), flush=True)
        return r.returncode


def make_fixtures(run, d):
    text = os.path.join(d, "text.txt")
    with open(text, "w") as f:
        f.write("the state space model reads its input one token at a time. " * 200)
    open(os.path.join(d, "empty.txt"), "w").close()
    small = "train.batch_size=2,train.eval_batches=1"
    base = {"mamba": os.path.join(d, "base_mamba"), "longhorn": os.path.join(d, "base_longhorn")}
    model = {"hidden_size": 16, "num_hidden_layers": 2, "state_size": 4, "expand": 2, "time_step_rank": "auto"}
    for kind, out in base.items():
        cfg = os.path.join(d, kind + ".json")
        data = ({"kind": "synthetic", "task": {"name": "selective_copying", "span": 12}} if kind == "mamba"
                else {"kind": "text", "path": text})
        train = {"steps": 2, "seq_len": 16} if kind == "longhorn" else {"steps": 2}
        with open(cfg, "w") as f:
            json.dump({"model": dict(model, model_type=kind, vocab_size=10 if kind == "mamba" else 256),
                       "data": data, "train": train}, f)
        if run(["train", "--config", cfg, "--set", small, "--out", out, "--quiet"], "fixture " + kind) != 0:
            sys.exit("cli_fuzz: could not build the %s fixture" % kind)
    adapters = {}
    for name, peft in [("lora", {"peft_type": "LORA", "r": 2, "target_modules": ["in_proj", "out_proj"]}),
                       ("lora2", {"peft_type": "LORA", "r": 3, "target_modules": ["in_proj", "x_proj"]}),
                       ("pissa", {"peft_type": "LORA", "r": 2, "target_modules": ["in_proj"], "init_lora_weights": "pissa"}),
                       ("offset", {"peft_type": "STATE_OFFSET"})]:
        out = os.path.join(d, "ft_" + name)
        if run(["finetune", "--model", base["mamba"] + "/model", "--config", os.path.join(d, "mamba.json"), "--peft",
                json.dumps(peft), "--set", small, "--steps", "1", "--out", out, "--quiet"], "fixture " + name) != 0:
            sys.exit("cli_fuzz: could not build the %s adapter fixture" % name)
        adapters[name] = out + "/adapter"
    batches = {}
    for name, tensors in [("ids", {"input_ids": ("I64", [2, 6], [1, 2, 3, 4, 5, 6, 6, 5, 4, 3, 2, 1])}),
                          ("big_ids", {"input_ids": ("I64", [1, 4], [1, 2, 300, 4])}),
                          ("neg_ids", {"input_ids": ("I64", [1, 4], [1, -2, 3, 4])}),
                          ("float_ids", {"input_ids": ("F32", [1, 4], [1.0, 2.0, 3.0, 4.0])}),
                          ("one_step", {"input_ids": ("I64", [1, 1], [1])}),
                          ("no_batch", {"input_ids": ("I64", [0, 4], [])}),
                          ("frames", {"inputs": ("F32", [2, 5, 3], [0.5] * 30), "labels": ("I64", [2], [0, 1])})]:
        batches[name] = os.path.join(d, name + ".safetensors")
        write_safetensors(batches[name], tensors)
    return text, base, adapters, batches


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
              "resume": "switch", "quiet": "switch"}
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


def read_safetensors_f32(path, name):
    """(shape, flat values) of one F32 tensor of a safetensors file."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        begin, end = header[name]["data_offsets"]
        f.seek(8 + n + begin)
        data = f.read(end - begin)
    assert header[name]["dtype"] == "F32"
    return header[name]["shape"], struct.unpack("<%df" % (len(data) // 4), data)


def agrees(value, reference, rtol):
    """Both known and |value − reference| ≤ rtol · max(1, |reference|)."""
    return value is not None and reference is not None and abs(value - reference) <= rtol * max(1.0, abs(reference))


def eval_loss(stdout):
    """The loss from `eval`'s JSON line, or None."""
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            loss = json.loads(line).get("loss")
            return float(loss) if loss is not None else None
    return None


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


def valid_peft(rng, kind):
    """A random adapter config built from valid values (most of them train) for a `kind` model (mamba, longhorn,
    s4d), for the merges and resumes modes."""
    s4d = kind == "s4d"
    t = rng.choice(["LORA"] * 6 + ["SURM"] * 2 + ["BITFIT", "PARTIAL", "FULL", "SDLORA", "STATE_OFFSET",
                                                  "PARALLEL_ADAPTER", "INITIAL_STATE"] +
                   ([] if s4d else ["TRAINABLE_TOKENS", "PROMPT", "PREFIX"]) +
                   (["ADDITIONAL_SCAN"] if kind == "mamba" else []))
    some = lambda xs, k=3: rng.sample(xs, rng.randint(1, min(k, len(xs))))
    maybe = lambda p: rng.random() < p
    projections = ["encoder", "output_linear.0", "decoder"] if s4d else ["in_proj", "x_proj", "dt_proj", "out_proj"]
    peft = {"peft_type": t}
    if t == "LORA":
        peft.update(r=rng.choice([1, 2, 3]), lora_alpha=rng.choice([1, 2, 5, 16]),
                    target_modules=some(projections + ([] if s4d else ["embeddings", "lm_head"])))
        for key, p, values in [("use_dora", 0.3, [True]), ("use_rslora", 0.3, [True]),
                               ("bias", 0.25, ["all", "lora_only"]), ("layers_to_transform", 0.2, [[0], [1]]),
                               ("init_lora_weights", 0.4, [False, "gaussian", "pissa", "pissa_niter_2", "olora",
                                                           "orthogonal"]),
                               ("rank_pattern", 0.2, [{"decoder": 4}, {"s4_layers.1.output_linear.0": 1}] if s4d
                                else [{"out_proj": 4}, {"layers.1.mixer.in_proj": 1}]),
                               ("alpha_pattern", 0.2, [{"encoder": 3}, {"output_linear.0": 0.5}] if s4d
                                else [{"in_proj": 3}, {"x_proj": 0.5}]),
                               ("modules_to_save", 0.2, [["norms.0"], ["decoder"]] if s4d
                                else [["conv1d"], ["norm_f"], ["dt_proj"]]),
                               ("lora_bias", 0.15, [True]),
                               ("trainable_token_indices", 0 if s4d else 0.15, [[1, 3]]),
                               ("target_parameters", 0.15, [["log_A_real"], ["kernel.C"], ["D", "A_imag"]] if s4d
                                else [["A_log"], ["D"], ["mixer.D", "A_log"]]),
                               ("exclude_modules", 0.1, [["s4_layers.0.output_linear.0"]] if s4d
                                else [["layers.0.mixer.in_proj"]])]:
            if maybe(p):
                peft[key] = rng.choice(values)
    elif t == "SURM":
        peft.update(structure=rng.choice(["circulant", "toeplitz", "kronecker", "ldr"]),
                    mode=rng.choice(["lora", "lora", "adapter"]), surm_alpha=rng.choice([0.5, 1, 2]),
                    target_modules=some(projections, 2))
    elif t == "BITFIT" and maybe(0.5):
        peft["bias_names"] = some(["encoder.bias", "output_linear.0.bias", "decoder.bias"] if s4d
                                  else ["conv1d.bias", "dt_proj.bias"], 2)
    elif t == "PARTIAL":
        peft["param_names"] = some(["kernel", "log_dt", "D", "C", "norms", "decoder"] if s4d
                                   else ["A_log", "D", "conv1d", "dt_proj", "norm", "x_proj"])
        if maybe(0.3):
            peft["layers_to_transform"] = [rng.choice([0, 1])]
    elif t == "TRAINABLE_TOKENS":
        peft["token_indices"] = some([1, 2, 5, 7], 2)
        if maybe(0.3):
            peft["init_weights"] = False
    elif t == "SDLORA":
        peft.update(channel_ratio=rng.choice([0.1, 0.5]), state_ratio=rng.choice([0.25, 0.5]), warmup_steps=1)
        if maybe(0.5):
            peft["target_modules"] = some(projections, 2)
    elif t == "STATE_OFFSET":
        peft["variant"] = rng.choice(["h", "y"])
    elif t == "INITIAL_STATE" and not s4d and maybe(0.5):
        peft["conv_init_state"] = True
    elif t in ("PROMPT", "PREFIX"):
        peft["num_virtual_tokens"] = rng.choice([1, 2, 4])
        if t == "PROMPT" and maybe(0.5):
            peft["prompt_tuning_init"] = "RANDOM"
    elif t == "ADDITIONAL_SCAN":
        peft["d_state"] = rng.choice([1, 2, 4])
    return peft


def s4d_fixture(run, d):
    """An S4D classifier (D 8, 2 layers, dropout 0.1) trained 2 steps on 24 tiny IDX images (4 rows of 3 pixels, 3
    classes) it writes, with d/s4d.json, the images' run config; built once, returns its run directory."""
    out = os.path.join(d, "base_s4d")
    if os.path.exists(out):
        return out
    images, r = os.path.join(d, "idx"), random.Random(0)
    os.makedirs(images, exist_ok=True)
    labels = [k % 3 for k in range(24)]
    pixels = bytes(min(255, 60 * labels[k] + r.randint(0, 80)) for k in range(24) for _ in range(12))
    for split in ("train", "t10k"):
        with open(os.path.join(images, split + "-images-idx3-ubyte"), "wb") as f:
            f.write(struct.pack(">iiii", 0x803, 24, 4, 3) + pixels)
        with open(os.path.join(images, split + "-labels-idx1-ubyte"), "wb") as f:
            f.write(struct.pack(">ii", 0x801, 24) + bytes(labels))
    with open(os.path.join(d, "s4d.json"), "w") as f:
        json.dump({"data": {"kind": "fashion_mnist", "path": images, "order": "row"}, "train": {"steps": 2}}, f)
    if run(["train", "--config", os.path.join(d, "s4d.json"), "--set", "model.d_model=8,model.n_layers=2,"
            "model.d_state=8,train.batch_size=2,train.eval_batches=1", "--out", out, "--quiet"], "fixture s4d") != 0:
        sys.exit("cli_fuzz: could not build the s4d fixture")
    return out


def check_eval_windows(run, rng, d, kind, base, adapter, show):
    """`eval` on a token file (for the byte-level Longhorn also a byte file) must give what `grads` gives on the
    validation windows tools/data/text.h defines: the last llround(n·f) tokens, windows of L + 1 tokens starting
    every L, batches of B, at most K batches (the last one may be partial). Loss to 1e-5; accuracy = the share of
    targets the logits' argmax picks (where no two logits tie within 1e-4); perplexity = exp(loss); bits per byte =
    loss / ln 2 for bytes."""
    V = 10 if kind == "mamba" else 256
    n, f = rng.randint(12, 120), rng.choice([0.3, 0.5, 0.7])
    n_val = int(math.floor(n * f + 0.5))
    L, B, K = rng.randint(1, min(9, n_val - 1, n - n_val - 1)), rng.randint(1, 4), rng.randint(1, 4)
    ids = [rng.randrange(V) for _ in range(n)]
    as_bytes = kind == "longhorn" and rng.random() < 0.5
    data = os.path.join(d, "windows.txt" if as_bytes else "windows.safetensors")
    if as_bytes:
        with open(data, "wb") as out:
            out.write(bytes(ids))
    else:
        write_safetensors(data, {"input_ids": ("I64", [n], ids)})
    what = "eval --data (%d tokens, val_fraction %g, L %d, B %d, %d batches) %s" % (n, f, L, B, K, show)
    if run(["eval", "--model", base, "--adapter", adapter, "--data", data, "--batch-size", str(B), "--seq-len", str(L),
            "--set", "train.eval_batches=%d,data.val_fraction=%g" % (K, f)], what) != 0:
        return
    got = next((json.loads(line) for line in reversed(run.stdout.splitlines()) if line.startswith("{")), {})
    val = ids[n - n_val:]
    rows = [val[w * L:w * L + L + 1] for w in range(n_val) if w * L + L + 1 <= n_val][:B * K]
    batch, grads = os.path.join(d, "windows_batch.safetensors"), os.path.join(d, "windows_grads.safetensors")
    write_safetensors(batch, {"input_ids": ("I64", [len(rows), L + 1], sum(rows, []))})
    if run(["grads", "--model", base, "--adapter", adapter, "--batch", batch, "--out", grads], "grads " + what) != 0:
        return
    loss = read_safetensors_f32(grads, "loss")[1][0]
    problems = []
    if not agrees(got.get("loss"), loss, 1e-5):
        problems.append("loss %s, grads on its windows %s" % (got.get("loss"), loss))
    if not agrees(got.get("perplexity"), math.exp(got.get("loss", 0)), 1e-9):
        problems.append("perplexity %s for loss %s" % (got.get("perplexity"), got.get("loss")))
    if as_bytes != ("bits_per_byte" in got) or (as_bytes and not agrees(got["bits_per_byte"], got["loss"] / math.log(2), 1e-9)):
        problems.append("bits per byte %s for loss %s (bytes: %s)" % (got.get("bits_per_byte"), got.get("loss"), as_bytes))
    shape, logits = read_safetensors_f32(grads, "logits")
    if shape[1] == L + 1:
        hits, tie = 0, False
        for r, row in enumerate(rows):
            for t in range(L):
                z = logits[(r * (L + 1) + t) * V:(r * (L + 1) + t + 1) * V]
                top = sorted(z)
                tie = tie or top[-1] - top[-2] < 1e-4
                hits += z[row[t + 1]] == top[-1]
        if not tie and not agrees(got.get("accuracy"), hits / (len(rows) * L), 1e-9):
            problems.append("accuracy %s, the argmax of grads' logits %s" % (got.get("accuracy"), hits / (len(rows) * L)))
    for problem in problems:
        run.broken += 1
        print("BROKEN (%s): %s" % (problem, what), flush=True)


def sklearn_metrics(predicted, truth):
    """accuracy, macro-F1 and MCC as scikit-learn's accuracy_score, f1_score(average="macro") and matthews_corrcoef."""
    labels = sorted(set(predicted) | set(truth))
    n = len(truth)
    f1 = []
    for k in labels:
        tp = sum(p == k and t == k for p, t in zip(predicted, truth))
        fp, fn = sum(p == k for p in predicted) - tp, sum(t == k for t in truth) - tp
        f1.append(2 * tp / (2 * tp + fp + fn))
    c = sum(p == t for p, t in zip(predicted, truth))
    pk, tk = [sum(p == k for p in predicted) for k in labels], [sum(t == k for t in truth) for k in labels]
    den = math.sqrt((n * n - sum(x * x for x in pk)) * (n * n - sum(x * x for x in tk)))
    mcc = (c * n - sum(a * b for a, b in zip(pk, tk))) / den if den else 0.0
    return {"accuracy": c / n, "macro_f1": sum(f1) / len(f1), "mcc": mcc}


def image_models(run, d):
    """A Longhorn frame classifier (row order: 4 frames of 3 pixels, a class head) and a Mamba reading pixel tokens
    (pixel order: 12 tokens, the class token 256 + c answered at the last), both trained 2 steps on the S4D fixture's
    images; built once, returns {"frames": model dir, "pixels": model dir}."""
    models = {"frames": os.path.join(d, "base_frames"), "pixels": os.path.join(d, "base_pixels")}
    if not os.path.exists(models["pixels"]):
        s4d_fixture(run, d)
        for view, model_type, order in (("frames", "longhorn", "row"), ("pixels", "mamba", "pixel")):
            if run(["train", "--config", os.path.join(d, "s4d.json"), "--model-type", model_type, "--set",
                    "model.hidden_size=8,model.num_hidden_layers=1,model.state_size=4,train.batch_size=2,"
                    "train.eval_batches=1,data.order=" + order, "--out", models[view], "--quiet"], "fixture " + view) != 0:
                sys.exit("cli_fuzz: could not build the %s fixture" % view)
    return {view: out + "/model" for view, out in models.items()}


def check_eval_images(run, rng, d, view, base, adapter, show):
    """`eval` of an image classifier on random IDX images (random count, class filter, limit and batch size) must give
    what `grads` gives on those images as tools/data/idx.h and tools/workload.cpp define them (pixels / 255; the filter
    keeps the classes named, renumbered in its order; the test split keeps max(1, limit / 6) images): the loss over all
    test images to 1e-5, and the accuracy, macro-F1 and MCC of the logits' argmax as scikit-learn computes them.
    view: "s4d" (the S4D classifier, row order), "frames" (a frame model: its class logits at the last frame) or
    "pixels" (an LM on pixel tokens: cross-entropy of the class token 256 + c at the last pixel, over the whole
    vocabulary, and its argmax − 256 the answer, a pixel token a label of its own)."""
    images = os.path.join(d, "idx_eval")
    os.makedirs(images, exist_ok=True)
    n = rng.randint(1, 30)
    labels = [rng.randrange(3) for _ in range(n)]
    pixels = [rng.randrange(256) for _ in range(12 * n)]
    for split in ("train", "t10k"):
        with open(os.path.join(images, split + "-images-idx3-ubyte"), "wb") as f:
            f.write(struct.pack(">iiii", 0x803, n, 4, 3) + bytes(pixels))
        with open(os.path.join(images, split + "-labels-idx1-ubyte"), "wb") as f:
            f.write(struct.pack(">ii", 0x801, n) + bytes(labels))
    classes = rng.sample(range(3), rng.randint(1, 3)) if rng.random() < 0.5 else []
    limit = rng.choice([0, 0, rng.randint(1, 40)])
    B = rng.randint(1, 8)
    cfg = os.path.join(d, "images_eval.json")
    with open(cfg, "w") as f:
        json.dump({"data": {"kind": "fashion_mnist", "path": images, "order": "pixel" if view == "pixels" else "row",
                            "classes": classes, "limit": limit}, "train": {"batch_size": B}}, f)
    what = "eval %s (%d images, classes %s, limit %d, B %d) %s" % (view, n, classes, limit, B, show)
    with_adapter = ["--adapter", adapter] if adapter else []
    if run(["eval", "--model", base] + with_adapter + ["--config", cfg], what) != 0:
        return
    got = next((json.loads(line) for line in reversed(run.stdout.splitlines()) if line.startswith("{")), {})
    kept = [k for k in range(n) if not classes or labels[k] in classes]
    kept = kept[:max(1, limit // 6)] if limit else kept
    truth = [classes.index(labels[k]) if classes else labels[k] for k in kept]
    m = len(kept)
    batch, grads = os.path.join(d, "images_batch.safetensors"), os.path.join(d, "images_grads.safetensors")
    if view == "pixels":
        write_safetensors(batch, {"input_ids": ("I64", [m, 12], [pixels[12 * k + i] for k in kept for i in range(12)])})
    else:
        write_safetensors(batch, {"inputs": ("F32", [m, 4, 3], [pixels[12 * k + i] / 255.0 for k in kept
                                                                  for i in range(12)]),
                                  "labels": ("I64", [m], truth)})
    if run(["grads", "--model", base] + with_adapter + ["--batch", batch, "--out", grads], "grads " + what) != 0:
        return
    shape, logits = read_safetensors_f32(grads, "logits")
    C, predicted, tie, loss = shape[-1], [], False, 0.0
    step = C * (shape[1] if len(shape) == 3 else 1)
    for r in range(m):
        z = logits[r * step + step - C:(r + 1) * step]  # the last frame's / pixel's
        top = sorted(z)
        tie = tie or top[-1] - top[-2] < 1e-4
        predicted.append(z.index(top[-1]) - (256 if view == "pixels" else 0))
        if view == "pixels":
            loss += (top[-1] + math.log(sum(math.exp(v - top[-1]) for v in z)) - z[256 + truth[r]]) / m
    expected = {"loss": loss if view == "pixels" else read_safetensors_f32(grads, "loss")[1][0]}
    if not tie:
        expected.update(sklearn_metrics(predicted, truth))
    for name, value in expected.items():
        if not agrees(got.get(name), value, 1e-5 if name == "loss" else 1e-9):
            run.broken += 1
            print("BROKEN (%s %s, from grads' logits %s): %s" % (name, got.get(name), value, what), flush=True)


def fuzz_merges(run, rng, d, n, fixtures):
    """Valid adapters on the Mamba, Longhorn and S4D bases, trained 2 steps at lr 0.01: the saved adapter must evaluate
    (with the run's own run_config.json) to the run's last evaluation; a merge the program accepts must evaluate to
    the adapter's loss (with a second LoRA adapter too, `A+B`), and so must a LoRA adapter's convert and its combine
    with itself alone; an adapter list evaluated in turn must give each one's loss alone; greedy `generate` (the
    recurrent step mode) must pick the tokens the parallel logits of `grads` prefer; eval on a token file must give
    what grads gives on its validation windows (check_eval_windows), and on IDX images (check_eval_images); what they refuse must say why."""
    bases, adapters = dict(fixtures[1], s4d=s4d_fixture(run, d)), fixtures[2]
    small = "train.batch_size=2,train.eval_batches=1"
    for _ in range(n):
        kind = rng.choice(["mamba", "longhorn", "s4d"])
        cfg, base = os.path.join(d, kind + ".json"), bases[kind] + "/model"
        peft = valid_peft(rng, kind)
        out = os.path.join(d, "o_merge")
        shutil.rmtree(out, ignore_errors=True)
        show = "%s finetune --peft %s" % (kind, json.dumps(peft))
        if run(["finetune", "--model", base, "--config", cfg, "--peft", json.dumps(peft), "--steps", "2", "--lr",
                "0.01", "--set", small, "--out", out, "--quiet"], show) != 0:
            continue
        # the run's own config evaluates the saved adapter to the run's last evaluation (save → load, same batches)
        logged = None
        with open(os.path.join(out, "metrics.jsonl")) as f:
            for line in f:
                entry = json.loads(line)
                logged = entry["loss"] if entry.get("split") == "val" else logged
        if run(["eval", "--config", out + "/run_config.json", "--adapter", out + "/adapter"],
               "eval again " + show) == 0:
            again = eval_loss(run.stdout)
            if not agrees(again, logged, 1e-6):
                run.broken += 1
                print("BROKEN (eval of the saved adapter %s, the run's last evaluation %s): %s" % (again, logged, show),
                      flush=True)
        adapter = out + "/adapter"
        if kind == "mamba" and peft["peft_type"] == "LORA" and rng.random() < 0.3:
            adapter += "+" + adapters["lora2"]
        if run(["eval", "--model", base, "--adapter", adapter, "--config", cfg, "--set", small], "eval " + show) != 0:
            continue
        unmerged = eval_loss(run.stdout)

        def same_model(what, command, model, with_adapter):
            """`command` accepted must give a model (base + adapter) that evaluates to the unmerged loss."""
            if run(command, what + " " + show) != 0:
                return
            loss = None
            if run(["eval", "--model", model] + (["--adapter", with_adapter] if with_adapter else []) +
                   ["--config", cfg, "--set", small], "eval " + what + " " + show) == 0:
                loss = eval_loss(run.stdout)
            if not agrees(loss, unmerged, 1e-4):
                run.broken += 1
                print("BROKEN (%s loss %s, with the adapter %s): %s (adapter %s)" % (what, loss, unmerged, show,
                                                                                     adapter), flush=True)

        if kind == "mamba" and rng.random() < 0.5:
            # eval of a list switches the adapters of one set in turn: each must give what it gives alone (nothing
            # left behind by the one before: a rewritten base, saved modules, DoRA norms, trainable tokens)
            names = rng.sample(["lora", "lora2", "pissa", "offset"], rng.randint(1, 3))
            order = [adapters[k] for k in names] + [adapter]
            rng.shuffle(order)
            if run(["eval", "--model", base, "--adapter", ",".join(order), "--config", cfg, "--set", small],
                   "eval in turn " + show) == 0:
                for line in run.stdout.splitlines():
                    entry = json.loads(line) if line.startswith("{") else {}
                    if "adapter" not in entry:
                        continue
                    alone = unmerged if entry["adapter"] == adapter else None
                    if alone is None and run(["eval", "--model", base, "--adapter", entry["adapter"], "--config", cfg,
                                              "--set", small], "eval alone " + entry["adapter"]) == 0:
                        alone = eval_loss(run.stdout)
                    if not agrees(entry["loss"], alone, 1e-6):
                        run.broken += 1
                        print("BROKEN (eval in turn %s gives %s for %s, alone %s): %s" % (
                            ",".join(order), entry["loss"], entry["adapter"], alone, show), flush=True)
        if kind != "s4d" and rng.random() < 0.5:
            # generate runs the recurrent step mode, grads the parallel scan: the parallel logits of the generated
            # sequence (teacher-forced) must pick each greedy token (its logit the largest, to 1e-4)
            prompt = [rng.randrange(1, 10) for _ in range(rng.randint(1, 4))]
            if run(["generate", "--model", base, "--adapter", adapter, "--ids", ",".join(map(str, prompt)),
                    "--max-new-tokens", "5"], "generate " + show) == 0:
                seq = [int(t) for t in run.stdout.strip().splitlines()[-1].split(",")]
                batch, grads = os.path.join(d, "gen_batch.safetensors"), os.path.join(d, "gen_grads.safetensors")
                write_safetensors(batch, {"input_ids": ("I64", [1, len(seq) - 1], seq[:-1])})
                if run(["grads", "--model", base, "--adapter", adapter, "--batch", batch, "--out", grads],
                       "grads " + show) == 0:
                    shape, logits = read_safetensors_f32(grads, "logits")
                    V = shape[-1]
                    for i in range(len(prompt) - 1, len(seq) - 1):
                        row = logits[i * V:(i + 1) * V]
                        if row[seq[i + 1]] < max(row) - 1e-4:
                            run.broken += 1
                            print("BROKEN (generate gave %s; at position %d the parallel logits prefer %d, %g over "
                                  "%g): %s" % (seq, i + 1, row.index(max(row)), max(row), row[seq[i + 1]], show),
                                  flush=True)
                            break
        if kind != "s4d" and rng.random() < 0.4:
            check_eval_windows(run, rng, d, kind, base, adapter, show)
        if kind == "s4d" and rng.random() < 0.4:
            check_eval_images(run, rng, d, "s4d", base, adapter, show)
        if rng.random() < 0.1:  # the frame and pixel-token classifiers, alone or with a random adapter
            view = rng.choice(["frames", "pixels"])
            model, on_top, what = image_models(run, d)[view], None, "(the base alone)"
            if rng.random() < 0.6:
                peft = valid_peft(rng, "longhorn" if view == "frames" else "mamba")
                what = "finetune --peft " + json.dumps(peft)
                shutil.rmtree(os.path.join(d, "o_images"), ignore_errors=True)
                if run(["finetune", "--model", model, "--config", os.path.join(d, "s4d.json"), "--peft", json.dumps(peft),
                        "--steps", "2", "--lr", "0.01", "--set", small + ",data.order=" + ("row" if view == "frames"
                        else "pixel"), "--out", os.path.join(d, "o_images"), "--quiet"], view + " " + what) != 0:
                    continue
                on_top = os.path.join(d, "o_images", "adapter")
            check_eval_images(run, rng, d, view, model, on_top, what)
        same_model("merge", ["merge", "--model", base, "--adapter", adapter, "--out", out + "/merged"],
                   out + "/merged", None)
        if "+" not in adapter and peft["peft_type"] == "LORA":
            # convert (PiSSA / OLoRA as plain LoRA on the original base) and combine of the one adapter at weight 1
            # ("cat" is exact) are the same model too, where they accept the adapter
            same_model("convert", ["convert", "--model", base, "--adapter", adapter, "--out", out + "/converted"],
                       base, out + "/converted")
            same_model("combine", ["combine", "--model", base, "--adapter", adapter, "--weights", "1",
                                   "--combination", "cat", "--out", out + "/combined"], base, out + "/combined")


def run_records(out):
    """metrics.jsonl without its timings (elapsed, throughput): what a resumed run must reproduce; a torn last line
    (a kill mid-write) is left out."""
    records = []
    try:
        with open(os.path.join(out, "metrics.jsonl")) as f:
            for line in f:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                timings = ("elapsed", "tokens_per_s", "samples_per_s")
                records.append({k: v for k, v in entry.items() if k not in timings})
    except FileNotFoundError:
        pass
    return records


def fuzz_resumes(run, rng, d, n, fixtures):
    """Random valid runs (train from scratch, or finetune with a random valid adapter) with random schedules,
    accumulation, clipping, weight decay, evaluation, early stopping and best-checkpoint settings, killed with
    SIGKILL at random moments and continued with --resume: the log (timings aside) and the final weights or adapter
    must be those of the same run never killed (the README's bit-identical resume)."""
    bases = dict(fixtures[1], s4d=s4d_fixture(run, d))
    for _ in range(n):
        kind = rng.choice(["mamba", "longhorn", "s4d"])
        cfg = os.path.join(d, kind + ".json")
        save_every = rng.choice([3, 5, 7])
        steps = rng.randint(4, 10) * save_every
        train = {"steps": steps, "save_every": save_every, "log_every": 1, "batch_size": 2, "eval_batches": 1,
                 "lr": rng.choice([0.003, 0.01]), "schedule": rng.choice(["constant", "warmup", "linear", "cosine"]),
                 "warmup_steps": rng.choice([0, 3, 10]), "eval_every": rng.choice([0, 4, 9]),
                 "gradient_accumulation_steps": rng.choice([1, 1, 2]), "grad_clip": rng.choice([0, 1.0]),
                 "weight_decay": rng.choice([0, 0.1]), "seed": rng.randint(0, 99)}
        if train["schedule"] == "constant":
            train["warmup_steps"] = 0
        if train["eval_every"] and rng.random() < 0.4:
            train.update(early_stopping_patience=rng.choice([1, 2]), early_stopping_threshold=rng.choice([0, 0.01]))
        if train["eval_every"] and rng.random() < 0.3:
            train.update(load_best_at_end=True, best_metric=rng.choice(["loss", "accuracy"]))
        sets = ",".join("train.%s=%s" % (k, json.dumps(v)) for k, v in train.items())
        if rng.random() < 0.3:  # (the S4D config names no model: the fixture's size)
            command, output = ["train", "--config", cfg], "model/model.safetensors"
            if kind == "s4d":
                sets += ",model.d_model=8,model.n_layers=2,model.d_state=8"
        elif kind == "mamba" and rng.random() < 0.2:  # on from a saved adapter
            command = ["finetune", "--model", bases[kind] + "/model", "--config", cfg, "--adapter",
                       fixtures[2][rng.choice(["lora", "pissa", "offset"])]]
            output = "adapter/adapter_model.safetensors"
        else:
            peft = valid_peft(rng, kind)
            if peft["peft_type"] == "LORA" and rng.random() < 0.3:
                peft["lora_dropout"] = 0.1  # its masks are part of what a resume must draw again
            command = ["finetune", "--model", bases[kind] + "/model", "--config", cfg, "--peft", json.dumps(peft)]
            output = "adapter/adapter_model.safetensors"
        show = " ".join(command[:1] + command[4:] if command[0] == "finetune" else command) + " --set " + sets
        ref, killed = os.path.join(d, "resume_ref"), os.path.join(d, "resume_killed")
        for out in (ref, killed):
            shutil.rmtree(out, ignore_errors=True)
        if run(command + ["--set", sets, "--out", ref, "--quiet"], show) != 0:
            continue
        expected = run_records(ref)
        with open(os.path.join(ref, output), "rb") as f:
            expected_bytes = f.read()
        # what the run wrote, evaluated with its own run_config.json, gives its last evaluation (load_best_at_end
        # aside: its output is the best evaluation's)
        last_val = [r["loss"] for r in expected if r.get("split") == "val"]
        if last_val and not train.get("load_best_at_end"):
            target = ["--model", ref + "/model"] if command[0] == "train" else ["--adapter", ref + "/adapter"]
            if run(["eval", "--config", ref + "/run_config.json"] + target, "eval again " + show) == 0:
                again = eval_loss(run.stdout)
                if not agrees(again, last_val[-1], 1e-6):
                    run.broken += 1
                    print("BROKEN (eval of what the run wrote %s, its last evaluation %s): %s" % (again, last_val[-1],
                                                                                               show), flush=True)
        kills, finished = 0, False
        for attempt in range(4):
            args = [run.binary] + command + ["--set", sets, "--out", killed, "--quiet"]
            args += ["--resume"] if attempt else []
            before = len(run_records(killed))
            proc = subprocess.Popen(args, cwd=run.cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                    env=dict(os.environ, OMP_NUM_THREADS="1"))
            if attempt < 3:
                target = max(save_every + 2, before + 1 + rng.randint(0, 2 * save_every))
                deadline = time.time() + 60
                while len(run_records(killed)) < target and proc.poll() is None and time.time() < deadline:
                    time.sleep(0.0005)
                if proc.poll() is None:
                    time.sleep(rng.random() * 0.003)
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    kills += 1
                    continue
            _, err = proc.communicate(timeout=run.timeout)
            run.runs += 1
            if proc.returncode != 0:
                run.broken += 1
                print("BROKEN (resume after %d kill(s) exits %d: %s): %s" % (kills, proc.returncode, err.strip()[-300:],
                                                                            show), flush=True)
            finished = proc.returncode == 0
            break
        if not finished:
            continue
        with open(os.path.join(killed, output), "rb") as f:
            same_bytes = f.read() == expected_bytes
        got = run_records(killed)
        if got != expected or not same_bytes:
            run.broken += 1
            first = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected)))
            print("BROKEN (after %d kill(s) the resumed run differs: %s; first record apart %d: %s vs %s): %s" %
                  (kills, "same weights" if same_bytes else "other weights", first,
                   got[first] if first < len(got) else None, expected[first] if first < len(expected) else None, show),
                  flush=True)
        elif run.verbose:
            print("resumed after %d kill(s), identical: %s" % (kills, show[:300]), flush=True)


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
