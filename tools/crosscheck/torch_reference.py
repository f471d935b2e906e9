#!/usr/bin/env python3
"""Cross-check of ssmtune's models and adapters against an independent PyTorch reference (float64 autograd).

For each case of cases.py this script draws a small model with random weights (not at their init values: D != 1,
dt biases spread, A_log perturbed, LoRA B non-zero, offsets non-zero), writes it as a model directory (config.json +
model.safetensors), a batch file and, for PEFT cases, an adapter directory (adapter_config.json +
adapter_model.safetensors) — every other case writes pytorch_model.bin and adapter_model.bin with torch.save instead,
so the PyTorch checkpoint reader is checked on the same cases —, runs `ssmtune grads` on them at float64 and float32, and compares the loss, the logits
and every gradient with the same computation written in plain PyTorch (reference_models.py):

  - Mamba-1 as mamba_ssm's Mamba module with selective_scan_ref (softplus(dt + bias), A = -exp(A_log),
    a = exp(dt A), b = dt B u, y = C.h + D u, gated by SiLU(z)), HF MambaForCausalLM's wrapper (pre-norm RMSNorm
    blocks, norm_f, tied or untied head) and HF's shifted next-token loss;
  - Longhorn as selective_scan_online7_ref (beta = sigmoid(dt + bias), eps = beta / (1 + beta |k|^2),
    h = (1 - eps k^2) h + eps k x, y = q.h + D x) in the same block;
  - the S4D classifier as state-spaces/s4 example.py (encoder, S4D layers with the FFT convolution, GELU,
    Conv1d + GLU, residual, LayerNorm pre or post, mean over L, decoder), ZOH and bilinear;
  - the Mamba / Longhorn frame models (backbone.encoder, untied head, classified at the last frame);
  - PEFT: LoRA (HF layer semantics and target matching, Linear, Embedding and 1x1 Conv1d, rsLoRA), BitFit,
    PiSSA / OLoRA inits (the base weight becomes W - s B0 A0 on load, as HF's), state-offset h and y, initial
    state, prompt, prefix, parallel adapter, trainable tokens (HF's index_copy, the tied head reading the rows),
    SURM (circulant, Toeplitz, Kronecker,
    LDR; lora and adapter modes) and SDLoRA (Mamba, Longhorn, S4D with pruning) as peft/*.cpp document them.

Errors are relative to the largest reference magnitude of each tensor. Float64 must agree to 1e-9; float32 to
2e-3 of the float64 reference (mamba_ssm's fp32 test tolerance is rtol 6e-4, atol 2e-3), with magnitudes below
1e-5 counted as 1e-5 (an absolute floor, for gradients that float32 itself rounds to zero); at float64 magnitudes
below 1e-3 count as 1e-3 (absolute errors below 1e-12 pass), for gradients that are zero in exact arithmetic but carry
rounding noise. A case whose float32 check fails is run once more with the reference itself in float32: when
PyTorch's own float32 is off by more than a quarter of the tolerance as well, the case is ill-conditioned (a
large-scale LoRA over a long sequence can amplify one rounding 10^4-fold) and passes if ours is within
ILL_CONDITIONED_FACTOR of PyTorch's float32 error; such cases are counted and named at the end. Mamba and Longhorn cases only: S4D's plain float32 Vandermonde
reference overflows (errors up to 1e39 on the fixed cases), so it is no yardstick. The float64 check is never relaxed.

With --random N the script draws N cases instead (random_cases.random_case: random sizes across the scan's checkpoint
and lane boundaries, random options, a random adapter of any kind the model takes), reproducible from --seed.

usage: torch_reference.py --ssmtune build/tools/ssmtune [--keep DIR] [--only NAME] [--random N [--seed S] [--large]]
Exit 0 when every case agrees, 1 when one does not, 77 when PyTorch (Debian's python3-torch) is absent.
"""
import argparse
import collections
import json
import os
import struct
import subprocess
import sys
import tempfile

