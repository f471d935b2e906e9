"""The cases of tools/crosscheck/torch_reference.py: small models with random weights away from their init values
(D != 1, dt biases spread up to and past softplus' threshold 20, perturbed A_log and S4D modes), batches, and
adapters with every tensor non-zero, written in the layouts ssmtune reads (HF names, mamba_ssm's and Longhorn's own
checkpoint layouts, HF PEFT adapter files). Each builder takes a numpy Generator and returns
(config, weights, batch, adapter or None).
"""
import math
import re

import numpy as np

from reference_models import hf_pattern_value, sdlora_flat_indices


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


def hf_targets(module, targets, layers=None, exclude=None):
    """HF PEFT's matching: a string is a regular expression the whole name must match ("all-linear": every Linear
    but the output head); a list matches a name equal to an entry or ending in "." + entry; layers_to_transform
    keeps the listed layer indices; exclude_modules (a regex or a list, read the same way) removes names first."""
    if isinstance(exclude, str) and re.fullmatch(exclude, module):
        return False
    if isinstance(exclude, list) and any(module == e or module.endswith("." + e) for e in exclude):
        return False
    if layers is not None:
        found = re.search(r"(^|\.)(layers|s4_layers)\.(\d+)\.", module)
        if not found or int(found.group(3)) not in layers:
            return False
    if targets == "all-linear":
        return re.search(r"(in_proj|x_proj|dt_proj|out_proj)$", module) is not None
    if isinstance(targets, str):
        return re.fullmatch(targets, module) is not None
    return any(module == t or module.endswith("." + t) for t in targets)


def lora_scale(cfg_json, module, r):
    """The module's s: lora_alpha (or its alpha_pattern value) / r, or / sqrt(r) under rsLoRA."""
    alpha = hf_pattern_value(cfg_json.get("alpha_pattern"), module, cfg_json["lora_alpha"])
    return alpha / (math.sqrt(r) if cfg_json.get("use_rslora") else r)


def weight_init_start(weight, init, r, s):
    """HF's PiSSA / OLoRA start (A0 [r, in], B0 [out, r]) of a weight as the program reads it (float32 values)."""
    W = weight.astype(np.float32).astype(np.float64)
    if init == "pissa":
        U, S, Vh = np.linalg.svd(W, full_matrices=False)
        root = np.sqrt(S[:r] / s)
        return root[:, None] * Vh[:r], U[:, :r] * root[None, :]
    Q, R = np.linalg.qr(W)
    return R[:r], Q[:, :r]


