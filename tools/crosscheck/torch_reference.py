#!/usr/bin/env python3
"""Cross-check of ssmtune's models and adapters against an independent PyTorch reference (float64 autograd).

For each case below this script draws a small model with random weights (not at their init values: D != 1, dt
biases spread, A_log perturbed, LoRA B non-zero, offsets non-zero), writes it as a model directory (config.json +
model.safetensors), a batch file and, for PEFT cases, an adapter directory (adapter_config.json +
adapter_model.safetensors), runs `ssmtune grads` on them at float64 and float32, and compares the loss, the logits
and every gradient with the same computation written here in plain PyTorch:

  - Mamba-1 as mamba_ssm's Mamba module with selective_scan_ref (softplus(dt + bias), A = -exp(A_log),
    a = exp(dt A), b = dt B u, y = C.h + D u, gated by SiLU(z)), HF MambaForCausalLM's wrapper (pre-norm RMSNorm
    blocks, norm_f, tied or untied head) and HF's shifted next-token loss;
  - Longhorn as selective_scan_online7_ref (beta = sigmoid(dt + bias), eps = beta / (1 + beta |k|^2),
    h = (1 - eps k^2) h + eps k x, y = q.h + D x) in the same block;
  - the S4D classifier as state-spaces/s4 example.py (encoder, S4D layers with the FFT convolution, GELU,
    Conv1d + GLU, residual, LayerNorm pre or post, mean over L, decoder), ZOH and bilinear;
  - the Mamba / Longhorn frame models (backbone.encoder, untied head, classified at the last frame);
  - PEFT: LoRA (HF layer semantics and target matching, Linear, Embedding and 1x1 Conv1d, rsLoRA), BitFit,
    state-offset h and y, initial state, prompt, prefix, parallel adapter, SURM (circulant, Toeplitz, Kronecker,
    LDR; lora and adapter modes) and SDLoRA (Mamba, Longhorn, S4D with pruning) as peft/*.cpp document them.

Errors are relative to the largest reference magnitude of each tensor. Float64 must agree to 1e-9; float32 to
2e-3 of the float64 reference (mamba_ssm's fp32 test tolerance is rtol 6e-4, atol 2e-3), with magnitudes below
1e-5 counted as 1e-5 (an absolute floor, for gradients that float32 itself rounds to zero).

usage: torch_reference.py --ssmtune build/tools/ssmtune [--keep DIR] [--only NAME]
Exit 0 when every case agrees, 1 when one does not, 77 when PyTorch (Debian's python3-torch) is absent.
"""
import argparse
import json
import math
import os
import re
import struct
import subprocess
import sys
import tempfile

F64_TOL = 1e-9
F32_TOL = 2e-3
F32_FLOOR = 1e-5  # an absolute floor: float32 rounds sigmoid(20) to 1, so beta(1 - beta) = 0 (as PyTorch's own f32)

try:
    import numpy as np
    import torch
    import torch.nn.functional as F
except ImportError:
    print("skipped: PyTorch and numpy are not installed (apt-get install python3-torch)")
    sys.exit(77)

torch.set_default_dtype(torch.float64)

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


# ---------------------------------------------------------------------------------------------------- the models
def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def causal_depthwise_conv(x, w, b):
    """x [B, L, E], w [E, 1, K], b [E] or None: nn.Conv1d(groups=E, padding=K-1) keeping the first L outputs."""
    L, K = x.shape[1], w.shape[-1]
    y = F.conv1d(x.transpose(1, 2), w, b, padding=K - 1, groups=x.shape[2])[..., :L]
    return y.transpose(1, 2)


def linear(p, prefix, x, lora):
    """x W^T (+ b), then what an adapter attaches to this module (module_hooks)."""
    y = x @ p[prefix + ".weight"].T
    if prefix + ".bias" in p:
        y = y + p[prefix + ".bias"]
    return module_hooks(lora, prefix, x, y)


def module_hooks(lora, prefix, x, y):
    """lora[prefix]: ("delta", f) adds f(x, out_features) (LoRA's s B A x, SURM's lora mode); ("after", f) maps y to f(y) (SURM's
    adapter mode). x and y with features last."""
    if prefix in lora:
        kind, f = lora[prefix]
        y = y + f(x, y.shape[-1]) if kind == "delta" else f(y)
    return y


def mixer(p, cfg, i, hidden, hooks, lora):
    """One Mamba or Longhorn mixer on hidden [B, L, D] (mamba_simple.Mamba.forward, selective_scan_ref)."""
    m = "backbone.layers.%d.mixer" % i
    N, R = cfg["state_size"], cfg["time_step_rank"]
    xz = linear(p, m + ".in_proj", hidden, lora)
    x, z = xz.chunk(2, dim=-1)
    P = 0
    if m + ".prefix" in hooks:  # PREFIX: prepend along the sequence axis of x, z zero-padded, dropped at the end
        pre = hooks[m + ".prefix"]
        P = pre.shape[0]
        x = torch.cat([pre.expand(x.shape[0], -1, -1), x], dim=1)
        z = torch.cat([torch.zeros(z.shape[0], P, z.shape[2]), z], dim=1)
    u = F.silu(causal_depthwise_conv(x, p[m + ".conv1d.weight"], p.get(m + ".conv1d.bias")))
    x_dbl = linear(p, m + ".x_proj", u, lora)
    dt_low, Bm, Cm = x_dbl[..., :R], x_dbl[..., R:R + N], x_dbl[..., R + N:]
    dt_raw = linear(p, m + ".dt_proj", dt_low, lora)  # bias included
    Bt, L, E = u.shape
    h = hooks.get(m + ".initial_state", torch.zeros(E, N)).expand(Bt, E, N)
    offset = hooks.get(m + ".state_offset")
    ys = []
    if cfg["model_type"] == "mamba":
        dt = F.softplus(dt_raw)  # threshold 20, as the kernel
        A = -torch.exp(p[m + ".A_log"])
        for t in range(L):
            a = torch.exp(dt[:, t, :, None] * A)
            h = a * h + (dt[:, t, :, None] * Bm[:, t, None, :]) * u[:, t, :, None]
            hr = h if offset is None else h + offset
            ys.append((hr * Cm[:, t, None, :]).sum(-1))
    else:  # longhorn: Bm = k, Cm = q
        beta = torch.sigmoid(dt_raw)
        eps = beta / (1 + beta * (Bm * Bm).sum(-1, keepdim=True))
        for t in range(L):
            k = Bm[:, t, None, :]
            e = eps[:, t, :, None]
            h = (1 - e * k * k) * h + e * k * u[:, t, :, None]
            hr = h if offset is None else h + offset
            ys.append((hr * Cm[:, t, None, :]).sum(-1))
    y = torch.stack(ys, dim=1) + u * p[m + ".D"]
    if m + ".output_offset" in hooks:
        y = y + hooks[m + ".output_offset"]
    out = y * F.silu(z)
    out = out[:, P:]
    return linear(p, m + ".out_proj", out, lora)


