#!/usr/bin/env python3
"""Cross-check of ssmtune's training loop (`ssmtune finetune`) against PyTorch's optimizer, clipping and HF's schedules.

The model and adapter maths are checked by torch_reference.py (`ssmtune grads` against float64 PyTorch). This script
checks what a training run adds on top of one gradient: the batches it draws, the loss it logs, gradient clipping,
the learning-rate schedule, AdamW with decoupled weight decay, which tensors train, and the final evaluation. For each
case it

  1. draws a small model with random weights (cases.py) and data whose every training batch is known whatever the
     sampler draws: for a Mamba or Longhorn language model a token file whose training split is exactly one window of
     L + 1 tokens (val_fraction 0.5, the validation split another); for an S4D classifier or a Mamba / Longhorn frame
     model Fashion-MNIST-format IDX files (row order) whose training set is one image, its test set four;
  2. runs `ssmtune finetune` for K steps (log_every 1, one evaluation at the end), and once more with --lr 0 and one
     step, which writes the adapter as initialised (AdamW at lr 0 leaves every tensor as it is; FULL starts from the
     model itself). Two cases train on from a saved adapter (`finetune --adapter`, after a first 3-step run): their
     start must be the saved tensors exactly, and differ from a fresh adapter's;
  3. replays the run in PyTorch float32 from that start: at each step the gradient is `ssmtune grads` at PyTorch's
     current tensors (and, to keep the replay honest, is checked against the float64 reference of torch_reference.py
     at the same tensors, to its float32 tolerance), then torch.nn.utils.clip_grad_norm_ (when grad_clip > 0),
     torch.optim.AdamW (the run's betas and eps) with the run's parameter groups — weight decay 0 for the tensors
     train.no_decay names (by default mamba_ssm's _no_weight_decay A_log and D, and the S4D kernel tensors
     example.py registers), and with train.ssm_lr the S4D kernel tensors at that lr and weight decay 0, as example.py
     registers them — at the rate of torch.optim.lr_scheduler.LambdaLR over HF transformers' schedule lambdas
     (written out below; `cosine` with a minimum ratio is get_cosine_with_min_lr_schedule_with_warmup, `linear` takes
     the same floor). Gradient accumulation needs nothing more: every micro-batch is the same known batch, so the
     mean of their gradients is that batch's gradient — and a sum instead of a mean shows in the logged loss and
     gradient norm;
  4. compares, per step, the logged loss, learning rate and gradient norm with the replay's, and at the end every
     trained tensor of OUT/adapter and the logged validation loss and accuracy (the validation window or the test
     images through `ssmtune grads`' logits).

SDLoRA on Mamba and Longhorn adds its warm-up (mamba-peft: the run's first num_warmup_it + 1 steps, stopped, then the
run again from the same seed): the replay trains the warm-up's tensors — the dense delta on all of A_log (Longhorn:
x_proj's k and q rows) scaled by sdlora_alpha, and the out_proj LoRA from the run's start — for warmup_steps steps
with the run's optimizer, clipping and schedule (gradients from `ssmtune grads` on an SDLORA adapter given every
channel and state, the x_proj deltas held at zero), compares them with OUT/sdlora_warmup.safetensors, checks that the
run's "dimensions" are the top channels and states of those deltas (sd_lora.py's rule: channel score Σ_n ΔA_log²,
then per channel ΔA_log²; ties to the lower index), then replays the run from zero deltas and the same LoRA start.
SDLoRA on S4D replays run_s4.py's warm-up instead (dense deltas on C, log_A_real, A_imag, log_dt and D; plain
torch.optim.AdamW with its defaults at warmup_lr or the run's lr, constant, unclipped) and sdlora_s4d.cpp's selection
written out in numpy (the kernel contribution at lag ⌊seq_len/2⌋ under ZOH or bilinear, |ΔA|; pruning included).

Both sides compute the same float32 gradients and the same update formula, so they agree to float32 rounding (a few
1e-7 of each tensor's largest value; tolerance 1e-5). Not here: the synthetic tasks and pixel-token images (their
batches are seeded draws this script would have to re-implement), PiSSA / OLoRA (their start rewrites the base weights), dropout, and `--resume` (tests/tools check that a resumed run
is bit-identical).

usage: train_reference.py --ssmtune build/tools/ssmtune [--keep DIR] [--only NAME]
Exit 0 when every case agrees, 1 when one does not, 77 when PyTorch (Debian's python3-torch) is absent.
"""
import argparse
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import torch
except ImportError:
    print("skipped: PyTorch and numpy are not installed (apt-get install python3-torch)")
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cases import frame_case, lm_case, s4d_case  # noqa: E402
from torch_reference import F32_FLOOR, F32_TOL, compare, load_safetensors, reference, save_safetensors  # noqa: E402

TOL = 1e-5  # float32 replay against the run: rounding only
PREFIX = "base_model.model."


