"""The PyTorch reference of tools/crosscheck/torch_reference.py: the models and the PEFT methods written plainly
in float64 autograd, independent of ssmtune's code, from the definitions the papers and reference code give.

  - Mamba-1: mamba_ssm's Mamba module with selective_scan_ref (softplus(dt + bias), A = -exp(A_log),
    a = exp(dt A), b = dt B u, y = C.h + D u, gated by SiLU(z)) inside HF MambaForCausalLM's wrapper (pre-norm
    RMSNorm blocks, norm_f, tied or untied head) with HF's shifted next-token loss;
  - Longhorn: selective_scan_online7_ref (beta = sigmoid(dt + bias), eps = beta / (1 + beta |k|^2),
    h = (1 - eps k^2) h + eps k x, y = q.h + D x) in the same block;
  - the S4D classifier of state-spaces/s4 example.py (FFT convolution, GELU, Conv1d + GLU, LayerNorm pre or post,
    mean over L, decoder), ZOH and bilinear;
  - frame models (backbone.encoder, classified at the last frame);
  - the adapters as hooks on these forwards: LoRA (HF layer semantics), SURM's dense structured matrices, the
    parallel adapter, state offsets, initial state, prompt, prefix, and SDLoRA's sparse weight deltas.
Not here: dropout (everything runs as in evaluation mode), the recurrent step mode.
"""
import math
import re

import torch
import torch.nn.functional as F


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def causal_depthwise_conv(x, w, b, c0=None):
    """x [B, L, E], w [E, 1, K], b [E] or None: nn.Conv1d(groups=E, padding=K-1) keeping the first L outputs; with a
    conv initial state c0 [E, K-1] (ssm-peft) the left padding is c0 instead of zeros (an unpadded conv over [c0; x])."""
    L, K = x.shape[1], w.shape[-1]
    if c0 is not None:
        xt = torch.cat([c0.expand(x.shape[0], -1, -1), x.transpose(1, 2)], dim=2)  # [B, E, K-1+L]
        return F.conv1d(xt, w, b, groups=x.shape[2]).transpose(1, 2)
    y = F.conv1d(x.transpose(1, 2), w, b, padding=K - 1, groups=x.shape[2])[..., :L]
    return y.transpose(1, 2)


def linear(p, prefix, x, lora):
    """x W^T (+ b), then what an adapter attaches to this module (module_hooks)."""
    y = x @ p[prefix + ".weight"].T
    if prefix + ".bias" in p:
        y = y + p[prefix + ".bias"]
    return module_hooks(lora, prefix, x, y)


def module_hooks(lora, prefix, x, y):
    """lora[prefix]: ("delta", f) adds f(x, out_features) (LoRA's s B A x, SURM's lora mode); ("after", f) maps y to
    f(y) (SURM's adapter mode); ("dora", f) maps y to f(x, y) (HF's DoRA variant, which reads the output so far). A
    list of them (adapters active together, HF's set_adapter([...])) applies in order. x and y with features last."""
    entries = lora.get(prefix, [])
    for kind, f in (entries if isinstance(entries, list) else [entries]):
        if kind == "delta":
            y = y + f(x, y.shape[-1])
        elif kind == "dora":
            y = f(x, y)
        else:
            y = f(y)
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
    u = F.silu(causal_depthwise_conv(x, p[m + ".conv1d.weight"], p.get(m + ".conv1d.bias"),
                                     hooks.get(m + ".conv_initial_state")))
    x_dbl = linear(p, m + ".x_proj", u, lora)
    dt_low, Bm, Cm = x_dbl[..., :R], x_dbl[..., R:R + N], x_dbl[..., R + N:]
    dt_raw = linear(p, m + ".dt_proj", dt_low, lora)  # bias included
    A_log = p.get(m + ".A_log")
    if m + ".A_log_ext" in hooks:  # Additional-scan: a Mamba with N + k states, the added B, C rows applied to u
        A_log = torch.cat([A_log, hooks[m + ".A_log_ext"]], dim=1)
        Bm = torch.cat([Bm, u @ hooks[m + ".x_proj_B_ext"].T], dim=-1)
        Cm = torch.cat([Cm, u @ hooks[m + ".x_proj_C_ext"].T], dim=-1)
        N = A_log.shape[1]
    Bt, L, E = u.shape
    h = hooks.get(m + ".initial_state", torch.zeros(E, N)).expand(Bt, E, N)
    offset = hooks.get(m + ".state_offset")
    if m + ".state_offset_lora_B" in hooks:  # low-rank state offset h' = B_r A_r
        offset = hooks[m + ".state_offset_lora_B"] @ hooks[m + ".state_offset_lora_A"]
    ys = []
    if cfg["model_type"] == "mamba":
        dt = F.softplus(dt_raw)  # threshold 20, as the kernel
        A = -torch.exp(A_log)
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
    entries = lora.get("backbone.embeddings", [])
    for _, params in (entries if isinstance(entries, list) else [entries]):  # HF LoRA Embedding, adapters in order
        A, B, s = params[:3]
        if len(params) == 4:  # DoRA (HF's DoraEmbeddingVariant): result = (m/n) result + (m/n) s A^T[ids] B^T
            m = params[3]
            E = p["backbone.embeddings.weight"]
            scale = m / torch.linalg.norm(E.T + s * (B @ A).detach(), dim=1).detach()  # [D], norms over the vocabulary
            h = scale * h + scale * (s * (A.T[ids] @ B.T))
        else:  # E[ids] + s * (A^T[ids]) B^T
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
    logits = module_hooks(lora, "lm_head", h, h @ head.T)
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
    l = torch.arange(L, dtype=torch.get_default_dtype())  # float64 unless a float32 run measures conditioning
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
        if s + ".state_offset_lora_B" in hooks:  # low-rank h' = B_r A_r, A_r [r, M, 2]
            B_r, A_r = hooks[s + ".state_offset_lora_B"], hooks[s + ".state_offset_lora_A"]
            hooks = dict(hooks)
            hooks[s + ".state_offset"] = (B_r @ A_r.reshape(A_r.shape[0], -1)).reshape(B_r.shape[0], -1, 2)
        if s + ".state_offset" in hooks:  # + 2 Re sum_n C_n h'_n, per channel
            ho = hooks[s + ".state_offset"]
            y = y + 2 * (C * torch.complex(ho[..., 0], ho[..., 1])).sum(-1).real[:, None]
        if s + ".initial_state" in hooks:  # + 2 Re sum_n C_n abar_n^{t+1} h0_n
            h0 = hooks[s + ".initial_state"]
            powers = torch.exp(torch.log(abar)[..., None] * torch.arange(1, L + 1, dtype=torch.get_default_dtype()))
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