def lm_forward(p, cfg, ids, hooks, lora, adapters, frames=None, labels=None):
    """MambaForCausalLM / Longhorn LM: embedding, pre-norm residual blocks, norm_f, head; next-token loss. A frame
    model (input_size F) encodes frames [B, L, F] with backbone.encoder and is classified at the last frame."""
    if frames is not None:
        h = linear(p, "backbone.encoder", frames, lora)
        emb_w = None
    else:
        emb_w = p["backbone.embeddings.weight"]
        h = emb_w[ids]
    if "backbone.embeddings" in lora:  # HF LoRA Embedding: E[ids] + s * (A^T[ids]) B^T
        A, B, s = lora["backbone.embeddings"][1]
        h = h + s * (A.T[ids] @ B.T)
    P = 0
    if "prompt_embeddings" in hooks:
        pr = hooks["prompt_embeddings"]
        P = pr.shape[0]
        h = torch.cat([pr.expand(h.shape[0], -1, -1), h], dim=1)
    eps = cfg["layer_norm_epsilon"]
    for i in range(cfg["num_hidden_layers"]):
        xn = rms_norm(h, p["backbone.layers.%d.norm.weight" % i], eps)
        out = mixer(p, cfg, i, xn, hooks, lora)
        pa = "backbone.layers.%d.mixer" % i
        if pa in adapters:  # parallel adapter beside the whole mixer, on the mixer's input
            out = out + parallel_adapter(adapters[pa], xn)
        h = h + out
    h = rms_norm(h, p["backbone.norm_f.weight"], eps)
    head = p["lm_head.weight"] if "lm_head.weight" in p else emb_w
    logits = linear({"w.weight": head}, "w", h, lora if "lm_head" not in lora else {"w": lora["lm_head"]})
    logits = logits[:, P:]
    if frames is not None:
        logits = logits[:, -1]
        return F.cross_entropy(logits, labels), logits
    V = logits.shape[-1]
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1))
    return loss, logits


def parallel_adapter(t, x):
    down = x @ t["down.weight"].T + t["down.bias"]
    act = {"relu": F.relu, "gelu": F.gelu, "silu": F.silu, "identity": lambda v: v}[t["activation"]]
    return t["scaling"] * (act(down) @ t["up.weight"].T + t["up.bias"])


def s4d_kernel(p, k, L, disc):
    """K [H, L] of state-spaces/s4 s4d.py (ZOH) or the bilinear discretisation, B = 1, output 2 Re."""
    dt = torch.exp(p[k + ".log_dt"])
    C = torch.complex(p[k + ".C"][..., 0], p[k + ".C"][..., 1])
    A = torch.complex(-torch.exp(p[k + ".log_A_real"]), p[k + ".A_imag"])
    dtA = A * dt[:, None]
    l = torch.arange(L, dtype=torch.float64)
    if disc == "zoh":
        Ct = C * (torch.exp(dtA) - 1.0) / A
        log_abar = dtA
    else:
        Ct = C * dt[:, None] / (1.0 - dtA / 2)
        log_abar = torch.log(1.0 + dtA / 2) - torch.log(1.0 - dtA / 2)
    Kc = torch.exp(log_abar[..., None] * l)  # [H, N/2, L]
    return 2 * torch.einsum("hn,hnl->hl", Ct, Kc).real, C, torch.exp(log_abar)


def s4d_forward(p, cfg, inputs, labels, hooks, lora):
    x = linear(p, "encoder", inputs, lora)  # [B, L, H]
    L = x.shape[1]
    for i in range(cfg["n_layers"]):
        s = "s4_layers.%d" % i
        z = x
        if cfg["prenorm"]:
            z = F.layer_norm(z, (z.shape[-1],), p["norms.%d.weight" % i], p["norms.%d.bias" % i], 1e-5)
        u = z.transpose(1, 2)  # [B, H, L]
        K, C, abar = s4d_kernel(p, s + ".kernel", L, cfg["discretization"])
        y = torch.fft.irfft(torch.fft.rfft(u, n=2 * L) * torch.fft.rfft(K, n=2 * L), n=2 * L)[..., :L]
        y = y + u * p[s + ".D"][:, None]
        if s + ".state_offset" in hooks:  # + 2 Re sum_n C_n h'_n, per channel
            ho = hooks[s + ".state_offset"]
            y = y + 2 * (C * torch.complex(ho[..., 0], ho[..., 1])).sum(-1).real[:, None]
        if s + ".initial_state" in hooks:  # + 2 Re sum_n C_n abar_n^{t+1} h0_n
            h0 = hooks[s + ".initial_state"]
            powers = torch.exp(torch.log(abar)[..., None] * torch.arange(1, L + 1, dtype=torch.float64))
            y = y + 2 * torch.einsum("hn,hnl->hl", C * torch.complex(h0[..., 0], h0[..., 1]), powers).real
        if s + ".output_offset" in hooks:
            y = y + hooks[s + ".output_offset"][:, None]
        g = F.gelu(y)
        w = p[s + ".output_linear.0.weight"]  # [2H, H, 1]: a 1x1 Conv1d
        y = torch.einsum("oh,bhl->bol", w[..., 0], g) + p[s + ".output_linear.0.bias"][:, None]
        y = module_hooks(lora, s + ".output_linear.0", g.transpose(1, 2), y.transpose(1, 2)).transpose(1, 2)
        y = F.glu(y, dim=-2)
        x = y.transpose(1, 2) + x
        if not cfg["prenorm"]:
            x = F.layer_norm(x, (x.shape[-1],), p["norms.%d.weight" % i], p["norms.%d.bias" % i], 1e-5)
    logits = linear(p, "decoder", x.mean(dim=1), lora)
    return F.cross_entropy(logits, labels), logits