def lora_adapter(rng, w, cfg, targets, r=3, alpha=5.0, rslora=False, layers=None, rank_pattern=None,
                 alpha_pattern=None, exclude=None, modules_to_save=None, dora=False, bias=None, lora_bias=False,
                 init=None):
    """HF LoRA tensors for every module matching the targets (each module's rank from rank_pattern as HF resolves
    it); B non-zero so the adapter acts. bias "all" / "lora_only": trained biases as HF's state dict names them (a
    target's own bias under <module>.base_layer.bias); lora_bias: a bias on each lora_B; init: init_lora_weights
    ("pissa" / "olora": the base weights of the Linear targets become W - s B0 A0 on load, as in HF)."""
    cfg_json = {"peft_type": "LORA", "r": r, "lora_alpha": alpha, "target_modules": targets, "use_rslora": rslora}
    for key, value in (("layers_to_transform", layers), ("rank_pattern", rank_pattern),
                       ("alpha_pattern", alpha_pattern), ("exclude_modules", exclude),
                       ("modules_to_save", modules_to_save), ("use_dora", dora or None), ("bias", bias),
                       ("lora_bias", lora_bias or None), ("init_lora_weights", init)):
        if value is not None:
            cfg_json[key] = value
    tensors = {}
    for name in sorted(w):
        if not name.endswith(".weight"):
            continue
        module = name[:-len(".weight")]
        if not hf_targets(module, targets, layers, exclude):
            continue
        r = hf_pattern_value(rank_pattern, module, cfg_json["r"])
        shape = w[name].shape
        if module.endswith("embeddings"):
            tensors[module + ".lora_embedding_A"] = rng.normal(0, 0.3, size=(r, shape[0]))
            tensors[module + ".lora_embedding_B"] = rng.normal(0, 0.3, size=(shape[1], r))
            if dora:
                tensors[module + ".lora_magnitude_vector"] = rng.uniform(0.5, 2.0, size=shape[1])
        elif len(shape) == 3:  # 1x1 Conv1d
            tensors[module + ".lora_A.weight"] = rng.normal(0, 0.3, size=(r, shape[1], 1))
            tensors[module + ".lora_B.weight"] = rng.normal(0, 0.3, size=(shape[0], r, 1))
            if dora:  # HF's conv magnitude is [1, out, 1]
                tensors[module + ".lora_magnitude_vector"] = rng.uniform(0.5, 2.0, size=(1, shape[0], 1))
        elif init in ("pissa", "olora"):  # a trained adapter near its start (HF's A0, B0 from numpy's factorisation)
            A0, B0 = weight_init_start(w[name], init, r, lora_scale(cfg_json, module, r))
            tensors[module + ".lora_A.weight"] = A0 + rng.normal(0, 0.1, size=A0.shape)
            tensors[module + ".lora_B.weight"] = B0 + rng.normal(0, 0.1, size=B0.shape)
            if dora:
                tensors[module + ".lora_magnitude_vector"] = rng.uniform(0.5, 2.0, size=shape[0])
        else:
            tensors[module + ".lora_A.weight"] = rng.normal(0, 0.3, size=(r, shape[1]))
            tensors[module + ".lora_B.weight"] = rng.normal(0, 0.3, size=(shape[0], r))
            if dora:  # a magnitude away from the row norms, so that m / n differs from 1
                tensors[module + ".lora_magnitude_vector"] = rng.uniform(0.5, 2.0, size=shape[0])
        if lora_bias and not module.endswith("embeddings"):
            tensors[module + ".lora_B.bias"] = rng.normal(0, 0.3, size=shape[0])
    # modules_to_save (HF): every parameter of a module whose name ends with an entry, trained as a copy
    modules = {n.rsplit(".", k)[0] for n in w for k in range(1, n.count(".") + 1)}
    saved = set()
    for module in sorted(m for m in modules if any(m.endswith(e) for e in (modules_to_save or []))):
        for name in sorted(n for n in w if n.startswith(module + ".")):
            tensors[name] = w[name] + rng.normal(0, 0.2, size=w[name].shape)
            saved.add(name)
    targets_hit = {n[:-len(".weight")] for n in w if n.endswith(".weight") and
                   hf_targets(n[:-len(".weight")], targets, layers, exclude)}
    for name in sorted(w):
        module = name[:-len(".bias")] if name.endswith(".bias") else None
        chosen = (bias == "all" and "bias" in name) or (bias == "lora_only" and module in targets_hit)
        if chosen and name not in saved:
            file_name = module + ".base_layer.bias" if module in targets_hit else name
            tensors[file_name] = w[name] + rng.normal(0, 0.3, size=w[name].shape)
    return cfg_json, tensors


def tokens_adapter(rng, w, cfg, indices, targets=None, lora_targets=None, init=True):
    """Trainable tokens: TRAINABLE_TOKENS on `targets` (None: the input embedding), or with lora_targets a LoRA whose
    trainable_token_indices is `indices` (a list: the input embedding; a dict {module: list}). Rows near the
    matrix's own (a trained start) or, init False, N(0, 1) as HF's init_weights=False."""
    def rows(module, idx):
        W = w[module + ".weight"]
        return W[idx] + rng.normal(0, 0.3, size=(len(idx), W.shape[1])) if init else rng.normal(size=(len(idx), W.shape[1]))
    if lora_targets is None:
        cfg_json = {"peft_type": "TRAINABLE_TOKENS", "token_indices": indices, "init_weights": init}
        if targets is not None:
            cfg_json["target_modules"] = targets
        modules = ["backbone.embeddings"] if targets is None else [m for m in ("backbone.embeddings", "lm_head")
                                                                   if any(m.endswith(t) for t in targets)]
        return cfg_json, {m + ".trainable_tokens_delta": rows(m, indices) for m in modules}
    cfg_json, tensors = lora_adapter(rng, w, cfg, lora_targets, r=2, alpha=3.0)
    cfg_json["trainable_token_indices"] = indices
    spec = indices if isinstance(indices, dict) else {"embeddings": indices}
    for key, idx in spec.items():
        module = "lm_head" if key == "lm_head" else "backbone.embeddings"
        tensors[module + ".token_adapter.trainable_tokens_delta"] = rows(module, idx)
    return cfg_json, tensors


