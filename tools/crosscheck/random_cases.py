"""The random cases of tools/crosscheck/torch_reference.py --random N (and --large): a model of random size and
options with a random adapter of any kind it takes, drawn from a numpy Generator so that a case is reproducible from
its seed. The builders are the fixed cases' (cases.py); this file only draws their arguments.
"""
from cases import (lm_case, frame_case, s4d_case, hf_targets, lora_adapter, tokens_adapter, param_lora_adapter,
                   partial_adapter, additional_scan_adapter, low_rank_offset_adapter, per_layer_adapter,
                   initial_state_with_conv, surm_adapter, sdlora_adapter, sdlora_s4d_adapter, per_layer_adapter_pa)


def _subset(g, items, at_least=1):
    """A random non-empty subset of items, in their order."""
    k = int(g.integers(at_least, len(items) + 1))
    chosen = set(g.choice(len(items), size=k, replace=False).tolist())
    return [x for i, x in enumerate(items) if i in chosen]


def random_lm_adapter(g, w, c):
    """A random adapter for a Mamba or Longhorn LM case (None: the base model alone, also when the draw selects no
    tensor here, e.g. norm_f in a layer subset); per-sample adapters come back as {"adapters": [...]} for
    assign_per_sample."""
    adapter = _draw_lm_adapter(g, w, c)
    if isinstance(adapter, dict):
        return adapter if all(a[1] for a in adapter["adapters"]) else None
    if isinstance(adapter, list):  # adapters active together: each must hold a tensor
        return adapter if all(a[1] for a in adapter) else None
    return adapter if adapter is None or adapter[1] else None