# ---------------------------------------------------------------------------------------------------- random cases
def lm_case(rng, model_type, D=8, layers=2, N=4, expand=2, K=4, R=None, V=11, tied=True, use_bias=False,
            conv_bias=True, B=2, L=7, E=None, dt_bias=(-4.0, 0.5), eps=1e-5):
    E = E or expand * D
    R = R or math.ceil(D / 16)
    cfg = {"model_type": model_type, "vocab_size": V, "hidden_size": D, "num_hidden_layers": layers,
           "state_size": N, "expand": expand, "intermediate_size": E, "conv_kernel": K, "time_step_rank": R,
           "layer_norm_epsilon": eps, "use_bias": use_bias, "use_conv_bias": conv_bias,
           "tie_word_embeddings": tied}
    u = lambda shape, s: rng.uniform(-s, s, size=shape)
    w = {"backbone.embeddings.weight": rng.normal(0, 0.5, size=(V, D)),
         "backbone.norm_f.weight": 1 + 0.2 * rng.normal(size=D)}
    if not tied:
        w["lm_head.weight"] = u((V, D), 1 / math.sqrt(D))
    for i in range(layers):
        m = "backbone.layers.%d.mixer." % i
        w["backbone.layers.%d.norm.weight" % i] = 1 + 0.2 * rng.normal(size=D)
        w[m + "in_proj.weight"] = u((2 * E, D), 1 / math.sqrt(D))
        w[m + "conv1d.weight"] = u((E, 1, K), 0.5)
        if conv_bias:
            w[m + "conv1d.bias"] = u(E, 0.5)
        w[m + "x_proj.weight"] = u((R + 2 * N, E), 1 / math.sqrt(E))
        w[m + "dt_proj.weight"] = u((E, R), 1 / math.sqrt(R))
        w[m + "dt_proj.bias"] = rng.uniform(dt_bias[0], dt_bias[1], size=E)
        if model_type == "mamba":
            w[m + "A_log"] = np.log(np.tile(np.arange(1, N + 1, dtype=np.float64), (E, 1))) + 0.3 * rng.normal(size=(E, N))
        w[m + "D"] = 1 + rng.normal(size=E)
        w[m + "out_proj.weight"] = u((D, E), 1 / math.sqrt(E))
        if use_bias:
            w[m + "in_proj.bias"] = u(2 * E, 0.3)
            w[m + "out_proj.bias"] = u(D, 0.3)
    batch = {"input_ids": rng.integers(0, V, size=(B, L)).astype(np.int64)}
    return cfg, w, batch


def with_adapter(case, make_adapter):
    cfg, w, batch = case
    return cfg, w, batch, make_adapter(w, cfg)


def frame_case(rng, model_type, F_in=3, **kw):
    """A frame model: backbone.encoder (Linear F -> D with bias) instead of the embedding, an untied head of
    vocab_size classes, real-valued frames in, classified at the last frame."""
    cfg, w, batch = lm_case(rng, model_type, tied=False, **kw)
    D, V = cfg["hidden_size"], cfg["vocab_size"]
    cfg["input_size"] = F_in
    del w["backbone.embeddings.weight"]
    w["backbone.encoder.weight"] = rng.normal(0, 0.5, size=(D, F_in))
    w["backbone.encoder.bias"] = rng.normal(0, 0.1, size=D)
    B, L = batch.pop("input_ids").shape
    batch["inputs"] = rng.normal(size=(B, L, F_in)).astype(np.float32)
    batch["labels"] = rng.integers(0, V, size=B).astype(np.int64)
    return cfg, w, batch


def original_format_case(rng):
    """state-spaces/mamba-130m's layout: config d_model / n_layer / ssm_cfg / pad_vocab_size_multiple (no
    model_type), backbone.embedding.weight and an lm_head.weight equal to it; the vocabulary pads 11 -> 16."""
    cfg, w, batch = lm_case(rng, "mamba", V=16, N=16)
    emb = w["backbone.embeddings.weight"]
    cfg["file_weights"] = dict({n: v for n, v in w.items() if n != "backbone.embeddings.weight"},
                               **{"backbone.embedding.weight": emb, "lm_head.weight": emb})  # what the file holds
    batch["input_ids"] = np.minimum(batch["input_ids"], 10)
    file_cfg = {"d_model": cfg["hidden_size"], "n_layer": cfg["num_hidden_layers"], "vocab_size": 11,
                "ssm_cfg": {}, "rms_norm": True, "residual_in_fp32": True, "fused_add_norm": True,
                "pad_vocab_size_multiple": 8}
    cfg["file_config"] = file_cfg
    return cfg, w, batch, None


def longhorn_format_case(rng):
    """Longhorn's own code: mamba_ssm's MixerModel names and config fields, the beta projection named dt_head."""
    cfg, w, batch = lm_case(rng, "longhorn", N=8)
    file_weights = {n.replace(".mixer.dt_proj.", ".mixer.dt_head."): v for n, v in w.items()}
    file_weights["backbone.embedding.weight"] = file_weights.pop("backbone.embeddings.weight")
    cfg["file_weights"] = file_weights
    cfg["file_config"] = {"d_model": cfg["hidden_size"], "n_layer": cfg["num_hidden_layers"],
                          "vocab_size": cfg["vocab_size"], "ssm_cfg": {"d_state": 8}, "pad_vocab_size_multiple": 1}
    return cfg, w, batch, None