def param_lora_adapter(rng, w, cfg, params, modules=(), r=2, alpha=3.0, rslora=False, rank_pattern=None):
    """LoRA on parameters (HF's target_parameters) beside LoRA on `modules`: for each parameter named by `params`
    (a full name or a suffix at a '.'), A [r·E, in] and B [out, r·E] named after its module (E = 1 for a 2-D
    [out, in] parameter; [E, in, out] for a 3-D one), both non-zero."""
    cfg_json, tensors = lora_adapter(rng, w, cfg, list(modules), r=r, alpha=alpha, rslora=rslora, rank_pattern=rank_pattern)
    cfg_json["target_parameters"] = list(params)
    for key in sorted(w):
        if not any(key == t or key.endswith("." + t) for t in params):
            continue
        module, shape = key.rpartition(".")[0], w[key].shape
        rk = hf_pattern_value(rank_pattern, key, r)
        E, n_in, n_out = (shape[0], shape[1], shape[2]) if len(shape) == 3 else (1, shape[1], shape[0])
        tensors[module + ".lora_A.weight"] = rng.normal(0, 0.3, size=(rk * E, n_in))
        tensors[module + ".lora_B.weight"] = rng.normal(0, 0.3, size=(n_out, rk * E))
    return cfg_json, tensors


def partial_adapter(rng, w, names, layers=None):
    """PARTIAL (ssm-peft's layer_freeze): new values for every parameter an entry names - a run of whole
    dot-separated parts of its name (the full name, a suffix like "D", a module like "conv1d" or "encoder")."""
    cfg_json = {"peft_type": "PARTIAL", "param_names": names}
    if layers is not None:
        cfg_json["layers_to_transform"] = layers
    chosen = [n for n in sorted(w) if any(("." + e + ".") in ("." + n + ".") for e in names)]
    if layers is not None:
        chosen = [n for n in chosen if any(".layers.%d." % l in n or n.startswith("s4_layers.%d." % l) for l in layers)]
    return cfg_json, {n: w[n] + rng.normal(0, 0.2, size=w[n].shape) for n in chosen}


def additional_scan_adapter(rng, cfg, k, layers=None):
    """Additional-scan: per layer A_log_ext [E, k] (spread decays), x_proj_B_ext and x_proj_C_ext [k, E], all
    non-zero."""
    E = cfg["intermediate_size"]
    cfg_json = {"peft_type": "ADDITIONAL_SCAN", "d_state": k}
    if layers is not None:
        cfg_json["layers_to_transform"] = layers
    tensors = {}
    for i in (layers if layers is not None else range(cfg["num_hidden_layers"])):
        m = "backbone.layers.%d.mixer." % i
        tensors[m + "A_log_ext"] = rng.uniform(-1.0, 2.5, size=(E, k))
        tensors[m + "x_proj_B_ext"] = rng.normal(0, 0.4, size=(k, E))
        tensors[m + "x_proj_C_ext"] = rng.normal(0, 0.4, size=(k, E))
    return cfg_json, tensors