def _draw_lm_adapter(g, w, c):
    mamba, E, layers = c["model_type"] == "mamba", c["intermediate_size"], c["num_hidden_layers"]
    frame = "input_size" in c
    first = "encoder" if frame else "embeddings"
    some_layers = lambda: sorted(g.choice(layers, size=int(g.integers(1, layers + 1)), replace=False).tolist())
    kinds = ["none", "lora", "lora", "dora", "offset_h", "offset_h_r", "offset_y", "initial", "prefix",
             "parallel", "partial", "surm", "sdlora", "lora_init", "multi", "per_sample"]
    kinds.append("param_lora")
    if not frame:
        kinds += ["prompt", "tokens"]
    if c["conv_kernel"] >= 2:
        kinds.append("initial_conv")
    if c.get("use_bias") or c.get("use_conv_bias"):
        kinds.append("bitfit")
    if mamba:
        kinds.append("additional_scan")
    kind = kinds[int(g.integers(len(kinds)))]
    if kind == "none":
        return None
    if kind in ("lora", "dora"):
        modules = ["in_proj", "x_proj", "dt_proj", "out_proj"] + ([first] if kind == "lora" or not frame else [])
        if not c["tie_word_embeddings"] and g.random() < 0.3:
            modules.append("lm_head")
        targets = _subset(g, modules)
        layer_sel = some_layers() if g.random() < 0.3 else None
        if layer_sel is not None and all(t in (first, "lm_head") for t in targets):
            targets.append("out_proj")  # layers_to_transform keeps no module outside the layers
        bias = ["none", "all", "lora_only"][int(g.integers(3))] if kind == "lora" else "none"
        lora_bias = kind == "lora" and first not in targets and bool(g.random() < 0.4)
        return lora_adapter(g, w, c, targets, r=int(g.integers(1, 6)), alpha=float(g.uniform(0.5, 16)),
                            rslora=bool(g.random() < 0.3), layers=layer_sel, dora=kind == "dora",
                            bias=None if bias == "none" else bias, lora_bias=lora_bias)
    if kind == "lora_init":
        modules = ["in_proj", "x_proj", "dt_proj", "out_proj", first] + ([] if c["tie_word_embeddings"] else ["lm_head"])
        return weight_init_lora(g, w, c, _subset(g, modules))
    if kind in ("multi", "per_sample"):
        modules = ["in_proj", "x_proj", "dt_proj", "out_proj"] + ([] if c["tie_word_embeddings"] else ["lm_head"])
        if kind == "per_sample":
            return {"adapters": plain_loras(g, w, c, modules, [] if frame else [first])}
        return multi_lora(g, w, c, modules, [] if frame else [first], some_layers)
    if kind == "param_lora":  # LoRA on parameters (HF's target_parameters), one per module, beside module LoRA
        pool = (["A_log"] if mamba else []) + ["x_proj.weight", "dt_proj.weight", "conv1d.weight", "in_proj.weight"]
        params = _subset(g, pool)
        rest = [m for m in ["in_proj", "x_proj", "dt_proj", "out_proj"] if m + ".weight" not in params]
        modules = _subset(g, rest) if rest and g.random() < 0.5 else []
        r = int(g.integers(1, 4))
        return param_lora_adapter(g, w, c, params, modules=modules, r=r, alpha=float(g.uniform(0.5, 8)),
                                  rslora=bool(g.random() < 0.3))
    if kind == "tokens":  # TRAINABLE_TOKENS or a LoRA with trainable_token_indices, a few distinct ids
        V = c["vocab_size"]
        pick = lambda: sorted(g.choice(V, size=int(g.integers(1, min(V, 4) + 1)), replace=False).tolist(),
                              key=lambda _: g.random())
        untied = not c["tie_word_embeddings"]
        if g.random() < 0.5:
            targets = None if not untied or g.random() < 0.5 else _subset(g, ["embeddings", "lm_head"])
            return tokens_adapter(g, w, c, pick(), targets=targets, init=bool(g.random() < 0.7))
        spec = {"embeddings": pick(), "lm_head": pick()} if untied and g.random() < 0.5 else pick()
        return tokens_adapter(g, w, c, spec, lora_targets=_subset(g, ["in_proj", "x_proj", "dt_proj", "out_proj"]))
    if kind == "offset_h":
        return per_layer_adapter(g, c, "STATE_OFFSET", "state_offset", (E, c["state_size"]), {"variant": "h"})
    if kind == "offset_h_r":
        return low_rank_offset_adapter(g, c, int(g.integers(1, 4)))
    if kind == "offset_y":
        return per_layer_adapter(g, c, "STATE_OFFSET", "output_offset", (E,), {"variant": "y"})
    if kind == "initial":
        return per_layer_adapter(g, c, "INITIAL_STATE", "initial_state", (E, c["state_size"]))
    if kind == "initial_conv":
        return initial_state_with_conv(g, c)
    if kind == "prefix":
        n = int(g.integers(1, 6))
        return per_layer_adapter(g, c, "PREFIX", "prefix", (n, E), {"num_virtual_tokens": n})
    if kind == "prompt":
        n = int(g.integers(1, 6))
        return ({"peft_type": "PROMPT", "num_virtual_tokens": n},
                {"prompt_embeddings": g.normal(0, 0.5, size=(n, c["hidden_size"]))})
    if kind == "parallel":
        return per_layer_adapter_pa(g, c, r=int(g.integers(1, 5)))
    if kind == "partial":
        names = _subset(g, ["conv1d", "D", "dt_proj.bias", "x_proj", "norm_f"] + (["A_log"] if mamba else []))
        return partial_adapter(g, w, names, layers=some_layers() if g.random() < 0.3 else None)
    if kind == "bitfit":
        return ({"peft_type": "BITFIT"},
                {n: g.normal(0, 0.5, size=w[n].shape) for n in w if n.endswith(".bias")})
    if kind == "additional_scan":
        return additional_scan_adapter(g, c, int(g.integers(1, 5)), layers=some_layers() if g.random() < 0.3 else None)
    if kind == "surm":
        structure = ["circulant", "toeplitz", "kronecker", "ldr"][int(g.integers(4))]
        mode = "lora" if g.random() < 0.6 else "adapter"
        pool = ["in_proj", "x_proj", "dt_proj", "out_proj"] if mode == "lora" else ["in_proj", "out_proj"]
        return surm_adapter(g, w, c, structure, mode, _subset(g, pool))
    if E < 3:
        return None
    return sdlora_adapter(g, w, c, r=int(g.integers(1, 4)))