def s4d_case(rng, prenorm, disc, H=6, N=8, layers=2, d_input=3, d_output=4, B=3, L=9):
    cfg = {"model_type": "s4d", "d_input": d_input, "d_output": d_output, "d_model": H, "d_state": N,
           "n_layers": layers, "prenorm": prenorm, "dropout": 0.0, "init": "lin", "discretization": disc}
    M = N // 2
    w = {"encoder.weight": rng.normal(0, 0.5, size=(H, d_input)), "encoder.bias": rng.normal(0, 0.1, size=H),
         "decoder.weight": rng.normal(0, 0.4, size=(d_output, H)), "decoder.bias": rng.normal(0, 0.1, size=d_output)}
    for i in range(layers):
        k = "s4_layers.%d.kernel." % i
        w[k + "log_dt"] = rng.uniform(math.log(1e-2), math.log(0.3), size=H)
        w[k + "C"] = rng.normal(0, math.sqrt(0.5), size=(H, M, 2))
        w[k + "log_A_real"] = math.log(0.5) + 0.3 * rng.normal(size=(H, M))
        w[k + "A_imag"] = math.pi * np.tile(np.arange(M, dtype=np.float64), (H, 1)) + 0.2 * rng.normal(size=(H, M))
        w["s4_layers.%d.D" % i] = rng.normal(size=H)
        w["s4_layers.%d.output_linear.0.weight" % i] = rng.uniform(-1, 1, size=(2 * H, H, 1)) / math.sqrt(H)
        w["s4_layers.%d.output_linear.0.bias" % i] = rng.normal(0, 0.1, size=2 * H)
        w["norms.%d.weight" % i] = 1 + 0.2 * rng.normal(size=H)
        w["norms.%d.bias" % i] = 0.1 * rng.normal(size=H)
    batch = {"inputs": rng.normal(size=(B, L, d_input)).astype(np.float32),
             "labels": rng.integers(0, d_output, size=B).astype(np.int64)}
    return cfg, w, batch


def hf_targets(module, targets, layers=None):
    """HF PEFT's matching: a string is a regular expression the whole name must match ("all-linear": every Linear
    but the output head); a list matches a name equal to an entry or ending in "." + entry; layers_to_transform
    keeps the listed layer indices."""
    if layers is not None:
        found = re.search(r"(^|\.)(layers|s4_layers)\.(\d+)\.", module)
        if not found or int(found.group(3)) not in layers:
            return False
    if targets == "all-linear":
        return re.search(r"(in_proj|x_proj|dt_proj|out_proj)$", module) is not None
    if isinstance(targets, str):
        return re.fullmatch(targets, module) is not None
    return any(module == t or module.endswith("." + t) for t in targets)


def lora_adapter(rng, w, cfg, targets, r=3, alpha=5.0, rslora=False, layers=None):
    """HF LoRA tensors for every module matching the targets; B non-zero so the adapter acts."""
    cfg_json = {"peft_type": "LORA", "r": r, "lora_alpha": alpha, "target_modules": targets, "use_rslora": rslora}
    if layers is not None:
        cfg_json["layers_to_transform"] = layers
    tensors = {}
    for name in sorted(w):
        if not name.endswith(".weight"):
            continue
        module = name[:-len(".weight")]
        if not hf_targets(module, targets, layers):
            continue
        shape = w[name].shape
        if module.endswith("embeddings"):
            tensors[module + ".lora_embedding_A"] = rng.normal(0, 0.3, size=(r, shape[0]))
            tensors[module + ".lora_embedding_B"] = rng.normal(0, 0.3, size=(shape[1], r))
        elif len(shape) == 3:  # 1x1 Conv1d
            tensors[module + ".lora_A.weight"] = rng.normal(0, 0.3, size=(r, shape[1], 1))
            tensors[module + ".lora_B.weight"] = rng.normal(0, 0.3, size=(shape[0], r, 1))
        else:
            tensors[module + ".lora_A.weight"] = rng.normal(0, 0.3, size=(r, shape[1]))
            tensors[module + ".lora_B.weight"] = rng.normal(0, 0.3, size=(shape[0], r))
    return cfg_json, tensors


def per_layer_adapter(rng, cfg, peft_type, name, shape_of, extra=None):
    layers = cfg.get("num_hidden_layers", cfg.get("n_layers"))
    where = "backbone.layers.%d.mixer." if "num_hidden_layers" in cfg else "s4_layers.%d."
    tensors = {(where % i) + name: rng.normal(0, 0.4, size=shape_of) for i in range(layers)}
    return dict({"peft_type": peft_type}, **(extra or {})), tensors


def circulant_dense(c):
    """c [P, Q, b] -> [P b, Q b]: block (i, j) is circ(c[i, j]), first column c[i, j]."""
    P, Q, b = c.shape
    idx = (torch.arange(b)[:, None] - torch.arange(b)[None, :]) % b
    return c[:, :, idx].permute(0, 2, 1, 3).reshape(P * b, Q * b)


def skew_circulant_dense(v):
    n = v.shape[0]
    diff = torch.arange(n)[:, None] - torch.arange(n)[None, :]
    return v[diff % n] * torch.where(diff >= 0, 1.0, -1.0)


def symmetric_toeplitz_dense(v):
    n = v.shape[0]
    return v[(torch.arange(n)[:, None] - torch.arange(n)[None, :]).abs()]