def hf_pattern_value(pattern, module, default):
    """HF PEFT's rank_pattern / alpha_pattern lookup (get_pattern_key): the first key, in order, such that the
    module's full name matches (.*\\.)?(key)$; the config's r / lora_alpha when none does."""
    for key, value in (pattern or {}).items():
        if re.match(r"(.*\.)?(%s)$" % key, module):
            return value
    return default


def dora_hook(W, bias, A, B, s, m):
    """HF's DoraLinearVariant in eval mode: result + (m/n - 1) * (result - bias) + (m/n) * s B A x, n = ||W + s B A||
    per output row, detached; `result` is the module's output so far (W x + bias alone, or with the adapters active
    before this one: HF passes it as base_result). bias() gives the module's bias when called (a trained one under
    LoRA's "bias"), or None."""
    n = torch.linalg.norm(W + s * (B @ A).detach(), dim=1).detach()
    scale = m / n

    def hook(x, y):
        b = bias()
        return y + (scale - 1) * (y - (0 if b is None else b)) + scale * (s * ((x @ A.T) @ B.T))
    return hook


def hf_weight_init_residual(p, cfg_json, tensors):
    """HF's pissa_init / olora_init, run again when an adapter with init_lora_weights "pissa" / "olora" loads: the
    base weight of each Linear target becomes W - s B0 A0 (PiSSA: S_r / s split as sqrt into A0 = diag V_r^T,
    B0 = U_r diag, from torch.linalg.svd; OLoRA: A0 = R[:r], B0 = Q[:, :r] from torch.linalg.qr), then the file's A
    and B act on it. s B0 A0 does not depend on the factorisations' sign conventions."""
    init = cfg_json.get("init_lora_weights", True)
    if init not in ("pissa", "olora"):
        return
    for name in tensors:
        if not name.endswith(".lora_A.weight") or tensors[name].dim() != 2:
            continue
        module = name[:-len(".lora_A.weight")]
        r = hf_pattern_value(cfg_json.get("rank_pattern"), module, cfg_json["r"])
        alpha = hf_pattern_value(cfg_json.get("alpha_pattern"), module, cfg_json["lora_alpha"])
        s = alpha / (math.sqrt(r) if cfg_json.get("use_rslora") else r)
        W = p[module + ".weight"]
        if init == "pissa":
            V, S, Uh = torch.linalg.svd(W, full_matrices=False)
            Sr = S[:r] / s
            A0, B0 = torch.diag(torch.sqrt(Sr)) @ Uh[:r], V[:, :r] @ torch.diag(torch.sqrt(Sr))
        else:
            Q, R = torch.linalg.qr(W)
            A0, B0 = R[:r], Q[:, :r]
        p[module + ".weight"] = W - s * B0 @ A0