def multi_lora(g, w, c, linears, embeddings, some_layers=None):
    """2-3 LoRA adapters active together (a list; HF's set_adapter([...])) on random, overlapping targets: random r,
    alpha, rsLoRA, layer subsets, DoRA (not with lora_bias, as HF), lora_bias (not on embeddings); the first may be a
    PiSSA / OLoRA adapter (Linear targets only), which rewrites the base the others then read."""
    group = []
    for k in range(int(g.integers(2, 4))):
        if k == 0 and g.random() < 0.2:
            group.append(weight_init_lora(g, w, c, _subset(g, [m for m in linears if m != "output_linear.0"] or ["decoder"])))
            continue
        dora = bool(g.random() < 0.3)
        targets = _subset(g, linears + embeddings)
        layer_sel = some_layers() if some_layers is not None and g.random() < 0.3 else None
        if layer_sel is not None and all(t in embeddings + ["lm_head"] for t in targets):
            targets.append("out_proj")  # layers_to_transform keeps no module outside the layers
        group.append(lora_adapter(g, w, c, targets, r=int(g.integers(1, 5)), alpha=float(g.uniform(0.5, 12)),
                                  rslora=bool(g.random() < 0.3), layers=layer_sel, dora=dora,
                                  lora_bias=not dora and not any(t in embeddings for t in targets) and
                                  bool(g.random() < 0.4)))
    return group


def plain_loras(g, w, c, linears, embeddings):
    """1-2 LoRA adapters that can serve single samples (no DoRA, no in-place parts, no base-rewriting init; HF's
    mixed batch): random targets, r, alpha, rsLoRA, lora_bias."""
    out = []
    for _ in range(int(g.integers(1, 3))):
        targets = _subset(g, linears + embeddings)
        out.append(lora_adapter(g, w, c, targets, r=int(g.integers(1, 5)), alpha=float(g.uniform(0.5, 12)),
                                rslora=bool(g.random() < 0.3),
                                lora_bias=not any(t in embeddings for t in targets) and bool(g.random() < 0.4)))
    return out


def assign_per_sample(g, adapter, B):
    """Gives each of the B samples one of the adapters or the base (None), adapters renumbered by first use and the
    unused dropped; None when no sample uses one."""
    if not isinstance(adapter, dict):
        return adapter
    drawn = [None if x == len(adapter["adapters"]) else int(x) for x in g.integers(0, len(adapter["adapters"]) + 1, size=B)]
    order = [k for i, k in enumerate(drawn) if k is not None and k not in drawn[:i]]
    if not order:
        return None
    return {"per_sample": [None if k is None else order.index(k) for k in drawn],
            "adapters": [adapter["adapters"][k] for k in order]}


def weight_init_lora(g, w, c, targets):
    """A LoRA with init_lora_weights "pissa" or "olora" on random targets: a rank no larger than any targeted
    weight's smaller side (both inits take r components of it), DoRA and rsLoRA at random."""
    sides = [min(w[n].shape) for n in w if n.endswith(".weight") and len(w[n].shape) == 2
             and not n.endswith("embeddings.weight") and hf_targets(n[:-len(".weight")], targets, None, None)]
    r = int(g.integers(1, min(sides + [5]) + 1))
    return lora_adapter(g, w, c, targets, r=r, alpha=float(g.uniform(0.5, 16)), rslora=bool(g.random() < 0.3),
                        dora=bool(g.random() < 0.3), init=["pissa", "olora"][int(g.integers(2))])