def surm_hook(cfg_json, t):
    """SURM as a dense Delta W [out, in] (lora mode: + alpha Delta W x) or a square S (adapter mode:
    y + act(S y) + bias), from Sehanobish et al.'s structures as peft/surm.cpp documents them."""
    structure, alpha = cfg_json["structure"], cfg_json["surm_alpha"]

    def dense(fin, fout):
        n = max(fin, fout)
        if structure == "circulant":
            return circulant_dense(t["c"])
        if structure == "kronecker":
            return torch.kron(t["kron_B"], t["kron_A"]) / t["kron_A"].shape[0]
        if structure == "toeplitz":
            full = symmetric_toeplitz_dense(t["toeplitz_b"]) @ symmetric_toeplitz_dense(t["toeplitz_a"])
        else:
            full = sum(circulant_dense(g[None, None]) @ skew_circulant_dense(v) for g, v in zip(t["ldr_g"], t["ldr_s"]))
        assert full.shape == (n, n)
        return full[:fout, :fin]

    if cfg_json["mode"] == "adapter":
        act = {"relu": F.relu, "gelu": F.gelu, "silu": F.silu, "identity": lambda v: v}[cfg_json["activation"]]
        return ("after", lambda y: y + act(y @ dense(y.shape[-1], y.shape[-1]).T) + t["bias"])
    return ("delta", lambda x, fout: alpha * (x @ dense(x.shape[-1], fout).T))


def split_adapter(cfg_json, tensors, cfg):
    """Turns adapter tensors (torch leaves) into the forward's hooks / lora / parallel-adapter dictionaries."""
    hooks, lora, adapters = {}, {}, {}
    if cfg_json["peft_type"] == "SURM":
        for name, t in tensors.items():
            module = name.partition(".surm.")[0]
            lora.setdefault(module, {})[name.partition(".surm.")[2]] = t
        for module, params in list(lora.items()):
            lora[module] = surm_hook(cfg_json, params)
    elif cfg_json["peft_type"] in ("LORA", "SDLORA"):
        r = cfg_json["r"]
        s = cfg_json["lora_alpha"] / (math.sqrt(r) if cfg_json.get("use_rslora") else r)
        for name, t in tensors.items():
            for a_suffix, b_suffix in ((".lora_A.weight", ".lora_B.weight"),
                                       (".lora_embedding_A", ".lora_embedding_B")):
                if name.endswith(a_suffix):
                    module = name[:-len(a_suffix)]
                    A, B = t, tensors[module + b_suffix]
                    if A.dim() == 3:  # a 1x1 Conv1d's [r, in, 1], [out, r, 1]
                        A, B = A[..., 0], B[..., 0]
                    if a_suffix == ".lora_embedding_A":
                        lora[module] = ("embedding", (A, B, s))
                    else:
                        lora[module] = ("delta", lambda x, fout, A=A, B=B, s=s: s * ((x @ A.T) @ B.T))
    elif cfg_json["peft_type"] == "PARALLEL_ADAPTER":
        for name, t in tensors.items():
            module, _, rest = name.partition(".adapter.")
            adapters.setdefault(module, {"activation": cfg_json["activation"], "scaling": cfg_json["scaling"]})[rest] = t
    else:
        hooks = dict(tensors)
    return hooks, lora, adapters


