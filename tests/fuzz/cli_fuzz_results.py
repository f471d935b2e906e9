"""The CLI fuzzer's two modes that judge results, not only the contract (cli_fuzz.py --mode merges|resumes): random
*valid* adapters whose merge, convert, combine, saved form, in-turn evaluation, generation and evaluation on data must
agree with the unmerged adapter and with `grads`; and random valid runs killed with SIGKILL and resumed, which must
end as the run never killed."""
import json
import math
import os
import re
import shutil
import signal
import subprocess
import time

from cli_fuzz_common import agrees, eval_loss, read_safetensors_floats, s4d_fixture, safetensors_shapes
from cli_fuzz_evals import check_eval_images, check_eval_windows, check_generate, image_models


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


def fuzz_merges(run, rng, d, n, fixtures):
    """Valid adapters on the Mamba, Longhorn and S4D bases, trained 2 steps at a constant lr 0.05: the saved adapter
    must evaluate (with the run's own run_config.json) to the run's last evaluation; inspect must count what the
    adapter file stores; a merge the program accepts must give the adapter's loss and float64 logits (with a second
    LoRA adapter too, `A+B`), and so must a LoRA adapter's convert, its combine with itself alone and its cat combine
    with a second LoRA; an adapter list evaluated in turn must give each one's loss alone; `generate` must pick tokens
    the parallel logits of `grads` allow (check_generate); eval on a token file or IDX images must give what grads
    gives on the same examples (check_eval_windows, check_eval_images); what they refuse must say why."""
    bases, adapters = dict(fixtures[1], s4d=s4d_fixture(run, d)), fixtures[2]
    small = "train.batch_size=2,train.eval_batches=1"
    # a constant lr from the first step: the default warm-up would leave a LoRA's B (zero at init) almost unchanged
    # after 2 steps, and an adapter that changes the loss by less than the checks' tolerance proves nothing
    moving = small + ",train.schedule=constant,train.warmup_steps=0"
    for _ in range(n):
        kind = rng.choice(["mamba", "longhorn", "s4d"])
        cfg, base = os.path.join(d, kind + ".json"), bases[kind] + "/model"
        peft = valid_peft(rng, kind)
        out = os.path.join(d, "o_merge")
        shutil.rmtree(out, ignore_errors=True)
        show = "%s finetune --peft %s" % (kind, json.dumps(peft))
        if run(["finetune", "--model", base, "--config", cfg, "--peft", json.dumps(peft), "--steps", "2", "--lr",
                "0.05", "--set", moving, "--out", out, "--quiet"], show) != 0:
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
        # `inspect`'s trainable-parameter line counts what the adapter file stores (HF: get_peft_model_state_dict
        # holds exactly the trainable tensors)
        if run(["inspect", "--model", base, "--adapter", adapter], "inspect " + show) == 0:
            counted = re.search(r"trainable params: ([0-9,]+)", run.stdout)
            counted = int(counted.group(1).replace(",", "")) if counted else None
            stored = sum(math.prod(shape) for shape in safetensors_shapes(adapter + "/adapter_model.safetensors").values())
            if counted != stored:
                run.broken += 1
                print("BROKEN (inspect counts %s trainable parameters, the adapter file stores %d): %s" % (
                    counted, stored, show), flush=True)
        if kind == "mamba" and peft["peft_type"] == "LORA" and rng.random() < 0.3:
            adapter += "+" + adapters["lora2"]
        if run(["eval", "--model", base, "--adapter", adapter, "--config", cfg, "--set", small], "eval " + show) != 0:
            continue
        unmerged = eval_loss(run.stdout)

        def logits_of(what, model, with_adapter):
            """The float64 logits `grads` gives on a fixture batch: far more sensitive than a mean loss to an adapter
            that moved little (a Δ projection's, say), and free of float32 rounding but for the weights'."""
            probe, logits = fixtures[3]["frames" if kind == "s4d" else "ids"], os.path.join(d, "probe.safetensors")
            if run(["grads", "--model", model] + (["--adapter", with_adapter] if with_adapter else []) +
                   ["--batch", probe, "--out", logits, "--dtype", "f64"], "grads " + what + " " + show) != 0:
                return None
            return read_safetensors_floats(logits, "logits")[1]

        unmerged_logits = logits_of("unmerged", base, adapter)

        def same_model(what, command, model, with_adapter, reference=None, reference_logits=None):
            """`command` accepted must give a model (base + adapter) that evaluates to the unmerged loss (or to
            `reference`) and gives its logits on the probe batch (or `reference_logits`) to 3e-6 of the largest: a
            DoRA merge at lora_alpha 16, r 1 rounds them by 4e-7 through its float32 weights, and 1 adapter in 166
            moved them by less than 3e-6 after its 2 steps (seed 67)."""
            reference = unmerged if reference is None else reference
            reference_logits = unmerged_logits if reference_logits is None else reference_logits
            if run(command, what + " " + show) != 0:
                return
            loss = None
            if run(["eval", "--model", model] + (["--adapter", with_adapter] if with_adapter else []) +
                   ["--config", cfg, "--set", small], "eval " + what + " " + show) == 0:
                loss = eval_loss(run.stdout)
            logits = logits_of(what, model, with_adapter)
            apart = max((abs(a - b) for a, b in zip(logits, reference_logits)), default=0) if logits and \
                reference_logits and len(logits) == len(reference_logits) else None
            scale = max([1.0] + [abs(v) for v in reference_logits or []])
            if not agrees(loss, reference, 1e-4) or apart is None or apart > 3e-6 * scale:
                run.broken += 1
                print("BROKEN (%s loss %s, with the adapter %s; logits apart by %s): %s (adapter %s)" % (
                    what, loss, reference, apart, show, adapter), flush=True)

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
            check_generate(run, rng, d, base, adapter, show)
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
                        "--steps", "2", "--lr", "0.01", "--set", moving + ",data.order=" + ("row" if view == "frames"
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
        if kind == "mamba" and peft["peft_type"] == "LORA" and "+" not in adapter:
            # "cat" of two adapters at weights 1, 1 is their sum: the model with both active (A+B)
            if run(["eval", "--model", base, "--adapter", adapter + "+" + adapters["lora2"], "--config", cfg, "--set",
                    small], "eval A+B " + show) == 0:
                same_model("combine A,B", ["combine", "--model", base, "--adapter", adapter + "," + adapters["lora2"],
                                           "--weights", "1,1", "--combination", "cat", "--out", out + "/combined2"],
                           base, out + "/combined2", eval_loss(run.stdout),
                           logits_of("A+B", base, adapter + "+" + adapters["lora2"]))


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
    must be those of the same run never killed (the README's bit-identical resume), also when the killed run
    checkpoints activations (train.gradient_checkpointing) and the reference does not."""
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
        # the killed run may also checkpoint activations: a run with train.gradient_checkpointing is bit-identical
        checkpointing = ",train.gradient_checkpointing=true" if rng.random() < 0.4 else ""
        kills, finished = 0, False
        for attempt in range(4):
            args = [run.binary] + command + ["--set", sets + checkpointing, "--out", killed, "--quiet"]
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
            print("BROKEN (after %d kill(s) the resumed run differs: %s; first record apart %d: %s vs %s): %s%s" %
                  (kills, "same weights" if same_bytes else "other weights", first,
                   got[first] if first < len(got) else None, expected[first] if first < len(expected) else None, show,
                   checkpointing), flush=True)
        elif run.verbose:
            print("resumed after %d kill(s), identical: %s" % (kills, show[:300]), flush=True)