F64_TOL = 1e-9
F32_TOL = 2e-3
F64_FLOOR = 1e-3  # an absolute floor (errors below 1e-12 pass): a gradient that is zero in exact arithmetic (an
#                   S4D LayerNorm over H = 1 feature passes none back) carries rounding noise, amplified by the
#                   norm's 1/sqrt(eps), of up to ~1e-13 in either implementation
F32_FLOOR = 1e-5  # an absolute floor: float32 rounds sigmoid(20) to 1, so beta(1 - beta) = 0 (as PyTorch's own f32)
ILL_CONDITIONED_FACTOR = 10  # ours / PyTorch float32's error, where PyTorch's float32 misses ILL_CONDITIONED_FROM
# PyTorch's own float32 error above which a case counts as ill-conditioned: a quarter of F32_TOL, about 8,000 float32
# roundings. In such a case one rounding more or less moves the result several-fold: the same build with and without
# FMA (SSMTUNE_CPU_ISA=avx2 / baseline), or on aarch64, lands 0.9e-3, 6.8e-3 and 2.5e-3 off on the random case of
# seed 18 where PyTorch's float32 is 1.2e-3 off, their float64 agreeing to 1.4e-11.
ILL_CONDITIONED_FROM = F32_TOL / 4

try:
    import numpy as np
    import torch
except ImportError:
    print("skipped: PyTorch and numpy are not installed (apt-get install python3-torch)")
    sys.exit(77)

torch.set_default_dtype(torch.float64)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cases import cases  # noqa: E402  (after the PyTorch check, which decides exit 77)
from random_cases import random_case, random_large_case  # noqa: E402
from reference_models import hf_param_lora, hf_trainable_tokens, hf_weight_init_residual, lm_forward, s4d_forward, sdlora_weights, split_adapter  # noqa: E402


# ---------------------------------------------------------------------------------------------------- safetensors
_ST_DTYPES = {"F64": np.float64, "F32": np.float32, "I64": np.int64, "I32": np.int32}


def save_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        code = {np.dtype(v): k for k, v in _ST_DTYPES.items()}[a.dtype]
        raw = a.tobytes()
        header[name] = {"dtype": code, "shape": list(a.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head + b"".join(blobs))


def load_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        out[name] = np.frombuffer(data[8 + n + b:8 + n + e], dtype=_ST_DTYPES[info["dtype"]]).reshape(info["shape"])
    return out


def save_torch(path, tensors):
    """torch.save of float32 tensors (a state_dict, as pytorch_model.bin / adapter_model.bin hold one). Matrices are
    saved as the transpose of a contiguous copy, a view whose strides the reader has to follow, as a model holding
    transposed weights would save them."""
    sd = collections.OrderedDict()
    for n, v in tensors.items():
        t = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))
        sd[n] = t.t().contiguous().t() if t.dim() == 2 else t
    torch.save(sd, path)


def write_adapter_dir(path, cfg_json, tensors, torch_save=False):
    """Writes an HF adapter directory (adapter_config.json, adapter_model.safetensors — or, torch_save, the legacy
    adapter_model.bin — in float32 under the base_model.model. prefix) and returns (cfg_json, the tensors as the
    program reads them: float32 values as float64)."""
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "adapter_config.json"), "w") as f:
        json.dump(cfg_json, f)
    file_tensors = {"base_model.model." + n: v.astype(np.float32) for n, v in tensors.items()}
    if torch_save:
        save_torch(os.path.join(path, "adapter_model.bin"), file_tensors)
    else:
        save_safetensors(os.path.join(path, "adapter_model.safetensors"), file_tensors)
    return cfg_json, {n: v.astype(np.float32).astype(np.float64) for n, v in tensors.items()}