def cases():
    """(name, builder) pairs; each builder takes a numpy Generator and returns cfg, weights, batch, adapter."""
    out = []
    for model_type in ("mamba", "longhorn"):
        out += [
            (model_type + " tied", lambda g, m=model_type: lm_case(g, m) + (None,)),
            (model_type + " untied, biases, no conv bias, R=3, K=3, N=6, L=2",
             lambda g, m=model_type: lm_case(g, m, R=3, K=3, N=6, tied=False, use_bias=True, conv_bias=False,
                                             L=2) + (None,)),
            (model_type + " D=20 (R=2), expand 3, 1 layer, L=16",
             lambda g, m=model_type: lm_case(g, m, D=20, expand=3, layers=1, L=16, B=1) + (None,)),
            (model_type + " E=13 (intermediate_size), N=16, L=300, eps 1e-6",
             lambda g, m=model_type: lm_case(g, m, D=5, E=13, N=16, layers=1, L=300, B=2, V=7, eps=1e-6) + (None,)),
            (model_type + " dt + bias beyond softplus' threshold 20",
             lambda g, m=model_type: lm_case(g, m, dt_bias=(18.0, 24.0)) + (None,)),
        ]
    out.append(("mamba original state-spaces format (d_model, padded vocab)", original_format_case))
    out.append(("longhorn own layout (dt_head, no model_type)", longhorn_format_case))
    for m in ("mamba", "longhorn"):
        out += [
            (m + " frame model", lambda g, m=m: frame_case(g, m, L=9) + (None,)),
            (m + " frame model LORA encoder + out_proj", lambda g, m=m: with_adapter(
                frame_case(g, m), lambda w, c: lora_adapter(g, w, c, ["encoder", "out_proj"]))),
            (m + " frame model STATE_OFFSET h", lambda g, m=m: with_adapter(
                frame_case(g, m), lambda w, c: per_layer_adapter(g, c, "STATE_OFFSET", "state_offset",
                                                                 (c["intermediate_size"], c["state_size"])))),
        ]

    def lm_with(model_type, make_adapter, **kw):
        def build(g):
            cfg, w, batch = lm_case(g, model_type, **kw)
            return cfg, w, batch, make_adapter(g, w, cfg)
        return build

    E = lambda cfg: cfg["intermediate_size"]
    for m in ("mamba", "longhorn"):
        out += [
            (m + " LORA all projections + embedding",
             lm_with(m, lambda g, w, c: lora_adapter(g, w, c, ["in_proj", "x_proj", "dt_proj", "out_proj",
                                                                "embeddings"]))),
            (m + " LORA rslora out_proj, untied",
             lm_with(m, lambda g, w, c: lora_adapter(g, w, c, ["out_proj"], r=4, alpha=2.0, rslora=True),
                     tied=False)),
            (m + " LORA target regex on layer 1",
             lm_with(m, lambda g, w, c: lora_adapter(g, w, c, r".*layers\.1\.mixer\.(in_proj|x_proj)"))),
            (m + " LORA all-linear, layers_to_transform [0]",
             lm_with(m, lambda g, w, c: lora_adapter(g, w, c, "all-linear", layers=[0]), tied=False)),
            (m + " STATE_OFFSET h",
             lm_with(m, lambda g, w, c: per_layer_adapter(g, c, "STATE_OFFSET", "state_offset",
                                                          (E(c), c["state_size"]), {"variant": "h"}))),
            (m + " STATE_OFFSET y",
             lm_with(m, lambda g, w, c: per_layer_adapter(g, c, "STATE_OFFSET", "output_offset", (E(c),),
                                                          {"variant": "y"}))),
            (m + " INITIAL_STATE",
             lm_with(m, lambda g, w, c: per_layer_adapter(g, c, "INITIAL_STATE", "initial_state",
                                                          (E(c), c["state_size"])))),
            (m + " PREFIX 3",
             lm_with(m, lambda g, w, c: per_layer_adapter(g, c, "PREFIX", "prefix", (3, E(c)),
                                                          {"num_virtual_tokens": 3}))),
            (m + " PROMPT 4",
             lm_with(m, lambda g, w, c: ({"peft_type": "PROMPT", "num_virtual_tokens": 4},
                                         {"prompt_embeddings": g.normal(0, 0.5, size=(4, c["hidden_size"]))}))),
            (m + " PARALLEL_ADAPTER gelu",
             lm_with(m, lambda g, w, c: per_layer_adapter_pa(g, c))),
            (m + " BITFIT",
             lm_with(m, lambda g, w, c: ({"peft_type": "BITFIT"},
                                         {n: g.normal(0, 0.5, size=w[n].shape) for n in w if n.endswith(".bias")}),
                     use_bias=True)),
        ]
    for m in ("mamba", "longhorn"):
        out += [
            (m + " SURM %s %s" % (structure, mode),
             lm_with(m, lambda g, w, c, st=structure, mo=mode, tg=targets: surm_adapter(g, w, c, st, mo, tg)))
            for structure, mode, targets in (("circulant", "lora", ["in_proj", "out_proj"]),
                                             ("toeplitz", "lora", ["in_proj", "x_proj"]),
                                             ("kronecker", "lora", ["in_proj", "out_proj"]),
                                             ("ldr", "lora", ["out_proj", "dt_proj"]),
                                             ("circulant", "adapter", ["in_proj", "out_proj"]),
                                             ("toeplitz", "adapter", ["out_proj"]))
        ]
        out.append((m + " SDLORA", lm_with(m, lambda g, w, c: sdlora_adapter(g, w, c))))
    for prenorm in (False, True):
        for disc in ("zoh", "bilinear"):
            out.append(("s4d %s %s" % ("prenorm" if prenorm else "postnorm", disc),
                        lambda g, p=prenorm, d=disc: s4d_case(g, p, d) + (None,)))

    def s4d_with(make_adapter, prenorm=False, disc="zoh"):
        def build(g):
            cfg, w, batch = s4d_case(g, prenorm, disc)
            return cfg, w, batch, make_adapter(g, w, cfg)
        return build

    H = lambda c: c["d_model"]
    M = lambda c: c["d_state"] // 2
    out += [
        ("s4d LORA encoder, output_linear.0, decoder",
         s4d_with(lambda g, w, c: lora_adapter(g, w, c, ["encoder", "output_linear.0", "decoder"]))),
        ("s4d SURM circulant lora output_linear.0", s4d_with(
            lambda g, w, c: surm_adapter(g, w, c, "circulant", "lora", ["output_linear.0", "decoder"]))),
        ("s4d SURM ldr adapter output_linear.0", s4d_with(
            lambda g, w, c: surm_adapter(g, w, c, "ldr", "adapter", ["output_linear.0"]))),
        ("s4d SDLORA pruned, zoh", s4d_with(lambda g, w, c: sdlora_s4d_adapter(g, w, c))),
        ("s4d SDLORA unpruned, bilinear, prenorm", s4d_with(lambda g, w, c: sdlora_s4d_adapter(g, w, c, prune=False),
                                                            prenorm=True, disc="bilinear")),
        ("s4d STATE_OFFSET h", s4d_with(lambda g, w, c: per_layer_adapter(
            g, c, "STATE_OFFSET", "state_offset", (H(c), M(c), 2), {"variant": "h"}), prenorm=True)),
        ("s4d STATE_OFFSET y", s4d_with(lambda g, w, c: per_layer_adapter(
            g, c, "STATE_OFFSET", "output_offset", (H(c),), {"variant": "y"}))),
        ("s4d INITIAL_STATE zoh", s4d_with(lambda g, w, c: per_layer_adapter(
            g, c, "INITIAL_STATE", "initial_state", (H(c), M(c), 2)))),
        ("s4d INITIAL_STATE bilinear", s4d_with(lambda g, w, c: per_layer_adapter(
            g, c, "INITIAL_STATE", "initial_state", (H(c), M(c), 2)), disc="bilinear")),
    ]
    return out