def low_rank_offset_adapter(rng, cfg, r):
    """STATE_OFFSET h with rank r: h' = B_r A_r per layer, B_r [E, r] and A_r [r, N] (S4D: [H, r], [r, N/2, 2])."""
    lm = "num_hidden_layers" in cfg
    layers = cfg["num_hidden_layers"] if lm else cfg["n_layers"]
    E = cfg["intermediate_size"] if lm else cfg["d_model"]
    a_shape = (r, cfg["state_size"]) if lm else (r, cfg["d_state"] // 2, 2)
    tensors = {}
    for i in range(layers):
        pre = ("backbone.layers.%d.mixer." if lm else "s4_layers.%d.") % i
        tensors[pre + "state_offset_lora_A"] = rng.normal(0, 0.5, size=a_shape)
        tensors[pre + "state_offset_lora_B"] = rng.normal(0, 0.5, size=(E, r))
    return {"peft_type": "STATE_OFFSET", "variant": "h", "r": r}, tensors


def per_layer_adapter(rng, cfg, peft_type, name, shape_of, extra=None):
    layers = cfg.get("num_hidden_layers", cfg.get("n_layers"))
    where = "backbone.layers.%d.mixer." if "num_hidden_layers" in cfg else "s4_layers.%d."
    tensors = {(where % i) + name: rng.normal(0, 0.4, size=shape_of) for i in range(layers)}
    return dict({"peft_type": peft_type}, **(extra or {})), tensors


def initial_state_with_conv(rng, cfg):
    """INITIAL_STATE with ssm-peft's conv initial state: per layer h0 [E, N] and c0 [E, K-1]."""
    E, N, K = cfg["intermediate_size"], cfg["state_size"], cfg["conv_kernel"]
    tensors = {}
    for i in range(cfg["num_hidden_layers"]):
        tensors["backbone.layers.%d.mixer.initial_state" % i] = rng.normal(0, 0.4, size=(E, N))
        tensors["backbone.layers.%d.mixer.conv_initial_state" % i] = rng.normal(0, 0.6, size=(E, K - 1))
    return {"peft_type": "INITIAL_STATE", "conv_init_state": True}, tensors


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
            (m + " LORA every projection, layers_to_transform [0]",  # HF refuses layers with "all-linear"
             lm_with(m, lambda g, w, c: lora_adapter(g, w, c, ["in_proj", "x_proj", "dt_proj", "out_proj"],
                                                     layers=[0]), tied=False)),
            (m + " LORA rank_pattern + alpha_pattern + exclude_modules list",
             lm_with(m, lambda g, w, c: lora_adapter(
                 g, w, c, ["in_proj", "x_proj", "dt_proj", "out_proj", "embeddings"], r=2, alpha=3.0,
                 rank_pattern={"layers.1.mixer.in_proj": 5, "x_pro.": 1, "embeddings": 4},
                 alpha_pattern={"out_proj": 7.0, "backbone.layers.0.mixer.x_proj": 0.5},
                 exclude=["layers.0.mixer.dt_proj"]))),
            (m + " LORA in_proj + modules_to_save lm_head, dt_proj",
             lm_with(m, lambda g, w, c: lora_adapter(g, w, c, ["in_proj"], r=2,
                                                     modules_to_save=["lm_head", "dt_proj"]), tied=False)),
            (m + " LORA DoRA in_proj, out_proj, dt_proj",
             lm_with(m, lambda g, w, c: lora_adapter(g, w, c, ["in_proj", "out_proj", "dt_proj"], r=2, dora=True),
                     use_bias=True)),
            (m + " LORA DoRA embeddings, x_proj (tied)",
             lm_with(m, lambda g, w, c: lora_adapter(g, w, c, ["embeddings", "x_proj"], r=2, dora=True))),
            (m + " LORA rslora rank_pattern, exclude_modules regex",
             lm_with(m, lambda g, w, c: lora_adapter(
                 g, w, c, "all-linear", r=3, alpha=4.0, rslora=True, rank_pattern={"out_proj": 6},
                 alpha_pattern={"mixer.in_proj": 9.0}, exclude=r".*layers\.1\.mixer\.(x|dt)_proj"),
                     tied=False)),
            (m + " LORA bias all + lora_bias, projection biases",
             lm_with(m, lambda g, w, c: lora_adapter(g, w, c, ["in_proj", "dt_proj", "out_proj"], r=2, bias="all",
                                                     lora_bias=True), use_bias=True)),
            (m + " LORA bias lora_only, dt_proj + x_proj",
             lm_with(m, lambda g, w, c: lora_adapter(g, w, c, ["dt_proj", "x_proj"], r=2, bias="lora_only"))),
            (m + " LORA PiSSA in/x/out_proj + embedding",
             lm_with(m, lambda g, w, c: lora_adapter(g, w, c, ["in_proj", "x_proj", "out_proj", "embeddings"], r=3,
                                                     init="pissa"))),
            (m + " LORA OLoRA rslora rank_pattern, untied head",
             lm_with(m, lambda g, w, c: lora_adapter(g, w, c, ["in_proj", "dt_proj", "lm_head"], r=1, alpha=3.0,
                                                     rslora=True, rank_pattern={"in_proj": 4}, init="olora"),
                     tied=False)),
            (m + " LORA PiSSA + DoRA x_proj, out_proj",
             lm_with(m, lambda g, w, c: lora_adapter(g, w, c, ["x_proj", "out_proj"], r=2, dora=True, init="pissa"))),
            (m + " STATE_OFFSET h",
             lm_with(m, lambda g, w, c: per_layer_adapter(g, c, "STATE_OFFSET", "state_offset",
                                                          (E(c), c["state_size"]), {"variant": "h"}))),
            (m + " STATE_OFFSET h low rank r=2",
             lm_with(m, lambda g, w, c: low_rank_offset_adapter(g, c, 2))),
            (m + " STATE_OFFSET y",
             lm_with(m, lambda g, w, c: per_layer_adapter(g, c, "STATE_OFFSET", "output_offset", (E(c),),
                                                          {"variant": "y"}))),
            (m + " INITIAL_STATE",
             lm_with(m, lambda g, w, c: per_layer_adapter(g, c, "INITIAL_STATE", "initial_state",
                                                          (E(c), c["state_size"])))),
            (m + " INITIAL_STATE + conv_init_state",
             lm_with(m, lambda g, w, c: initial_state_with_conv(g, c), K=4)),
            (m + " PREFIX 3",
             lm_with(m, lambda g, w, c: per_layer_adapter(g, c, "PREFIX", "prefix", (3, E(c)),
                                                          {"num_virtual_tokens": 3}))),
            (m + " PROMPT 4",
             lm_with(m, lambda g, w, c: ({"peft_type": "PROMPT", "num_virtual_tokens": 4},
                                         {"prompt_embeddings": g.normal(0, 0.5, size=(4, c["hidden_size"]))}))),
            (m + " PARALLEL_ADAPTER gelu",
             lm_with(m, lambda g, w, c: per_layer_adapter_pa(g, c))),
            (m + " PARTIAL conv1d, D, dt_proj.bias in layer 1",
             lm_with(m, lambda g, w, c: partial_adapter(g, w, ["conv1d", "D", "dt_proj.bias"], layers=[1]))),
            (m + " BITFIT",
             lm_with(m, lambda g, w, c: ({"peft_type": "BITFIT"},
                                         {n: g.normal(0, 0.5, size=w[n].shape) for n in w if n.endswith(".bias")}),
                     use_bias=True)),
        ]
    out.append(("mamba ADDITIONAL_SCAN k=3", lm_with("mamba", lambda g, w, c: additional_scan_adapter(g, c, 3))))
    out.append(("mamba ADDITIONAL_SCAN k=5 layer 0, N=6", lm_with("mamba", lambda g, w, c: additional_scan_adapter(
        g, c, 5, layers=[0]), N=6)))
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
        ("s4d LORA lora_bias + bias lora_only (1x1 conv too)", s4d_with(lambda g, w, c: lora_adapter(
            g, w, c, ["encoder", "output_linear.0", "decoder"], bias="lora_only", lora_bias=True))),
        ("s4d SURM circulant lora output_linear.0", s4d_with(
            lambda g, w, c: surm_adapter(g, w, c, "circulant", "lora", ["output_linear.0", "decoder"]))),
        ("s4d SURM ldr adapter output_linear.0", s4d_with(
            lambda g, w, c: surm_adapter(g, w, c, "ldr", "adapter", ["output_linear.0"]))),
        ("s4d LORA DoRA encoder, output_linear.0, decoder", s4d_with(lambda g, w, c: lora_adapter(
            g, w, c, ["encoder", "output_linear.0", "decoder"], dora=True))),
        ("s4d LORA PiSSA encoder, decoder", s4d_with(lambda g, w, c: lora_adapter(
            g, w, c, ["encoder", "decoder"], r=2, init="pissa"))),
        ("s4d LORA OLoRA decoder", s4d_with(lambda g, w, c: lora_adapter(g, w, c, ["decoder"], r=3, init="olora"))),
        ("s4d PARTIAL kernel, encoder", s4d_with(lambda g, w, c: partial_adapter(g, w, ["kernel", "encoder"]))),
        ("s4d SDLORA pruned, zoh", s4d_with(lambda g, w, c: sdlora_s4d_adapter(g, w, c))),
        ("s4d SDLORA unpruned, bilinear, prenorm", s4d_with(lambda g, w, c: sdlora_s4d_adapter(g, w, c, prune=False),
                                                            prenorm=True, disc="bilinear")),
        ("s4d STATE_OFFSET h", s4d_with(lambda g, w, c: per_layer_adapter(
            g, c, "STATE_OFFSET", "state_offset", (H(c), M(c), 2), {"variant": "h"}), prenorm=True)),
        ("s4d STATE_OFFSET h low rank r=2", s4d_with(lambda g, w, c: low_rank_offset_adapter(g, c, 2))),
        ("s4d STATE_OFFSET y", s4d_with(lambda g, w, c: per_layer_adapter(
            g, c, "STATE_OFFSET", "output_offset", (H(c),), {"variant": "y"}))),
        ("s4d INITIAL_STATE zoh", s4d_with(lambda g, w, c: per_layer_adapter(
            g, c, "INITIAL_STATE", "initial_state", (H(c), M(c), 2)))),
        ("s4d INITIAL_STATE bilinear", s4d_with(lambda g, w, c: per_layer_adapter(
            g, c, "INITIAL_STATE", "initial_state", (H(c), M(c), 2)), disc="bilinear")),
    ]
    # LoRA adapters active together (a list: `grads --adapter A+B`, HF's set_adapter([...]))
    out += [
        ("mamba LORA x2 active together (in_proj, embeddings shared; rslora)", lm_with("mamba", lambda g, w, c: [
            lora_adapter(g, w, c, ["in_proj", "x_proj", "embeddings"], r=2),
            lora_adapter(g, w, c, ["in_proj", "dt_proj", "embeddings"], r=3, alpha=4.0, rslora=True)])),
        ("longhorn LORA lora_bias + DoRA active together, projection biases", lm_with("longhorn", lambda g, w, c: [
            lora_adapter(g, w, c, ["in_proj", "dt_proj", "out_proj"], r=2, lora_bias=True),
            lora_adapter(g, w, c, ["dt_proj", "out_proj", "embeddings"], r=2, dora=True)], use_bias=True)),
        ("mamba DoRA + LORA + DoRA active together (embeddings, x_proj, untied head)", lm_with("mamba", lambda g, w, c: [
            lora_adapter(g, w, c, ["embeddings", "x_proj"], r=2, dora=True),
            lora_adapter(g, w, c, ["embeddings", "x_proj", "lm_head"], r=1, alpha=2.0),
            lora_adapter(g, w, c, ["x_proj", "embeddings", "lm_head"], r=3, dora=True)], tied=False)),
        ("mamba PiSSA then DoRA on the same modules, active together", lm_with("mamba", lambda g, w, c: [
            lora_adapter(g, w, c, ["in_proj", "out_proj"], r=2, init="pissa"),
            lora_adapter(g, w, c, ["in_proj", "out_proj"], r=2, dora=True)])),
        ("s4d LORA lora_bias + DoRA active together (1x1 conv too)", s4d_with(lambda g, w, c: [
            lora_adapter(g, w, c, ["encoder", "output_linear.0", "decoder"], lora_bias=True),
            lora_adapter(g, w, c, ["output_linear.0", "decoder"], r=2, dora=True)])),
    ]
    # LoRA on parameters (HF's target_parameters): 2-D ones and 3-D ones in HF's experts layout
    out += [
        ("mamba LORA on A_log (target_parameters), rsLoRA, rank pattern", lm_with("mamba", lambda g, w, c: param_lora_adapter(
            g, w, c, ["A_log"], r=3, alpha=5.0, rslora=True, rank_pattern={"layers.1.mixer.A_log": 1}))),
        ("mamba LORA on conv1d.weight (3-D [E, 1, K])", lm_with("mamba", lambda g, w, c: param_lora_adapter(
            g, w, c, ["conv1d.weight"], modules=["out_proj"]))),
        ("longhorn LORA on x_proj.weight beside in_proj", lm_with("longhorn", lambda g, w, c: param_lora_adapter(
            g, w, c, ["x_proj.weight"], modules=["in_proj"]))),
        ("s4d LORA on kernel.C (3-D [H, N/2, 2])", s4d_with(lambda g, w, c: param_lora_adapter(
            g, w, c, ["kernel.C"], alpha=4.0))),
        ("s4d LORA on layer 0 log_A_real beside decoder", s4d_with(lambda g, w, c: param_lora_adapter(
            g, w, c, ["s4_layers.0.kernel.log_A_real"], modules=["decoder"]))),
    ]
    # trainable tokens (TRAINABLE_TOKENS, LoRA's trainable_token_indices): rows of the embedding / head replaced
    out += [
        ("mamba TRAINABLE_TOKENS (tied: the head reads the rows)", lm_with("mamba", lambda g, w, c: tokens_adapter(
            g, w, c, [2, 7, 3]))),
        ("longhorn TRAINABLE_TOKENS embedding + lm_head, random rows", lm_with("longhorn", lambda g, w, c: tokens_adapter(
            g, w, c, [10, 0], targets=["embeddings", "lm_head"], init=False), tied=False)),
        ("mamba LORA + trainable_token_indices (tied)", lm_with("mamba", lambda g, w, c: tokens_adapter(
            g, w, c, [1, 5], lora_targets=["in_proj", "out_proj"]))),
        ("mamba LORA + trainable_token_indices {embeddings, lm_head}", lm_with("mamba", lambda g, w, c: tokens_adapter(
            g, w, c, {"embeddings": [4], "lm_head": [6, 2, 9]}, lora_targets=["x_proj"]), tied=False)),
    ]
    # one LoRA adapter per sample (HF's adapter_names= mixed batch: `grads --per-sample A,__base__,B`)
    out += [
        ("mamba per-sample LORA a, base, b, a (untied head)", lm_with("mamba", lambda g, w, c: {
            "per_sample": [0, None, 1, 0], "adapters": [
                lora_adapter(g, w, c, ["in_proj", "x_proj", "embeddings", "lm_head"], r=2),
                lora_adapter(g, w, c, ["in_proj", "dt_proj"], r=3, alpha=4.0, rslora=True, lora_bias=True)]},
            tied=False, B=4)),
        ("longhorn per-sample LORA base, a", lm_with("longhorn", lambda g, w, c: {
            "per_sample": [None, 0], "adapters": [lora_adapter(g, w, c, "all-linear", r=2)]}, B=2)),
        ("s4d per-sample LORA a, b, b (1x1 conv too)", s4d_with(lambda g, w, c: {
            "per_sample": [0, 1, 1], "adapters": [
                lora_adapter(g, w, c, ["encoder", "output_linear.0"], r=2),
                lora_adapter(g, w, c, ["output_linear.0", "decoder"], r=3, lora_bias=True)]})),
    ]
    return out