def random_s4d_adapter(g, w, c):
    H, M = c["d_model"], c["d_state"] // 2
    kinds = ["none", "lora", "dora", "surm", "partial", "offset_h", "offset_h_r", "offset_y", "initial", "lora_init",
             "multi", "per_sample", "param_lora"]
    if H >= 4 and M >= 2:
        kinds.append("sdlora")
    kind = kinds[int(g.integers(len(kinds)))]
    if kind == "none":
        return None
    if kind == "lora_init":  # Linear targets only (HF refuses these inits on a Conv1d)
        return weight_init_lora(g, w, c, _subset(g, ["encoder", "decoder"]))
    if kind == "multi":
        return multi_lora(g, w, c, ["encoder", "output_linear.0", "decoder"], [])
    if kind == "per_sample":
        return {"adapters": plain_loras(g, w, c, ["encoder", "output_linear.0", "decoder"], [])}
    if kind in ("lora", "dora"):
        bias = ["none", "all", "lora_only"][int(g.integers(3))] if kind == "lora" else "none"
        return lora_adapter(g, w, c, _subset(g, ["encoder", "output_linear.0", "decoder"]), r=int(g.integers(1, 5)),
                            alpha=float(g.uniform(0.5, 8)), rslora=bool(g.random() < 0.3), dora=kind == "dora",
                            bias=None if bias == "none" else bias, lora_bias=kind == "lora" and bool(g.random() < 0.4))
    if kind == "surm":
        structure = ["circulant", "toeplitz", "kronecker", "ldr"][int(g.integers(4))]
        mode = "lora" if g.random() < 0.6 else "adapter"
        targets = _subset(g, ["output_linear.0", "decoder"]) if mode == "lora" else ["output_linear.0"]
        return surm_adapter(g, w, c, structure, mode, targets)
    if kind == "partial":
        return partial_adapter(g, w, _subset(g, ["kernel", "encoder", "D", "norms", "log_dt"]))
    if kind == "param_lora":  # one kernel parameter (2-D or the 3-D C) and/or the 3-D 1x1 conv weight, beside LoRA
        params = _subset(g, [["kernel.log_A_real", "kernel.A_imag", "kernel.C"][int(g.integers(3))],
                             "output_linear.0.weight", "decoder.weight"])
        modules = [m for m in _subset(g, ["encoder", "output_linear.0", "decoder"]) if m + ".weight" not in params]
        return param_lora_adapter(g, w, c, params, modules=modules if g.random() < 0.5 else [], r=int(g.integers(1, 4)),
                                  alpha=float(g.uniform(0.5, 8)), rslora=bool(g.random() < 0.3))
    if kind == "offset_h":
        return per_layer_adapter(g, c, "STATE_OFFSET", "state_offset", (H, M, 2), {"variant": "h"})
    if kind == "offset_h_r":
        return low_rank_offset_adapter(g, c, int(g.integers(1, 4)))
    if kind == "offset_y":
        return per_layer_adapter(g, c, "STATE_OFFSET", "output_offset", (H,), {"variant": "y"})
    if kind == "initial":
        return per_layer_adapter(g, c, "INITIAL_STATE", "initial_state", (H, M, 2))
    return sdlora_s4d_adapter(g, w, c, r=int(g.integers(1, 3)), prune=bool(g.random() < 0.5))


def random_large_case(g):
    """A Mamba or Longhorn LM of larger random size (D 16-64, E 60-199, N 8-32, L 100-599) with a random adapter."""
    kind = ["mamba", "longhorn"][int(g.integers(2))]
    D, L = int(g.integers(16, 65)), int(g.integers(100, 600))
    cfg, w, batch = lm_case(g, kind, D=D, layers=int(g.integers(1, 3)), N=int(g.integers(8, 33)), K=4,
                            R=int(g.integers(2, 8)), V=int(g.integers(20, 60)), tied=bool(g.random() < 0.5),
                            use_bias=bool(g.random() < 0.3), B=int(g.integers(1, 3)), L=L, E=int(g.integers(60, 200)))
    adapter = assign_per_sample(g, random_lm_adapter(g, w, cfg), len(next(iter(batch.values()))))
    name = "large %s D=%d E=%d N=%d L=%d %s" % (kind, D, cfg["intermediate_size"], cfg["state_size"], L,
                                                adapter_label(adapter))
    return name, cfg, w, batch, adapter