# ------------------------------------------------------------------------------------- HF transformers' schedules
def hf_lambda(schedule, warmup, total, min_ratio):
    """The multiplier of the step-th optimizer step: get_constant_schedule_with_warmup ("warmup"),
    get_linear_schedule_with_warmup, get_cosine_schedule_with_warmup (num_cycles 0.5) and, with a minimum ratio,
    get_cosine_with_min_lr_schedule_with_warmup (min_lr_rate); "constant" is 1."""
    def f(step):
        if schedule == "constant":
            return 1.0
        if step < warmup:
            return float(step) / float(max(1, warmup))
        if schedule == "warmup":
            return 1.0
        span = float(max(1, total - warmup))
        if schedule == "linear":
            decay = max(0.0, float(total - step) / span)
        else:
            decay = max(0.0, 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * float(step - warmup) / span)))
        return decay if min_ratio == 0 else decay * (1 - min_ratio) + min_ratio
    return f


# ------------------------------------------------------------------------------------------------------- cases
def cases():
    """(name, model type, builder keyword arguments, peft config, train settings); model types "mamba", "longhorn"
    (language models on tokens), "s4d", "mamba frame", "longhorn frame" (classifiers on IDX images)."""
    lora = {"peft_type": "LORA", "r": 2, "lora_alpha": 5,
            "target_modules": ["in_proj", "x_proj", "dt_proj", "out_proj"]}
    return [
        ("mamba FULL, cosine + floor, clipped, decay", "mamba", {}, {"peft_type": "FULL"},
         {"schedule": "cosine", "warmup_steps": 2, "min_lr_ratio": 0.1, "grad_clip": 0.5, "weight_decay": 0.1,
          "lr": 0.01}),
        ("mamba FULL, decay on every tensor", "mamba", {"use_bias": True}, {"peft_type": "FULL"},
         {"schedule": "constant", "warmup_steps": 0, "weight_decay": 0.2, "no_decay": [], "lr": 0.01}),
        ("mamba FULL, no decay on biases and norms", "mamba", {"use_bias": True}, {"peft_type": "FULL"},
         {"schedule": "warmup", "warmup_steps": 2, "weight_decay": 0.2, "no_decay": ["bias", "norm", "norm_f"],
          "lr": 0.01}),
        ("mamba LoRA, linear to 0, no clipping", "mamba", {}, lora,
         {"schedule": "linear", "warmup_steps": 1, "min_lr_ratio": 0.0, "grad_clip": 0.0, "weight_decay": 0.01,
          "lr": 0.02}),
        ("mamba LoRA untied + embedding, cosine to 0", "mamba", {"tied": False},
         dict(lora, target_modules=["embeddings", "in_proj", "lm_head"]),
         {"schedule": "cosine", "warmup_steps": 0, "min_lr_ratio": 0.0, "grad_clip": 1.0, "weight_decay": 0.0,
          "lr": 0.02}),
        ("mamba STATE_OFFSET h, constant", "mamba", {}, {"peft_type": "STATE_OFFSET", "variant": "h"},
         {"schedule": "constant", "warmup_steps": 0, "min_lr_ratio": 0.1, "grad_clip": 0.05, "weight_decay": 0.0,
          "lr": 0.05}),
        ("mamba INITIAL_STATE + conv, warmup", "mamba", {}, {"peft_type": "INITIAL_STATE", "conv_init_state": True},
         {"schedule": "warmup", "warmup_steps": 3, "min_lr_ratio": 0.1, "grad_clip": 1.0, "weight_decay": 0.05,
          "lr": 0.05}),
        ("mamba BITFIT with biases, defaults", "mamba", {"use_bias": True}, {"peft_type": "BITFIT"}, {}),
        ("mamba PARTIAL A_log + D + dt bias, decay", "mamba", {},
         {"peft_type": "PARTIAL", "param_names": ["A_log", "D", "dt_proj.bias"]},
         {"schedule": "cosine", "warmup_steps": 1, "weight_decay": 0.3, "lr": 0.02}),
        ("mamba PREFIX", "mamba", {}, {"peft_type": "PREFIX", "num_virtual_tokens": 3},
         {"schedule": "cosine", "warmup_steps": 2, "min_lr_ratio": 0.1, "grad_clip": 1.0, "weight_decay": 0.0,
          "lr": 0.02}),
        ("longhorn FULL untied, clipped", "longhorn", {"tied": False}, {"peft_type": "FULL"},
         {"schedule": "linear", "warmup_steps": 2, "min_lr_ratio": 0.1, "grad_clip": 0.3, "weight_decay": 0.1,
          "lr": 0.01}),
        ("longhorn PARALLEL_ADAPTER", "longhorn", {}, {"peft_type": "PARALLEL_ADAPTER", "r": 4, "scaling": 2.0},
         {"schedule": "cosine", "warmup_steps": 1, "min_lr_ratio": 0.0, "grad_clip": 1.0, "weight_decay": 0.01,
          "lr": 0.02}),
        ("longhorn PROMPT", "longhorn", {}, {"peft_type": "PROMPT", "num_virtual_tokens": 2},
         {"schedule": "constant", "warmup_steps": 0, "min_lr_ratio": 0.1, "grad_clip": 0.0, "weight_decay": 0.0,
          "lr": 0.05}),
        ("s4d FULL, ssm_lr, decay (example.py's groups)", "s4d", {"prenorm": False, "disc": "zoh"},
         {"peft_type": "FULL"},
         {"schedule": "cosine", "warmup_steps": 1, "weight_decay": 0.05, "ssm_lr": 0.001, "lr": 0.01}),
        ("s4d FULL prenorm bilinear, decay on kernel", "s4d", {"prenorm": True, "disc": "bilinear"},
         {"peft_type": "FULL"},
         {"schedule": "linear", "warmup_steps": 0, "weight_decay": 0.05, "no_decay": [], "lr": 0.01}),
        ("s4d LoRA, finetune's defaults", "s4d", {"prenorm": False, "disc": "zoh"},
         {"peft_type": "LORA", "r": 2, "lora_alpha": 4}, {"lr": 0.01}),
        ("s4d STATE_OFFSET h", "s4d", {"prenorm": True, "disc": "zoh"},
         {"peft_type": "STATE_OFFSET", "variant": "h"}, {"schedule": "constant", "warmup_steps": 0, "lr": 0.05}),
        ("mamba frame FULL, decay", "mamba frame", {}, {"peft_type": "FULL"},
         {"schedule": "cosine", "warmup_steps": 1, "weight_decay": 0.1, "lr": 0.01}),
        ("mamba LoRA, 3 micro-batches, betas 0.9/0.95", "mamba", {}, lora,
         {"schedule": "cosine", "warmup_steps": 1, "gradient_accumulation_steps": 3, "adam_beta2": 0.95,
          "adam_epsilon": 1e-6, "grad_clip": 0.3, "lr": 0.02}),
        ("s4d FULL, 2 micro-batches, beta1 0.8", "s4d", {"prenorm": True, "disc": "zoh"}, {"peft_type": "FULL"},
         {"gradient_accumulation_steps": 2, "adam_beta1": 0.8, "weight_decay": 0.05, "ssm_lr": 0.002, "lr": 0.01}),
        ("longhorn frame LoRA + encoder", "longhorn frame", {},
         dict(lora, target_modules=["encoder", "in_proj", "out_proj"]), {"lr": 0.02}),
        ("mamba SDLoRA: warm-up, alpha 1.5, decay", "mamba", {},
         {"peft_type": "SDLORA", "r": 2, "lora_alpha": 4, "channel_ratio": 0.25, "state_ratio": 0.5,
          "warmup_steps": 5, "sdlora_alpha": 1.5},
         {"schedule": "cosine", "warmup_steps": 2, "min_lr_ratio": 0.1, "grad_clip": 0.05, "weight_decay": 0.1,
          "lr": 0.02}),
        ("mamba SDLoRA: warmup_lr, linear", "mamba", {},
         {"peft_type": "SDLORA", "r": 2, "lora_alpha": 2, "channel_ratio": 0.2, "state_ratio": 0.75,
          "warmup_steps": 4, "warmup_lr": 0.05},
         {"schedule": "linear", "warmup_steps": 1, "grad_clip": 1.0, "lr": 0.01}),
        ("s4d SDLoRA zoh: run_s4.py's warm-up, pruning", "s4d", {"prenorm": False, "disc": "zoh"},
         {"peft_type": "SDLORA", "r": 2, "lora_alpha": 2, "channel_ratio": 0.34, "state_ratio": 0.5,
          "select_channel_ratio": 0.67, "select_state_ratio": 0.75, "seq_len": 12, "warmup_steps": 4,
          "warmup_lr": 0.02}, {"schedule": "cosine", "warmup_steps": 1, "weight_decay": 0.05, "lr": 0.01}),
        ("s4d SDLoRA bilinear prenorm", "s4d", {"prenorm": True, "disc": "bilinear"},
         {"peft_type": "SDLORA", "r": 2, "lora_alpha": 4, "channel_ratio": 0.5, "state_ratio": 0.5,
          "select_state_ratio": 0.75, "seq_len": 9, "warmup_steps": 3, "sdlora_alpha": 2.0},
         {"schedule": "linear", "warmup_steps": 0, "grad_clip": 0.5, "lr": 0.02}),
        ("longhorn SDLoRA: warm-up, 2 micro-batches", "longhorn", {},
         {"peft_type": "SDLORA", "r": 2, "lora_alpha": 4, "channel_ratio": 0.3, "warmup_steps": 3,
          "sdlora_alpha": 0.5},
         {"schedule": "constant", "warmup_steps": 0, "grad_clip": 0.2, "weight_decay": 0.05,
          "gradient_accumulation_steps": 2, "adam_beta2": 0.95, "lr": 0.02}),
        # the run trains on from an adapter an earlier run saved (finetune --adapter): a new optimizer and schedule
        ("mamba LoRA on from a saved adapter, cosine", "mamba", {}, dict(lora, from_saved=True),
         {"schedule": "cosine", "warmup_steps": 2, "min_lr_ratio": 0.1, "grad_clip": 0.5, "weight_decay": 0.1,
          "lr": 0.02}),
        ("s4d STATE_OFFSET on from a saved adapter", "s4d", {"prenorm": True, "disc": "zoh"},
         {"peft_type": "STATE_OFFSET", "variant": "h", "from_saved": True},
         {"schedule": "linear", "warmup_steps": 1, "weight_decay": 0.05, "lr": 0.02}),
    ]


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("%s failed: %s" % (" ".join(cmd[:2]), (r.stderr.strip() or r.stdout.strip())[:300]))