def surm_adapter(g, w, c, structure, mode, targets):
    cfg_json = {"peft_type": "SURM", "structure": structure, "mode": mode, "target_modules": targets,
                "surm_alpha": 0.7, "ldr_rank": 2, "activation": "gelu"}
    tensors = {}
    for name in sorted(w):
        module = name[:-len(".weight")]
        if not name.endswith(".weight") or not any(module == t or module.endswith("." + t) for t in targets):
            continue
        fout, fin = w[name].shape[:2]
        if mode == "adapter":
            fin = fout
        n = max(fin, fout)
        pre = module + ".surm."
        if structure == "circulant":
            b = fout if mode == "adapter" else math.gcd(fin, fout)
            tensors[pre + "c"] = g.normal(0, 0.3, size=(fout // b, fin // b, b))
        elif structure == "toeplitz":
            tensors[pre + "toeplitz_a"] = g.normal(0, 0.3, size=n)
            tensors[pre + "toeplitz_b"] = g.normal(0, 0.3, size=n)
        elif structure == "kronecker":
            r = max(d for d in range(1, 9) if math.gcd(fin, fout) % d == 0)
            tensors[pre + "kron_A"] = g.normal(0, 0.3, size=(r, fin // r))
            tensors[pre + "kron_B"] = g.normal(0, 0.3, size=(fout // r, r))
        else:
            tensors[pre + "ldr_g"] = g.normal(0, 0.3, size=(2, n))
            tensors[pre + "ldr_s"] = g.normal(0, 0.3, size=(2, n))
        if mode == "adapter":
            tensors[pre + "bias"] = g.normal(0, 0.1, size=fout)
    return cfg_json, tensors


def sdlora_adapter(g, w, c, r=2):
    """SDLoRA with chosen dimensions per layer (Mamba: channels and their states; Longhorn: channels) and LoRA on
    out_proj, every tensor non-zero."""
    E, N = c["intermediate_size"], c["state_size"]
    mamba = c["model_type"] == "mamba"
    dims, tensors = {}, {}
    for i in range(c["num_hidden_layers"]):
        channels = sorted(g.choice(E, size=3, replace=False).tolist())
        d = {"channels": channels}
        if mamba:
            d["states"] = [sorted(g.choice(N, size=int(g.integers(1, N + 1)), replace=False).tolist())
                           for _ in channels]
        dims[str(i)] = d
        m = "backbone.layers.%d.mixer." % i
        a_log, x_proj = sdlora_flat_indices(c, d)
        if mamba:
            tensors[m + "A_log_delta"] = g.normal(0, 0.3, size=len(a_log))
        tensors[m + "x_proj.weight_delta"] = g.normal(0, 0.3, size=len(x_proj))
        tensors[m + "out_proj.lora_A.weight"] = g.normal(0, 0.3, size=(r, E))
        tensors[m + "out_proj.lora_B.weight"] = g.normal(0, 0.3, size=(c["hidden_size"], r))
    return {"peft_type": "SDLORA", "r": r, "lora_alpha": 3.0, "target_modules": ["out_proj"], "sdlora_alpha": 0.8,
            "dimensions": dims}, tensors


def sdlora_s4d_adapter(g, w, c, r=2, prune=True):
    H, M = c["d_model"], c["d_state"] // 2
    dims, tensors = {}, {}
    for i in range(c["n_layers"]):
        usable = sorted(g.choice(H, size=H - 2 if prune else H, replace=False).tolist())
        channels = sorted(g.choice(usable, size=2, replace=False).tolist())
        usable_states = [sorted(g.choice(M, size=M - 1 if prune else M, replace=False).tolist()) for _ in channels]
        states = [sorted(g.choice(u, size=int(g.integers(1, len(u) + 1)), replace=False).tolist()) for u in usable_states]
        d = {"channels": channels, "states": states}
        if prune:
            d.update({"usable_channels": usable, "usable_states": usable_states})
        dims[str(i)] = d
        k, n_pairs = "s4_layers.%d." % i, sum(len(x) for x in states)
        tensors[k + "kernel.C_delta"] = g.normal(0, 0.3, size=2 * n_pairs)
        tensors[k + "kernel.log_A_real_delta"] = g.normal(0, 0.3, size=n_pairs)
        tensors[k + "kernel.A_imag_delta"] = g.normal(0, 0.3, size=n_pairs)
        tensors[k + "kernel.log_dt_delta"] = g.normal(0, 0.3, size=H)
        tensors[k + "D_delta"] = g.normal(0, 0.3, size=H)
        tensors[k + "output_linear.0.bias_delta"] = g.normal(0, 0.3, size=2 * H)
        tensors[k + "output_linear.0.lora_A.weight"] = g.normal(0, 0.3, size=(r, H, 1))
        tensors[k + "output_linear.0.lora_B.weight"] = g.normal(0, 0.3, size=(2 * H, r, 1))
    return {"peft_type": "SDLORA", "r": r, "lora_alpha": 3.0, "sdlora_alpha": 0.8, "dimensions": dims}, tensors


def per_layer_adapter_pa(g, c, r=3):
    D = c["hidden_size"]
    t = {}
    for i in range(c["num_hidden_layers"]):
        m = "backbone.layers.%d.mixer.adapter." % i
        t[m + "down.weight"] = g.normal(0, 0.4, size=(r, D))
        t[m + "down.bias"] = g.normal(0, 0.2, size=r)
        t[m + "up.weight"] = g.normal(0, 0.4, size=(D, r))
        t[m + "up.bias"] = g.normal(0, 0.2, size=D)
    return {"peft_type": "PARALLEL_ADAPTER", "r": r, "scaling": 1.5, "activation": "gelu"}, t


# ---------------------------------------------------------------------------------------------------- the runner
def sdlora_flat_indices(cfg, dims):
    """SDLoRA's trained entries as ascending flat indices: A_log by (d, n), x_proj's B/C rows by (row, column)."""
    E, N, R = cfg["intermediate_size"], cfg["state_size"], cfg["time_step_rank"]
    a_log = sorted(d * N + n for d, states in zip(dims["channels"], dims.get("states", [])) for n in states)
    x_proj = sorted(r * E + d for r in range(R, R + 2 * N) for d in dims["channels"])
    return a_log, x_proj


def sdlora_s4d_weights(p, cfg, cfg_json, t):
    """SDT's hard mode on S4D (ssm-peft S4/, lp_method lora): C pruned outside the usable channels / states, then
    C, log_A_real, A_imag + alpha delta at the update (channel, state) pairs; log_dt, D, output bias + delta."""
    alpha, H, M = cfg_json["sdlora_alpha"], cfg["d_model"], cfg["d_state"] // 2
    for layer, dims in cfg_json["dimensions"].items():
        k = "s4_layers.%s.kernel." % layer
        keep = torch.zeros(H, M, 2)
        for h in dims.get("usable_channels", range(H)):
            keep[h] = 1.0
        for h, usable in zip(dims["channels"], dims.get("usable_states", [range(M)] * len(dims["channels"]))):
            keep[h] = 0.0
            keep[h, list(usable)] = 1.0
        pairs = sorted(h * M + n for h, states in zip(dims["channels"], dims["states"]) for n in states)
        c_idx = sorted(2 * i + j for i in pairs for j in (0, 1))
        p[k + "C"] = (p[k + "C"] * keep).reshape(-1).index_add(0, torch.tensor(c_idx), alpha * t[k + "C_delta"]).reshape(H, M, 2)
        for name in ("log_A_real", "A_imag"):
            p[k + name] = p[k + name].reshape(-1).index_add(0, torch.tensor(pairs), alpha * t[k + name + "_delta"]).reshape(H, M)
        for name in (k + "log_dt", "s4_layers.%s.D" % layer, "s4_layers.%s.output_linear.0.bias" % layer):
            p[name] = p[name] + t[name + "_delta"]


def sdlora_weights(p, cfg, cfg_json, t):
    """A_log' = A_log + alpha scatter(delta), x_proj.W' = W + alpha scatter(delta) (Galim et al.'s SDT)."""
    if cfg["model_type"] == "s4d":
        return sdlora_s4d_weights(p, cfg, cfg_json, t)
    alpha = cfg_json["sdlora_alpha"]
    for layer, dims in cfg_json["dimensions"].items():
        m = "backbone.layers.%s.mixer." % layer
        a_log, x_proj = sdlora_flat_indices(cfg, dims)
        for name, idx in ((m + "A_log", a_log), (m + "x_proj.weight", x_proj)):
            if idx:
                flat = p[name].reshape(-1).index_add(0, torch.tensor(idx), alpha * t[name + "_delta"])
                p[name] = flat.reshape(p[name].shape)


def reference(cfg, w, batch, adapter):
    """Loss, logits and gradients (of the base, or of the adapter's tensors) in float64 autograd."""
    p = {n: torch.tensor(v, dtype=torch.float64) for n, v in w.items()}
    trainable = p
    hooks, lora, adapters = {}, {}, {}
    if adapter is not None:
        cfg_json, tensors = adapter
        t = {n: torch.tensor(v, dtype=torch.float64, requires_grad=True) for n, v in tensors.items()}
        trainable = t
        if cfg_json["peft_type"] == "BITFIT":
            p.update(t)
        else:
            hooks, lora, adapters = split_adapter(cfg_json, t, cfg)
        if cfg_json["peft_type"] == "SDLORA":
            sdlora_weights(p, cfg, cfg_json, t)
    else:
        for v in p.values():
            v.requires_grad_(True)
    if cfg["model_type"] == "s4d":
        loss, logits = s4d_forward(p, cfg, torch.tensor(batch["inputs"], dtype=torch.float64),
                                   torch.tensor(batch["labels"]), hooks, lora)
    elif "inputs" in batch:  # a frame model
        loss, logits = lm_forward(p, cfg, None, hooks, lora, adapters, torch.tensor(batch["inputs"], dtype=torch.float64),
                                  torch.tensor(batch["labels"]))
    else:
        loss, logits = lm_forward(p, cfg, torch.tensor(batch["input_ids"]), hooks, lora, adapters)
    loss.backward()
    prefix = "base_model.model." if adapter is not None else ""
    out = {"loss": loss.detach().numpy(), "logits": logits.detach().numpy()}
    for n, v in trainable.items():
        out[prefix + n] = v.grad.numpy() if v.grad is not None else np.zeros(v.shape)
    return out


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
    a = ap.parse_args()
    if not (os.path.isfile(a.ssmtune) and os.access(a.ssmtune, os.X_OK)):
        print("error: --ssmtune %s is not an executable; fix: build first (bash tools/setup/build.sh) and pass "
              "build/tools/ssmtune" % a.ssmtune)
        return 1
    root = a.keep or tempfile.mkdtemp(prefix="ssmtune_crosscheck_")
    failures = 0
    print("%-52s %8s %22s %22s" % ("case", "tensors", "float64 worst", "float32 worst"))
    for index, (name, build) in enumerate(cases()):
        if a.only and a.only not in name:
            continue
        g = np.random.default_rng(1000 + index)
        cfg, w, batch, adapter = build(g)
        d = os.path.join(root, "case%02d" % index)
        os.makedirs(os.path.join(d, "model"), exist_ok=True)
        with open(os.path.join(d, "model", "config.json"), "w") as f:
            json.dump(cfg.pop("file_config", cfg), f)
        file_weights = cfg.pop("file_weights", w)  # the layout on disk, when it differs from HF's
        save_safetensors(os.path.join(d, "model", "model.safetensors"),
                         {n: v.astype(np.float32) for n, v in file_weights.items()})
        # the reference reads the float32 values the program reads
        w = {n: v.astype(np.float32).astype(np.float64) for n, v in w.items()}
        save_safetensors(os.path.join(d, "batch.safetensors"), batch)
        cmd_tail = []
        if adapter is not None:
            cfg_json, tensors = adapter
            os.makedirs(os.path.join(d, "adapter"), exist_ok=True)
            with open(os.path.join(d, "adapter", "adapter_config.json"), "w") as f:
                json.dump(cfg_json, f)
            save_safetensors(os.path.join(d, "adapter", "adapter_model.safetensors"),
                             {"base_model.model." + n: v.astype(np.float32) for n, v in tensors.items()})
            adapter = (cfg_json, {n: v.astype(np.float32).astype(np.float64) for n, v in tensors.items()})
            cmd_tail = ["--adapter", os.path.join(d, "adapter")]
        want = reference(cfg, w, batch, adapter)
        row = []
        ok = True
        for dtype, tol, floor in (("f64", F64_TOL, 1e-12), ("f32", F32_TOL, F32_FLOOR)):
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
            ok = ok and worst <= tol
        print("%-52s %8d %22s %22s%s" % (name, len(want), row[0][:60], row[-1][:60], "" if ok else "   FAIL"))
        if not ok:
            failures += 1
            for item in row:
                if item.startswith("error") or item.startswith("names"):
                    print("    " + item)
    print("%d case(s) disagree" % failures if failures else "every case agrees")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