def hf_trainable_tokens(p, cfg_json, tensors):
    """HF's TrainableTokensLayer (TRAINABLE_TOKENS, or LoRA's trainable_token_indices): the module's weight becomes
    W.index_copy(0, indices, rows) for the embedding lookup and, on a tied model, for the head too (HF ties a second
    layer to the rows; lm_forward's tied head reads the embedding's weight); an lm_head target likewise."""
    spec = cfg_json.get("token_indices") if cfg_json["peft_type"] == "TRAINABLE_TOKENS" else cfg_json["trainable_token_indices"]
    for name, rows in tensors.items():
        if not name.endswith("trainable_tokens_delta"):
            continue
        module = name[:-len(".trainable_tokens_delta")]
        module = module[:-len(".token_adapter")] if module.endswith(".token_adapter") else module
        if isinstance(spec, dict):
            indices = next(v for k, v in spec.items() if module.endswith(k))
        else:
            indices = spec
        p[module + ".weight"] = p[module + ".weight"].index_copy(0, torch.tensor(indices), rows)


def hf_param_lora(p, cfg_json, tensors):
    """HF's lora.ParamWrapper (target_parameters): each targeted parameter P (key "<module>.<param>" equal to an
    entry or ending in "." + entry) becomes P + s * delta while its module runs: B @ A for a 2-D P, and for a 3-D
    P [experts, in, out] einsum("o r e, e r i -> e i o", B.reshape(out, r, E), A.reshape(E, r, in)). r and alpha
    from rank_pattern / alpha_pattern by the key. Returns the tensor names it consumed."""
    used = set()
    for key in sorted(p):
        if not any(key == t or key.endswith("." + t) for t in cfg_json.get("target_parameters") or []):
            continue
        module = key.rpartition(".")[0]
        A, B = tensors[module + ".lora_A.weight"], tensors[module + ".lora_B.weight"]
        r = hf_pattern_value(cfg_json.get("rank_pattern"), key, cfg_json["r"])
        alpha = hf_pattern_value(cfg_json.get("alpha_pattern"), key, cfg_json["lora_alpha"])
        s = alpha / (math.sqrt(r) if cfg_json.get("use_rslora") else r)
        P = p[key]
        if P.dim() == 2:
            delta = B @ A
        else:
            E, n_in, n_out = P.shape
            delta = torch.einsum("ore,eri->eio", B.reshape(n_out, r, E), A.reshape(E, r, n_in))
        p[key] = P + s * delta
        used.update({module + ".lora_A.weight", module + ".lora_B.weight"})
    return used


def split_adapter(cfg_json, tensors, cfg, p=None):
    """Turns adapter tensors (torch leaves) into the forward's hooks / lora / parallel-adapter dictionaries."""
    hooks, lora, adapters = {}, {}, {}
    if cfg_json["peft_type"] == "SURM":
        for name, t in tensors.items():
            module = name.partition(".surm.")[0]
            lora.setdefault(module, {})[name.partition(".surm.")[2]] = t
        for module, params in list(lora.items()):
            lora[module] = surm_hook(cfg_json, params)
    elif cfg_json["peft_type"] in ("LORA", "SDLORA"):
        for name, t in tensors.items():
            for a_suffix, b_suffix in ((".lora_A.weight", ".lora_B.weight"),
                                       (".lora_embedding_A", ".lora_embedding_B")):
                if name.endswith(a_suffix):
                    module = name[:-len(a_suffix)]
                    r = hf_pattern_value(cfg_json.get("rank_pattern"), module, cfg_json["r"])
                    alpha = hf_pattern_value(cfg_json.get("alpha_pattern"), module, cfg_json["lora_alpha"])
                    s = alpha / (math.sqrt(r) if cfg_json.get("use_rslora") else r)
                    A, B = t, tensors[module + b_suffix]
                    W = p[module + ".weight"] if p is not None and module + ".weight" in p else None
                    bias = lambda module=module: p.get(module + ".bias") if p is not None else None
                    if A.dim() == 3:  # a 1x1 Conv1d's [r, in, 1], [out, r, 1]
                        A, B, W = A[..., 0], B[..., 0], W[..., 0]
                    if a_suffix == ".lora_embedding_A":
                        mag = tensors.get(module + ".lora_magnitude_vector")
                        lora[module] = ("embedding", (A, B, s) if mag is None else (A, B, s, mag))
                    elif module + ".lora_magnitude_vector" in tensors:  # DoRA
                        lora[module] = ("dora", dora_hook(W, bias, A, B, s,  # magnitude [out], conv [1, out, 1]
                                                          tensors[module + ".lora_magnitude_vector"].reshape(-1)))
                    else:  # HF's lora_bias: lora_B carries a bias, scaled with the product
                        bB = tensors.get(module + ".lora_B.bias")
                        lora[module] = ("delta", lambda x, fout, A=A, B=B, s=s, bB=bB:
                                        s * ((x @ A.T) @ B.T + (0 if bB is None else bB)))
    elif cfg_json["peft_type"] == "PARALLEL_ADAPTER":
        for name, t in tensors.items():
            module, _, rest = name.partition(".adapter.")
            adapters.setdefault(module, {"activation": cfg_json["activation"], "scaling": cfg_json["scaling"]})[rest] = t
    else:
        hooks = dict(tensors)
    return hooks, lora, adapters


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