def reference(cfg, w, batch, adapter, dtype=torch.float64):
    """Loss, logits and gradients (of the base, or of the adapter's tensors) in float64 autograd (or `dtype`: float32
    measures how well-conditioned a case is). `adapter` is None, one (config, tensors) pair, or a list of LoRA pairs
    active together (HF's set_adapter([...]): each module adds their terms in the list's order; gradients named
    "1/...", "2/..." by position)."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # what the reference models create (zeros, ranges) follows
    try:
        return _reference(cfg, w, batch, adapter, dtype)
    finally:
        torch.set_default_dtype(before)


def _reference(cfg, w, batch, adapter, dtype):
    p = {n: torch.tensor(v, dtype=dtype) for n, v in w.items()}
    trainables = [("", p)]
    hooks, lora, adapters = {}, {}, {}
    if adapter is not None:
        group = adapter if isinstance(adapter, list) else [adapter]
        trainables = []
        for k, (cfg_json, tensors) in enumerate(group):
            t = {n: torch.tensor(v, dtype=dtype, requires_grad=True) for n, v in tensors.items()}
            trainables.append(("%d/" % (k + 1) if isinstance(adapter, list) else "", t))
            if cfg_json["peft_type"] in ("BITFIT", "PARTIAL"):  # base tensors trained in place
                p.update(t)
            elif cfg_json["peft_type"] == "TRAINABLE_TOKENS":
                hf_trainable_tokens(p, cfg_json, t)
            else:
                if cfg_json["peft_type"] == "LORA":  # PiSSA / OLoRA rewrite the base weights first (HF's order)
                    hf_weight_init_residual(p, cfg_json, t)
                consumed = hf_param_lora(p, cfg_json, t) if cfg_json["peft_type"] == "LORA" else set()
                h, lo, ad = split_adapter(cfg_json, {n: v for n, v in t.items() if n not in consumed}, cfg, p)
                hooks.update(h)
                adapters.update(ad)
                for module, entry in lo.items():
                    lora.setdefault(module, []).append(entry)
            if cfg_json["peft_type"] == "LORA":  # modules_to_save and "bias": the file holds trained base tensors (a
                # LoRA target's own bias as <module>.base_layer.bias, as HF's state dict names it)
                p.update({n.replace(".base_layer.", "."): v for n, v in t.items() if n.replace(".base_layer.", ".") in p})
            if cfg_json["peft_type"] == "SDLORA":
                sdlora_weights(p, cfg, cfg_json, t)
            if cfg_json["peft_type"] == "LORA" and cfg_json.get("trainable_token_indices") is not None:
                hf_trainable_tokens(p, cfg_json, t)
    else:
        for v in p.values():
            v.requires_grad_(True)
    if cfg["model_type"] == "s4d":
        loss, logits = s4d_forward(p, cfg, torch.tensor(batch["inputs"], dtype=dtype),
                                   torch.tensor(batch["labels"]), hooks, lora)
    elif "inputs" in batch:  # a frame model
        loss, logits = lm_forward(p, cfg, None, hooks, lora, adapters, torch.tensor(batch["inputs"], dtype=dtype),
                                  torch.tensor(batch["labels"]))
    else:
        loss, logits = lm_forward(p, cfg, torch.tensor(batch["input_ids"]), hooks, lora, adapters)
    loss.backward()
    prefix = "base_model.model." if adapter is not None else ""
    out = {"loss": loss.detach().numpy(), "logits": logits.detach().numpy()}
    for position, trainable in trainables:
        for n, v in trainable.items():
            out[position + prefix + n] = v.grad.numpy() if v.grad is not None else np.zeros(v.shape)
    return out


def per_sample_reference(cfg, w, batch, case, dtype=torch.float64):
    """HF's mixed batch (adapter_names=[...]): case["per_sample"][i] is the index of sample i's adapter in
    case["adapters"], or None for the base model. Each sample runs alone with its adapter; the batch loss is the mean of
    the per-sample losses (equal lengths: HF's next-token mean and the classifiers' cross-entropy mean agree), so an
    adapter's gradient is the sum over its samples divided by B. Gradients named "1/...", "2/..." by adapter when
    there are several."""
    per_sample, adapters = case["per_sample"], case["adapters"]
    used = [k for i, k in enumerate(per_sample) if k is not None and k not in per_sample[:i]]
    assert used == list(range(len(adapters))), "a per-sample case lists its adapters in order of first use"
    B = len(per_sample)
    loss, logits, grads = 0.0, [], {}
    for i, k in enumerate(per_sample):
        one = {n: v[i:i + 1] for n, v in batch.items()}
        r = reference(cfg, w, one, None if k is None else adapters[k], dtype)
        loss += r.pop("loss") / B
        logits.append(r.pop("logits"))
        if k is not None:
            prefix = "%d/" % (k + 1) if len(adapters) > 1 else ""
            for n, g in r.items():
                grads[prefix + n] = grads.get(prefix + n, 0) + g / B
    return dict(grads, loss=np.asarray(loss), logits=np.concatenate(logits, axis=0))


def compare(got, want, floor):
    """Worst per-tensor error relative to max(the tensor's largest reference magnitude, floor); names missing on
    either side."""
    worst, worst_name = 0.0, ""
    missing = sorted(set(want) ^ set(got))
    for name in want:
        if name not in got:
            continue
        a = np.asarray(got[name], dtype=np.float64).reshape(-1)
        b = np.asarray(want[name], dtype=np.float64).reshape(-1)
        if a.shape != b.shape:
            missing.append(name + " (shape)")
            continue
        scale = max(np.abs(b).max() if b.size else 0.0, floor)
        err = float(np.abs(a - b).max() / scale) if b.size else 0.0
        if not err <= worst:
            worst, worst_name = err, name
    return worst, worst_name, missing


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ssmtune", required=True)
    ap.add_argument("--keep", help="write the cases' files under this directory and keep them")
    ap.add_argument("--only", help="run the cases whose name contains this text")
    ap.add_argument("--random", type=int, default=0, metavar="N",
                    help="run N cases of random sizes, options and adapters (random_cases.random_case) instead of the fixed "
                         "list")
    ap.add_argument("--seed", type=int, default=0, help="the first random case's seed (case i uses seed + i)")
    ap.add_argument("--large", action="store_true", help="with --random: larger Mamba / Longhorn models (D 16-64, "
                    "E 60-199, N 8-32, L 100-599)")
    ap.add_argument("--torch-save", choices=["never", "odd", "always"], default="odd",
                    help="which cases write their model and adapters with torch.save (pytorch_model.bin, "
                    "adapter_model.bin) instead of safetensors: odd-numbered ones by default")
    a = ap.parse_args()
    if not (os.path.isfile(a.ssmtune) and os.access(a.ssmtune, os.X_OK)):
        print("error: --ssmtune %s is not an executable; fix: build first (bash tools/setup/build.sh) and pass "
              "build/tools/ssmtune" % a.ssmtune)
        return 1
    root = a.keep or tempfile.mkdtemp(prefix="ssmtune_crosscheck_")
    failures = 0
    ill_conditioned = []
    print("%-52s %8s %22s %22s" % ("case", "tensors", "float64 worst", "float32 worst"))
    if a.random > 0:
        def drawn(seed):
            name, cfg, w, batch, adapter = (random_large_case if a.large else random_case)(np.random.default_rng(seed))
            return "%s (seed %d)" % (name, seed), lambda g: (cfg, w, batch, adapter)
        todo = [drawn(a.seed + i) for i in range(a.random)]
    else:
        todo = cases()
    for index, (name, build) in enumerate(todo):
        if a.only and a.only not in name:
            continue
        g = np.random.default_rng(1000 + index)
        cfg, w, batch, adapter = build(g)
        d = os.path.join(root, "case%02d" % index)
        os.makedirs(os.path.join(d, "model"), exist_ok=True)
        with open(os.path.join(d, "model", "config.json"), "w") as f:
            json.dump(cfg.pop("file_config", cfg), f)
        file_weights = cfg.pop("file_weights", w)  # the layout on disk, when it differs from HF's
        # every other case writes the model and adapters with torch.save (pytorch_model.bin, adapter_model.bin)
        torch_save = a.torch_save == "always" or (a.torch_save == "odd" and index % 2 == 1)
        (save_torch if torch_save else save_safetensors)(
            os.path.join(d, "model", "pytorch_model.bin" if torch_save else "model.safetensors"),
            {n: v.astype(np.float32) for n, v in file_weights.items()})
        # the reference reads the float32 values the program reads
        w = {n: v.astype(np.float32).astype(np.float64) for n, v in w.items()}
        save_safetensors(os.path.join(d, "batch.safetensors"), batch)
        cmd_tail = []
        per_sample = adapter.get("per_sample") if isinstance(adapter, dict) else None
        if per_sample is not None:  # one adapter per sample ("--per-sample A,__base__,B")
            adapter = adapter["adapters"]
        if adapter is not None:  # one adapter, or a list active together ("--adapter A+B")
            group, dirs = [], []
            for k, (cfg_json, tensors) in enumerate(adapter if isinstance(adapter, list) else [adapter]):
                dirs.append(os.path.join(d, "adapter" if not isinstance(adapter, list) else "adapter%d" % (k + 1)))
                group.append(write_adapter_dir(dirs[-1], cfg_json, tensors, torch_save))
            adapter = group if isinstance(adapter, list) else group[0]
            cmd_tail = ["--adapter", "+".join(dirs)]
        if per_sample is not None:
            cmd_tail = ["--per-sample", ",".join("__base__" if k is None else dirs[k] for k in per_sample)]
            run_reference = lambda dtype: per_sample_reference(cfg, w, batch, {"per_sample": per_sample,
                                                                              "adapters": group}, dtype)
        else:
            run_reference = lambda dtype: reference(cfg, w, batch, adapter, dtype)
        want = run_reference(torch.float64)
        row = []
        ok = True
        note = ""
        for dtype, tol, floor in (("f64", F64_TOL, F64_FLOOR), ("f32", F32_TOL, F32_FLOOR)):
            out = os.path.join(d, "grads_%s.safetensors" % dtype)
            r = subprocess.run([a.ssmtune, "grads", "--model", os.path.join(d, "model"), "--batch",
                                os.path.join(d, "batch.safetensors"), "--out", out, "--dtype", dtype] + cmd_tail,
                               capture_output=True, text=True)
            if r.returncode != 0:
                row.append("error: " + (r.stderr.strip() or r.stdout.strip()))
                ok = False
                continue
            worst, worst_name, missing = compare(load_safetensors(out), want, floor)
            if missing:
                row.append("names differ: " + ", ".join(missing[:4]))
                ok = False
                continue
            row.append("%.1e %s" % (worst, worst_name.split(".")[-1] if worst > 0 else ""))
            if dtype == "f32" and worst > tol and cfg.get("model_type") != "s4d":  # is the case ill-conditioned?
                torch_worst = compare(run_reference(torch.float32), want, floor)[0]
                if ILL_CONDITIONED_FROM < torch_worst < 1 and worst <= ILL_CONDITIONED_FACTOR * torch_worst:
                    note = "   ill-conditioned: PyTorch float32 %.1e" % torch_worst
                    ill_conditioned.append(name)
                    continue
                note = "   (PyTorch float32 %.1e)" % torch_worst
            ok = ok and worst <= tol
        print("%-52s %8d %22s %22s%s%s" % (name, len(want), row[0][:60], row[-1][:60], "" if ok else "   FAIL", note))
        if not ok:
            failures += 1
            for item in row:
                if item.startswith("error") or item.startswith("names"):
                    print("    " + item)
    if ill_conditioned:
        print("%d ill-conditioned case(s), where PyTorch's own float32 is over %.0e off too; ours within %dx of it: %s"
              % (len(ill_conditioned), ILL_CONDITIONED_FROM, ILL_CONDITIONED_FACTOR, "; ".join(ill_conditioned)))
    print("%d case(s) disagree" % failures if failures else "every case agrees")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