def adapter_label(adapter):
    """The adapter's type in a case name, with a LoRA init that reads the weight (PiSSA, OLoRA); adapters active
    together joined by '+'; per-sample ones as "per-sample" and each sample's adapter."""
    if not adapter:
        return "base"
    if isinstance(adapter, dict):
        return "per-sample LORA [%s]" % ",".join("-" if k is None else str(k + 1) for k in adapter["per_sample"])
    if isinstance(adapter, list):
        return "+".join(adapter_label(a) for a in adapter)
    init = adapter[0].get("init_lora_weights")
    return (adapter[0]["peft_type"] + (" " + init if isinstance(init, str) else "") +
            (" + tokens" if adapter[0].get("trainable_token_indices") is not None else "") +
            (" on parameters" if adapter[0].get("target_parameters") else ""))


def random_case(g):
    """A model of random size and options (lengths across the scan's 64-step checkpoints, channel counts across its
    8-wide groups, odd state sizes, 1-tap convolutions) with a random adapter; returns (name, cfg, w, batch,
    adapter)."""
    kind = ["mamba", "longhorn", "s4d"][int(g.choice(3, p=[0.4, 0.35, 0.25]))]
    L = int(g.integers(1, 80)) if g.random() < 0.6 else int(g.integers(60, 200))
    if kind == "s4d":
        cfg, w, batch = s4d_case(g, bool(g.random() < 0.5), "zoh" if g.random() < 0.5 else "bilinear",
                                 H=int(g.integers(1, 13)), N=2 * int(g.integers(1, 9)), layers=int(g.integers(1, 4)),
                                 d_input=int(g.integers(1, 5)), d_output=int(g.integers(2, 6)),
                                 B=int(g.integers(1, 4)), L=min(L, 64))
        adapter = assign_per_sample(g, random_s4d_adapter(g, w, cfg), len(next(iter(batch.values()))))
        desc = "H=%d N=%d layers=%d L=%d %s %s" % (cfg["d_model"], cfg["d_state"], cfg["n_layers"], min(L, 64),
                                                  "prenorm" if cfg["prenorm"] else "postnorm", cfg["discretization"])
    else:
        D = int(g.integers(1, 25))
        E = int(g.integers(1, 72)) if g.random() < 0.4 else None
        kw = dict(D=D, layers=int(g.integers(1, 4)), N=int(g.integers(1, 18)), expand=int(g.integers(1, 4)),
                  K=int(g.integers(1, 6)), R=int(g.integers(1, 5)), V=int(g.integers(2, 30)),
                  tied=bool(g.random() < 0.5), use_bias=bool(g.random() < 0.3), conv_bias=bool(g.random() < 0.7),
                  B=int(g.integers(1, 4)), L=L, E=E, eps=float([1e-5, 1e-6, 1e-3][int(g.integers(3))]),
                  dt_bias=[(-4.0, 0.5), (-7.0, -2.0), (15.0, 25.0)][int(g.integers(3))])
        frame = g.random() < 0.15
        if not frame:  # the next-token loss needs two tokens
            kw["L"] = L = max(L, 2)
        if frame:
            cfg, w, batch = frame_case(g, kind, F_in=int(g.integers(1, 5)), **{k: v for k, v in kw.items()
                                                                              if k != "tied"})
        else:
            cfg, w, batch = lm_case(g, kind, **kw)
        adapter = assign_per_sample(g, random_lm_adapter(g, w, cfg), len(next(iter(batch.values()))))
        desc = "%sD=%d E=%d N=%d K=%d R=%d L=%d" % ("frame " if frame else "", D, cfg["intermediate_size"],
                                                    cfg["state_size"], cfg["conv_kernel"], cfg["time_step_rank"], L)
    name = "random %s %s %s" % (kind, desc, adapter_label(adapter))
    return name, cfg, w, batch, adapter