def finetune(ssmtune, d, out, peft, steps, lr, batch, seq_len, seed, settings, data, saved=None):
    """`ssmtune finetune` of a new adapter of config `peft`, or (saved: its directory) on from a saved adapter."""
    path, data_sets = data
    shutil.rmtree(out, ignore_errors=True)  # start clean (with --keep, an earlier run would go to OUT/previous)
    sets = data_sets + ["train.log_every=1", "train.eval_every=0"]
    sets += ["train.%s=%s" % (k, json.dumps(v)) for k, v in settings.items() if k != "lr"]
    run([ssmtune, "finetune", "--model", os.path.join(d, "model")] +
        (["--adapter", saved] if saved else ["--peft", json.dumps(peft)]) + ["--data",
         path, "--out", out, "--steps", str(steps), "--lr", repr(lr),
         "--batch-size", str(batch), "--seq-len", str(seq_len), "--seed", str(seed), "--quiet",
         "--set", ",".join(sets)])
    with open(os.path.join(out, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    return ([r for r in records if "split" not in r], [r for r in records if r.get("split") == "val"],
            load_safetensors(os.path.join(out, "adapter", "adapter_model.safetensors")))


def ssmtune_grads(ssmtune, d, cfg_json, params, full, batch_path, tag):
    """Loss, logits and gradients of `ssmtune grads` (float32) at `params` (the model's weights under FULL, else the
    adapter's tensors)."""
    model = os.path.join(d, "model")
    cmd = [ssmtune, "grads", "--batch", batch_path, "--out", os.path.join(d, tag + ".safetensors")]
    if full:
        model = os.path.join(d, "model_now")
        os.makedirs(model, exist_ok=True)
        with open(os.path.join(d, "model", "config.json")) as f, open(os.path.join(model, "config.json"), "w") as g:
            g.write(f.read())
        save_safetensors(os.path.join(model, "model.safetensors"), {n: t.numpy() for n, t in params.items()})
    else:
        adapter = os.path.join(d, "adapter_now")
        os.makedirs(adapter, exist_ok=True)
        with open(os.path.join(adapter, "adapter_config.json"), "w") as f:
            json.dump(cfg_json, f)
        save_safetensors(os.path.join(adapter, "adapter_model.safetensors"),
                         {PREFIX + n: t.numpy() for n, t in params.items()})
        cmd += ["--adapter", adapter]
    run(cmd + ["--model", model])
    return load_safetensors(os.path.join(d, tag + ".safetensors"))


def write_idx(path, array, magic):
    with open(path, "wb") as f:
        f.write(struct.pack(">I", magic) + b"".join(struct.pack(">I", n) for n in array.shape) +
                array.astype(np.uint8).tobytes())


def make_data(d, g, model_type, B):
    """Writes the model's data under d; returns (--seq-len, (--data, extra --set assignments), the training batch as
    `ssmtune grads` reads it, the validation batch)."""
    if model_type in ("mamba", "longhorn"):
        with open(os.path.join(d, "model", "config.json")) as f:
            V = json.load(f)["vocab_size"]
        L = int(g.integers(6, 14))
        tokens = g.integers(0, V, size=2 * (L + 1)).astype(np.int64)
        save_safetensors(os.path.join(d, "tokens.safetensors"), {"input_ids": tokens})
        return (L, (os.path.join(d, "tokens.safetensors"), ["data.val_fraction=0.5"]),
                {"input_ids": np.tile(tokens[:L + 1], (B, 1))}, {"input_ids": tokens[L + 1:][None, :]})
    # Fashion-MNIST's file names and format, row order: an image of R rows and F columns is R frames of F features
    os.makedirs(os.path.join(d, "data"), exist_ok=True)
    R, F, classes = 7, 3, [2, 5, 7]
    images = g.integers(0, 256, size=(5, R, F))
    labels = np.array(classes)[g.integers(0, 3, size=5)]
    for stem, sl in (("train", slice(0, 1)), ("t10k", slice(1, 5))):
        write_idx(os.path.join(d, "data", stem + "-images-idx3-ubyte"), images[sl], 0x803)
        write_idx(os.path.join(d, "data", stem + "-labels-idx1-ubyte"), labels[sl], 0x801)
    x = images.astype(np.float32) / np.float32(255)
    y = np.array([classes.index(c) for c in labels], dtype=np.int64)
    sets = ["data.order=\"row\"", "data.classes=%s" % json.dumps(classes)]
    return (R, (os.path.join(d, "data"), sets), {"inputs": np.repeat(x[:1], B, axis=0), "labels": np.repeat(y[:1], B)},
            {"inputs": x[1:], "labels": y[1:]})


def build_model(g, model_type, kw):
    if model_type in ("mamba", "longhorn"):
        return lm_case(g, model_type, D=8, layers=2, N=4, V=11, **kw)[:2]
    if model_type == "s4d":
        return s4d_case(g, kw["prenorm"], kw["disc"], H=6, N=8, layers=2, d_input=3, d_output=3)[:2]
    return frame_case(g, model_type.split()[0], F_in=3, D=8, layers=2, N=4, V=3, **kw)[:2]


def names_part(name, entry):
    """train.no_decay's rule: `entry` is a run of whole dot-separated parts of `name`."""
    return ("." + entry + ".") in ("." + name + ".")


def optimizer_groups(params, t):
    """torch param groups as the run config asks (train.no_decay, train.ssm_lr), as example.py's setup_optimizer
    builds them: the kernel tensors at their own lr and weight decay 0."""
    kernel = ["kernel.log_dt", "kernel.log_A_real", "kernel.A_imag"]
    groups = {"decay": [], "no_decay": [], "ssm": []}
    for n, p in params.items():
        if t["ssm_lr"] is not None and any(names_part(n, e) for e in kernel):
            groups["ssm"].append(p)
        elif t["weight_decay"] != 0 and any(names_part(n, e) for e in t["no_decay"]):
            groups["no_decay"].append(p)
        else:
            groups["decay"].append(p)
    out = [{"params": groups["decay"], "lr": t["lr"], "weight_decay": t["weight_decay"]},
           {"params": groups["no_decay"], "lr": t["lr"], "weight_decay": 0.0},
           {"params": groups["ssm"], "lr": t["ssm_lr"] or t["lr"], "weight_decay": 0.0}]
    return [grp for grp in out if grp["params"]], [len(groups[k]) for k in ("decay", "no_decay", "ssm")]


def top_k(score, k):
    """Indices of the k largest scores, ties to the lower index, in ascending order (peft::top_k_indices)."""
    return sorted(sorted(range(len(score)), key=lambda i: (-score[i], i))[:k])


def ratio_count(ratio, n):
    return min(n, max(1, int(math.floor(ratio * n + 0.5))))


def sdlora_selection(moved, layers, model_type, E, N, peft):
    """sd_lora.py's selection from the warm-up's deltas: channels by the summed squared change (Longhorn: over
    x_proj's k and q rows), then per channel the states by the squared change of A_log."""
    dims = {}
    for layer in layers:
        pre = "backbone.layers.%d.mixer." % layer
        if model_type == "mamba":
            v = np.asarray(moved[pre + "A_log_delta"], dtype=np.float64).reshape(E, N) ** 2
            channels = top_k(v.sum(axis=1), ratio_count(peft["channel_ratio"], E))
            states = [top_k(v[e], ratio_count(peft["state_ratio"], N)) for e in channels]
            dims[str(layer)] = {"channels": channels, "states": states}
        else:
            v = np.asarray(moved[pre + "x_proj.weight_delta"], dtype=np.float64).reshape(2 * N, E) ** 2
            dims[str(layer)] = {"channels": top_k(v.sum(axis=0), ratio_count(peft["channel_ratio"], E))}
    return dims


def sdlora_s4d_selection(moved, layers, cfg, w, peft):
    """sdlora_s4d.cpp's rule (run_s4.py's select_dims_hard with the complex A both times) on the warmed parameters:
    AC = W·exp(λ·⌊seq_len/2⌋) (ZOH: W = C(e^z − 1)/A, λ = z; bilinear: W = CΔ/(1 − z/2), λ = log((1 + z/2)/(1 − z/2)),
    z = ΔA); usable channels by ‖AC[h,:]‖, update channels among them by ‖A_warm − A_frozen‖, per update channel usable
    states by |AC| and update states among them by |ΔA|."""
    H, M = cfg["d_model"], cfg["d_state"] // 2
    half = peft["seq_len"] // 2
    dims = {}
    for layer in layers:
        k = "s4_layers.%d.kernel." % layer
        now = {p: np.asarray(w[k + p], dtype=np.float64) +
               np.asarray(moved[k + p + "_delta"], dtype=np.float64).reshape(np.shape(w[k + p]))
               for p in ("log_dt", "C", "log_A_real", "A_imag")}
        A_w = -np.exp(now["log_A_real"]) + 1j * now["A_imag"]
        A_f = -np.exp(np.asarray(w[k + "log_A_real"], dtype=np.float64)) + 1j * np.asarray(w[k + "A_imag"])
        C = now["C"][..., 0] + 1j * now["C"][..., 1]
        dt = np.exp(now["log_dt"])[:, None]
        z = dt * A_w
        if cfg["discretization"] == "bilinear":
            W, lam = C * dt / (1 - z / 2), np.log((1 + z / 2) / (1 - z / 2))
        else:
            W, lam = C * (np.exp(z) - 1) / A_w, z
        ac, da = np.abs(W * np.exp(lam * half)), np.abs(A_w - A_f)
        usable = top_k((ac ** 2).sum(axis=1), ratio_count(peft["select_channel_ratio"], H))
        among = lambda score, allowed, k: sorted(sorted(allowed, key=lambda i: (-score[i], i))[:k])
        channels = among((da ** 2).sum(axis=1), usable, ratio_count(peft["channel_ratio"], H))
        usable_states = [top_k(ac[h], ratio_count(peft["select_state_ratio"], M)) for h in channels]
        states = [among(da[h], u, ratio_count(peft["state_ratio"], M)) for h, u in zip(channels, usable_states)]
        dims[str(layer)] = {"usable_channels": usable, "channels": channels, "usable_states": usable_states,
                            "states": states}
    return dims


def replay_sdlora_warmup(ssmtune, d, cfg, w, model_type, run_adapter, start, t, K, train_batch, worst):
    """The SDLoRA warm-up in PyTorch (module docstring); returns its tensors, keyed as OUT/sdlora_warmup.safetensors.
    Mamba / Longhorn: mamba-peft's (the run's first steps); S4D: run_s4.py's (plain AdamW, its defaults)."""
    layers = sorted(int(k) for k in run_adapter["dimensions"])
    tensors = {n: torch.tensor(np.array(v, dtype=np.float32)) for n, v in start.items() if ".lora_" in n}
    zeros = lambda n: torch.zeros(n, dtype=torch.float32)
    if model_type == "s4d":
        H, M = cfg["d_model"], cfg["d_state"] // 2
        every = {str(layer): {"channels": list(range(H)), "states": [list(range(M))] * H} for layer in layers}
        cfg_warm = dict(run_adapter, dimensions=every, sdlora_alpha=1.0)  # run_s4.py trains the parameters themselves
        for layer in layers:
            k = "s4_layers.%d." % layer
            for name, size in (("kernel.C_delta", 2 * H * M), ("kernel.log_A_real_delta", H * M),
                               ("kernel.A_imag_delta", H * M), ("kernel.log_dt_delta", H), ("D_delta", H)):
                tensors[k + name] = zeros(size)
            tensors[k + "output_linear.0.bias_delta"] = zeros(2 * H)  # in the adapter, not in the warm-up
        trained = {n: p for n, p in tensors.items() if n.endswith("_delta") and "output_linear" not in n}
    else:
        E, N = cfg["intermediate_size"], cfg["state_size"]
        mamba = model_type == "mamba"
        every = {str(layer): ({"channels": list(range(E)), "states": [list(range(N))] * E} if mamba
                              else {"channels": list(range(E))}) for layer in layers}
        cfg_warm = dict(run_adapter, dimensions=every)
        for layer in layers:
            pre = "backbone.layers.%d.mixer." % layer
            tensors[pre + "x_proj.weight_delta"] = zeros(2 * N * E)
            if mamba:
                tensors[pre + "A_log_delta"] = zeros(E * N)
        trained = {n: p for n, p in tensors.items()
                   if ".lora_" in n or n.endswith("A_log_delta" if mamba else "x_proj.weight_delta")}
    lr = run_adapter["warmup_lr"] if run_adapter.get("warmup_lr") is not None else t["lr"]
    if model_type == "s4d":
        opt = torch.optim.AdamW(list(trained.values()), lr=lr)
        sched, clip = None, 0.0
    else:
        groups, _ = optimizer_groups(trained, dict(t, lr=lr))
        opt = torch.optim.AdamW(groups, lr=lr, betas=(t["adam_beta1"], t["adam_beta2"]), eps=t["adam_epsilon"])
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, hf_lambda(t["schedule"], min(t["warmup_steps"], K), K, t["min_lr_ratio"]))
        clip = t["grad_clip"]
    for _ in range(run_adapter["warmup_steps"]):
        got = ssmtune_grads(ssmtune, d, cfg_warm, tensors, False, os.path.join(d, "train_batch.safetensors"), "warm")
        here = {n: v.numpy().astype(np.float64) for n, v in tensors.items()}
        want = reference(cfg, w, train_batch, (cfg_warm, here))
        err, _, _ = compare({n: got[n] for n in want if n != "logits"},
                            {n: v for n, v in want.items() if n != "logits"}, F32_FLOOR)
        worst["grad vs float64"] = max(worst["grad vs float64"], err)
        for n, p in trained.items():
            p.grad = torch.tensor(np.array(got[PREFIX + n], dtype=np.float32))
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(list(trained.values()), clip)
        opt.step()
        if sched:
            sched.step()
    return {n: p.detach().numpy() for n, p in trained.items()}, layers


def relative(a, b):
    return abs(float(a) - float(b)) / max(abs(float(b)), 1e-30)


def check_case(ssmtune, d, seed, name, model_type, model_kw, peft, settings):
    g = np.random.default_rng(seed)
    B, K = 3, 6
    cfg, w = build_model(g, model_type, model_kw)
    os.makedirs(os.path.join(d, "model"), exist_ok=True)
    with open(os.path.join(d, "model", "config.json"), "w") as f:
        json.dump(cfg, f)
    save_safetensors(os.path.join(d, "model", "model.safetensors"), {n: v.astype(np.float32) for n, v in w.items()})
    w = {n: v.astype(np.float32).astype(np.float64) for n, v in w.items()}
    L, data, train_batch, val_batch = make_data(d, g, model_type, B)
    save_safetensors(os.path.join(d, "train_batch.safetensors"), train_batch)
    save_safetensors(os.path.join(d, "val_batch.safetensors"), val_batch)

    lr = settings.get("lr", 1e-3)
    saved = None
    if peft.get("from_saved"):  # the run trains on from an adapter an earlier run saved (finetune --adapter)
        peft = {k: v for k, v in peft.items() if k != "from_saved"}
        finetune(ssmtune, d, os.path.join(d, "first"), peft, 3, 0.03, B, L, seed,
                 {"schedule": "constant", "warmup_steps": 0}, data)
        saved = os.path.join(d, "first", "adapter")
    steps, val, trained = finetune(ssmtune, d, os.path.join(d, "run"), peft, K, lr, B, L, seed, settings, data, saved)
    with open(os.path.join(d, "run", "run_config.json")) as f:
        t = json.load(f)["train"]  # the settings the run resolved (defaults included)
    full = peft["peft_type"] == "FULL"
    if full:
        start = {n: v.astype(np.float32) for n, v in w.items()}
        cfg_json = None
    else:
        init_settings = dict(settings, schedule="constant", warmup_steps=0)
        _, _, start = finetune(ssmtune, d, os.path.join(d, "init"), peft, 1, 0.0, B, L, seed, init_settings, data,
                               saved)
        if saved:  # the start is the saved adapter's tensors, not a fresh adapter's
            first = load_safetensors(os.path.join(saved, "adapter_model.safetensors"))
            if sorted(first) != sorted(start) or any(not np.array_equal(first[n], start[n]) for n in first):
                raise RuntimeError("the run at lr 0 from the saved adapter did not write its tensors unchanged")
            fresh = finetune(ssmtune, d, os.path.join(d, "fresh"), peft, 1, 0.0, B, L, seed, init_settings, data)[2]
            if all(np.array_equal(first[n], fresh[n]) for n in first):
                raise RuntimeError("the saved adapter is still its init: the case checks nothing")
        start = {n[len(PREFIX):]: v for n, v in start.items()}
        with open(os.path.join(d, "run", "adapter", "adapter_config.json")) as f:
            cfg_json = json.load(f)
    worst = {"loss": 0.0, "lr": 0.0, "grad_norm": 0.0, "grad vs float64": 0.0, "tensors": 0.0}
    if peft["peft_type"] == "SDLORA":
        replayed, layers = replay_sdlora_warmup(ssmtune, d, cfg, w, model_type, dict(peft, **cfg_json), start, t, K,
                                                train_batch, worst)
        moved = load_safetensors(os.path.join(d, "run", "sdlora_warmup.safetensors"))
        if sorted(moved) != sorted(replayed):
            raise RuntimeError("warm-up tensors differ: %s vs %s" % (sorted(moved)[:3], sorted(replayed)[:3]))
        worst["warm-up"], _, _ = compare(moved, replayed, 1e-30)
        if model_type == "s4d":
            dims = sdlora_s4d_selection(moved, layers, cfg, w, dict(peft, **cfg_json))
        else:
            dims = sdlora_selection(moved, layers, model_type, cfg["intermediate_size"], cfg["state_size"], peft)
        worst["dimensions"] = 0.0 if dims == cfg_json["dimensions"] else 1.0

    params = {n: torch.tensor(np.array(v, dtype=np.float32)) for n, v in start.items()}
    groups, sizes = optimizer_groups(params, t)
    opt = torch.optim.AdamW(groups, lr=t["lr"], betas=(t["adam_beta1"], t["adam_beta2"]), eps=t["adam_epsilon"])
    warmup = min(t["warmup_steps"], K)  # as `finetune` and `train` do for a run shorter than its warm-up
    sched = torch.optim.lr_scheduler.LambdaLR(opt, hf_lambda(t["schedule"], warmup, K, t["min_lr_ratio"]))
    train_path = os.path.join(d, "train_batch.safetensors")
    for k in range(K):
        got = ssmtune_grads(ssmtune, d, cfg_json, params, full, train_path, "grads")
        here = {n: v.numpy().astype(np.float64) for n, v in params.items()}
        want = reference(cfg, dict(w, **here) if full else w, train_batch, None if full else (cfg_json, here))
        err, _, missing = compare({n: v for n, v in got.items() if n != "logits"},
                                  {n: v for n, v in want.items() if n != "logits"}, F32_FLOOR)
        if missing:
            raise RuntimeError("gradient names differ: " + ", ".join(missing[:4]))
        worst["grad vs float64"] = max(worst["grad vs float64"], err)
        for n, p in params.items():
            p.grad = torch.tensor(np.array(got[n if full else PREFIX + n], dtype=np.float32))
        if t["grad_clip"] > 0:
            norm = float(torch.nn.utils.clip_grad_norm_(list(params.values()), t["grad_clip"]))
        else:
            norm = float(torch.norm(torch.stack([torch.norm(p.grad, 2) for p in params.values()]), 2))
        lr_now = t["lr"] * sched.get_last_lr()[0] / opt.param_groups[0]["initial_lr"]  # the run's lr this step
        opt.step()
        sched.step()
        worst["loss"] = max(worst["loss"], relative(steps[k]["loss"], got["loss"]))
        worst["lr"] = max(worst["lr"], abs(steps[k]["lr"] - lr_now) / t["lr"])
        worst["grad_norm"] = max(worst["grad_norm"], relative(steps[k]["grad_norm"], norm))

    final = {n: trained[PREFIX + n] for n in params}
    err, _, _ = compare(final, {n: p.numpy() for n, p in params.items()}, 1e-30)
    worst["tensors"] = err
    v = ssmtune_grads(ssmtune, d, cfg_json, params, full, os.path.join(d, "val_batch.safetensors"), "val")
    if "labels" in val_batch:  # the classifiers: logits [n, C] (S4D) or [n, L, C] read at the last frame
        logits = v["logits"] if v["logits"].ndim == 2 else v["logits"][:, -1]
        accuracy = float(np.mean(np.argmax(logits, axis=-1) == val_batch["labels"]))
    else:  # next-token prediction over the validation window
        accuracy = float(np.mean(np.argmax(v["logits"][0, :-1], axis=-1) == val_batch["input_ids"][0, 1:]))
    worst["val loss"] = relative(val[-1]["loss"], v["loss"])
    worst["val accuracy"] = abs(val[-1]["accuracy"] - accuracy)
    ok = all(e <= TOL for k, e in worst.items() if k != "grad vs float64") and worst["grad vs float64"] <= F32_TOL
    return ok, worst, "%d/%d/%d" % tuple(sizes)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ssmtune", required=True)
    ap.add_argument("--keep", help="write the cases' files under this directory and keep them")
    ap.add_argument("--only", help="run the cases whose name contains this text")
    a = ap.parse_args()
    if not (os.path.isfile(a.ssmtune) and os.access(a.ssmtune, os.X_OK)):
        print("error: --ssmtune %s is not an executable; fix: build first (bash tools/setup/build.sh) and pass "
              "build/tools/ssmtune" % a.ssmtune)
        return 1
    torch.set_num_threads(1)
    root = a.keep or tempfile.mkdtemp(prefix="ssmtune_train_crosscheck_")
    failures = 0
    print("%-46s %9s %9s %9s %9s %9s %9s %9s %9s" % ("case", "groups", "loss", "lr", "gnorm", "grad/f64", "final",
                                                       "val", "warm-up"))
    for index, (name, model_type, model_kw, peft, settings) in enumerate(cases()):
        if a.only and a.only not in name:
            continue
        d = os.path.join(root, "case%02d" % index)
        os.makedirs(d, exist_ok=True)
        try:
            ok, worst, n = check_case(a.ssmtune, d, 500 + index, name, model_type, model_kw, peft, settings)
        except RuntimeError as e:
            print("%-46s error: %s   FAIL" % (name, e))
            failures += 1
            continue
        warm = "-" if "warm-up" not in worst else (
            "%.1e" % worst["warm-up"] if worst["dimensions"] == 0 else "dims!")  # dims!: another selection
        print("%-46s %9s %9.1e %9.1e %9.1e %9.1e %9.1e %9.1e %9s%s" % (
            name, n, worst["loss"], worst["lr"], worst["grad_norm"], worst["grad vs float64"], worst["tensors"],
            max(worst["val loss"], worst["val accuracy"]), warm, "" if ok else "   FAIL"))
        failures += not ok
    print("%d case(s) disagree" % failures if failures else "every case agrees")
    if not a.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
