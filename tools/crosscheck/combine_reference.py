#!/usr/bin/env python3
"""Cross-check of `ssmtune combine` (peft::AdapterSet::add_weighted_adapter) against HF PEFT's add_weighted_adapter
written again in plain PyTorch (float64) from its semantics:

  - the new rank: cat the sum of the adapters' ranks (r, or the largest rank_pattern value), linear / ties / dare /
    magnitude_prune their common rank, the *svd types svd_rank or the largest; one adapter is always linear;
  - per module, with weight w_i and the module's scale s_i of each adapter that has a LoRA there:
    cat: A = cat(w_i s_i A_i) over rows, B = cat(B_i) over columns (zero beyond);
    linear family: A = merge(A_i, sign(w_i s_i) sqrt|w_i s_i|), B = merge(B_i, sqrt|w_i s_i|);
    svd family: D = merge(s_i B_i A_i, w_i s_i) (get_delta_weight holds s_i already), torch.linalg.svd(D),
    B = U_k diag(S_k), A = Vh_k, clamped to +-torch.quantile(cat(B, A), svd_clamp) when given;
  - merge = merge_utils' task_arithmetic, magnitude_prune (torch.topk), ties (sign elected from the unweighted pruned
    tensors, disjoint mean);
  - the config: the first adapter's, r = lora_alpha = the new rank, use_rslora false, target_modules the union.

Compared: the config fields, the tensor names, and A, B elementwise (for the svd types B A, and A, B after
flipping torch's singular vectors to ssmtune's documented sign rule: each U column's largest entry positive), to
1e-5 of each tensor's largest magnitude (the files are float32). Where a kept singular value is repeated or zero
(a rank above the module's ΔW rank) its vectors are any basis of their space, in torch as in ssmtune: those modules
are compared by B A only, and not at all when clamped (the quantile sees the basis); so are clamped modules whose
quantile falls on entries that are zero in exact arithmetic (a pruned ΔW's empty rows): the threshold is then
rounding noise of either sign, in torch as in ssmtune. DARE's random masks are not torch's draws and are
not compared here (tests/peft/test_peft_weighted_adapter.cpp checks their semantics).

usage: combine_reference.py --ssmtune build/tools/ssmtune [--random N [--seed S]] [--keep DIR]
Exit 0 when every case agrees, 1 when one does not, 77 when PyTorch is absent.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

TOL = 1e-5

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# torch_reference checks for PyTorch first (exit 77 without it) and sets float64 as the default dtype
from torch_reference import load_safetensors, save_safetensors, write_adapter_dir  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from cases import lm_case, lora_adapter, lora_scale, s4d_case  # noqa: E402

LINEAR_FAMILY = ("linear", "ties", "dare_linear", "dare_ties", "magnitude_prune")


# ------------------------------------------------------------------------------------------ HF's merge_utils, again
def magnitude_prune_one(t, density):
    if density >= 1:
        return t
    k = int(density * t.numel())
    mask = torch.zeros(t.numel())
    if k > 0:
        mask[torch.topk(t.abs().reshape(-1), k=k).indices] = 1
    return t * mask.reshape(t.shape)


def merge(how, tensors, weights, density, sign_method):
    if how != "linear":
        tensors = [magnitude_prune_one(t, density) for t in tensors]
    stacked = torch.stack(tensors)
    w = torch.tensor(weights).reshape((-1,) + (1,) * (stacked.dim() - 1))
    if how in ("linear", "magnitude_prune"):
        return (stacked * w).sum(0)
    votes = stacked.sum(0) if sign_method == "total" else stacked.sign().sum(0)
    agree = stacked.sign() == torch.where(votes >= 0, 1.0, -1.0)
    return (stacked * w * agree).sum(0) / agree.sum(0).clamp(min=1)


def hf_combine(adapters, weights, ctype, svd_rank=None, clamp=None, density=None, sign_method="total"):
    """adapters: [(config, {name: float64 array})]; returns (new config fields, {name: array})."""
    ctype = "linear" if len(adapters) == 1 else ctype
    ranks = [max([c["r"]] + list((c.get("rank_pattern") or {}).values())) for c, _ in adapters]
    if ctype == "cat":
        new_rank = sum(ranks)
    elif ctype.endswith("svd"):
        new_rank = svd_rank or max(ranks)
    else:
        new_rank = ranks[0]
    targets = []
    for c, _ in adapters:
        targets += [t for t in c["target_modules"] if t not in targets]
    modules = []
    for _, t in adapters:
        modules += [n.rsplit(".lora", 1)[0] for n in sorted(t) if ".lora_" in n and "_A" in n.rsplit(".lora", 1)[1]]
    modules = sorted(set(modules))
    out, undetermined = {}, set()
    for m in modules:
        present = []
        for (c, t), wgt in zip(adapters, weights):
            a_name = m + ".lora_embedding_A" if m + ".lora_embedding_A" in t else m + ".lora_A.weight"
            b_name = a_name.replace("_A", "_B")
            if a_name not in t:
                continue
            A, B = torch.tensor(t[a_name]), torch.tensor(t[b_name])
            present.append((A, B, wgt, lora_scale(c, m, A.shape[0]), a_name, b_name))
        conv = present[0][0].dim() == 3
        flat = [(A.reshape(A.shape[0], -1), B.reshape(B.shape[0], -1), w, s) for A, B, w, s, _, _ in present]
        n, rows = flat[0][0].shape[1], flat[0][1].shape[0]
        if ctype == "cat":
            A = torch.zeros(new_rank, n)
            B = torch.zeros(rows, new_rank)
            at = 0
            for a, b, w, s in flat:
                A[at:at + a.shape[0]] = a * w * s
                B[:, at:at + a.shape[0]] = b
                at += a.shape[0]
        elif ctype in LINEAR_FAMILY:
            wa = [np.sign(w * s or 1) * np.sqrt(abs(w * s)) for _, _, w, s in flat]
            wb = [np.sqrt(abs(w * s)) for _, _, w, s in flat]
            A = merge(ctype, [a for a, _, _, _ in flat], wa, density, sign_method)
            B = merge(ctype, [b for _, b, _, _ in flat], wb, density, sign_method)
        else:
            D = merge("linear" if ctype == "svd" else ctype[:-4], [s * b @ a for a, b, _, s in flat],
                      [w * s for _, _, w, s in flat], density, sign_method)
            U, S, Vh = torch.linalg.svd(D, full_matrices=True)
            kept = S[:new_rank + 1] if new_rank < len(S) else torch.cat([S, torch.zeros(1)])
            if bool((kept[:-1] - kept[1:] <= 1e-6 * S[0]).any()):  # a repeated or zero singular value among the kept:
                undetermined.add(a_name_of(present))             # its vectors are any basis (torch's and ours differ)
            U, Vh = U[:, :new_rank].clone(), Vh[:new_rank].clone()
            for j in range(new_rank):  # ssmtune's sign rule, for a comparable clamp
                if U[U[:, j].abs().argmax(), j] < 0:
                    U[:, j], Vh[j] = -U[:, j], -Vh[j]
            B, A = U @ torch.diag(S[:new_rank]), Vh
            if clamp is not None:
                dist = torch.cat([B.flatten(), A.flatten()])
                ordered, pos = dist.sort().values, clamp * (dist.numel() - 1)
                near = ordered[int(np.floor(pos)):int(np.ceil(pos)) + 1].abs().min()
                if near <= 1e-9 * dist.abs().max():  # the quantile falls on entries zero in exact arithmetic (rows
                    undetermined.add(a_name_of(present))  # pruned away): its value is rounding noise, any sign
                hi = torch.quantile(dist, clamp)
                B, A = B.clamp(-hi, hi), A.clamp(-hi, hi)
        a_name, b_name = present[0][4], present[0][5]
        out[a_name] = (A.unsqueeze(-1) if conv else A).numpy()
        out[b_name] = (B.unsqueeze(-1) if conv else B).numpy()
    config = {"r": new_rank, "lora_alpha": new_rank, "use_rslora": False, "target_modules": targets}
    return config, out, undetermined


def a_name_of(present):
    return present[0][4]


# ------------------------------------------------------------------------------------------------------ the cases
def pair(g, w, c, first, second):
    return [lora_adapter(g, w, c, **first), lora_adapter(g, w, c, **second)]


def fixed_cases():
    A = dict(targets=["embeddings", "in_proj", "x_proj", "out_proj"], r=2, alpha=3.0)
    Bk = dict(targets=["in_proj", "dt_proj"], r=3, alpha=5.0, rslora=True, rank_pattern={"dt_proj": 1})
    C = dict(targets=["in_proj", "out_proj"], r=2, alpha=4.0, rslora=True)
    S1 = dict(targets=["encoder", "output_linear.0", "decoder"], r=2, alpha=3.0)
    S2 = dict(targets=["output_linear.0", "decoder"], r=2, alpha=6.0, rslora=True)
    mamba = lambda g: lm_case(g, "mamba", tied=False)
    longhorn = lambda g: lm_case(g, "longhorn")
    s4d = lambda g: s4d_case(g, False, "zoh")
    return [
        ("mamba cat, ranks 2 and 3 (rank_pattern), embedding", mamba, (A, Bk), (0.7, -1.3), dict(type="cat")),
        ("mamba cat of three", mamba, (A, Bk, C), (1.0, 0.5, -0.25), dict(type="cat")),
        ("mamba linear", mamba, (A, C), (0.6, -2.0), dict(type="linear")),
        ("mamba one adapter (always linear)", mamba, (C,), (-0.5,), dict(type="svd")),
        ("mamba svd (default rank)", mamba, (A, C), (0.8, 1.7), dict(type="svd")),
        ("mamba svd rank 3 (above x_proj's rank 2: products)", mamba, (A, C), (0.8, 1.7), dict(type="svd", svd_rank=3)),
        ("mamba svd clamp 0.9", mamba, (A, C), (0.8, 1.7), dict(type="svd", clamp=0.9)),
        ("mamba ties density 0.5", mamba, (A, C), (1.0, 0.7), dict(type="ties", density=0.5)),
        ("mamba ties frequency density 0.7", mamba, (A, C), (1.0, -0.7), dict(type="ties", density=0.7, sign="frequency")),
        ("mamba magnitude_prune density 0.3", mamba, (A, C), (0.4, 1.2), dict(type="magnitude_prune", density=0.3)),
        ("mamba ties_svd", mamba, (A, C), (1.0, 1.0), dict(type="ties_svd", density=0.6)),
        ("mamba magnitude_prune_svd rank 1", mamba, (C, A), (1.3, -0.4), dict(type="magnitude_prune_svd", density=0.5, svd_rank=1)),
        ("longhorn cat", longhorn, (C, A), (1.0, 1.0), dict(type="cat")),
        ("s4d cat (1x1 conv)", s4d, (S1, S2), (0.5, 2.0), dict(type="cat")),
        ("s4d linear (1x1 conv)", s4d, (S1, S2), (0.5, 2.0), dict(type="linear")),
        ("s4d svd (1x1 conv)", s4d, (S1, S2), (0.5, -2.0), dict(type="svd")),
    ]


def random_case(g):
    """A random small model, 1-3 random plain LoRA adapters (one rank for the linear family) and a random type."""
    kind = ["mamba", "longhorn", "s4d"][int(g.integers(3))]
    if kind == "s4d":
        model = s4d_case(g, bool(g.random() < 0.5), "zoh", H=int(g.integers(2, 9)), N=2 * int(g.integers(1, 5)))
        pool = ["encoder", "output_linear.0", "decoder"]
    else:
        D = int(g.integers(4, 17))
        model = lm_case(g, kind, D=D, N=int(g.integers(2, 9)), tied=bool(g.random() < 0.5))
        pool = ["embeddings", "in_proj", "x_proj", "dt_proj", "out_proj"]
    cfg, w, _ = model
    ctype = ["cat", "linear", "svd", "ties", "ties_svd", "magnitude_prune", "magnitude_prune_svd"][int(g.integers(7))]
    same_rank = ctype in LINEAR_FAMILY
    r0 = int(g.integers(1, 5))
    specs, count = [], int(g.integers(1, 4))
    for k in range(count):
        targets = [t for t in pool if g.random() < 0.5] or [pool[int(g.integers(len(pool)))]]
        if k > 0:  # the first adapter's config must reach every module: it targets all of the later ones' too
            specs[0]["targets"] = specs[0]["targets"] + [t for t in targets if t not in specs[0]["targets"]]
        spec = dict(targets=targets, r=r0 if same_rank else int(g.integers(1, 5)), alpha=float(g.uniform(0.5, 8)),
                    rslora=bool(g.random() < 0.3))
        if not same_rank and count > 1 and g.random() < 0.3:  # one adapter is combined linearly: one rank
            spec["rank_pattern"] = {targets[0]: int(g.integers(1, 4))}
        specs.append(spec)
    weights = tuple(float(x) for x in g.uniform(-2, 2, size=len(specs)))
    options = dict(type=ctype)
    if ctype not in ("cat", "linear", "svd"):
        options["density"] = float(g.choice([0.3, 0.5, 0.8, 1.0]))
        options["sign"] = ["total", "frequency"][int(g.integers(2))]
    if ctype.endswith("svd") and len(specs) > 1:
        sides = [min(v.shape[0], v.shape[1]) for n, v in w.items() if n.endswith(".weight") and v.ndim >= 2 and
                 any(n[:-len(".weight")].endswith(t) for s in specs for t in s["targets"])]
        options["svd_rank"] = int(g.integers(1, min(sides + [4]) + 1))
        if g.random() < 0.3:
            options["clamp"] = float(g.uniform(0.5, 1.0))
    name = "%s %s of %d" % (kind, ctype, len(specs))
    return name, (lambda _g: model), tuple(specs), weights, options


# ------------------------------------------------------------------------------------------------------- running
def run_case(ssmtune, root, index, name, build, specs, weights, options):
    g = np.random.default_rng(5000 + index)
    cfg, w, _ = build(g)
    d = os.path.join(root, "case%02d" % index)
    os.makedirs(os.path.join(d, "model"), exist_ok=True)
    with open(os.path.join(d, "model", "config.json"), "w") as f:
        json.dump(cfg, f)
    save_safetensors(os.path.join(d, "model", "model.safetensors"), {n: v.astype(np.float32) for n, v in w.items()})
    adapters, dirs = [], []
    for k, spec in enumerate(specs):
        cfg_json, tensors = lora_adapter(g, w, cfg, **spec)
        dirs.append(os.path.join(d, "adapter%d" % (k + 1)))
        adapters.append(write_adapter_dir(dirs[-1], cfg_json, tensors))
    out_dir = os.path.join(d, "combined")
    cmd = [ssmtune, "combine", "--model", os.path.join(d, "model"), "--adapter", ",".join(dirs), "--weights",
           ",".join(repr(x) for x in weights), "--combination", options["type"], "--out", out_dir]
    for key, flag in (("svd_rank", "--svd-rank"), ("clamp", "--svd-clamp"), ("density", "--density"),
                      ("sign", "--majority-sign")):
        if key in options:
            cmd += [flag, str(options[key])]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        return "error: " + (r.stderr.strip() or r.stdout.strip())
    want_cfg, want, undetermined = hf_combine(adapters, weights, options["type"], options.get("svd_rank"), options.get("clamp"),
                                options.get("density"), options.get("sign", "total"))
    with open(os.path.join(out_dir, "adapter_config.json")) as f:
        got_cfg = json.load(f)
    for key in ("r", "lora_alpha", "use_rslora"):
        if got_cfg[key] != want_cfg[key]:
            return "config %s: %r, HF %r" % (key, got_cfg[key], want_cfg[key])
    if sorted(got_cfg["target_modules"]) != sorted(want_cfg["target_modules"]):
        return "target_modules %r, HF %r" % (got_cfg["target_modules"], want_cfg["target_modules"])
    got = {n[len("base_model.model."):]: v.astype(np.float64) for n, v in
           load_safetensors(os.path.join(out_dir, "adapter_model.safetensors")).items()}
    if sorted(got) != sorted(want):
        return "names differ: %s" % sorted(set(got) ^ set(want))[:4]
    worst = 0.0
    clamped = options.get("clamp") is not None
    for n in want:
        if n in undetermined or n.replace("_B", "_A") in undetermined:
            continue  # factors (and, clamped, the product too) depend on the basis chosen for repeated singular values
        scale = max(np.abs(want[n]).max(), 1e-12)  # an absolute floor: a clamp at a ~0 quantile leaves ~0
        worst = max(worst, float(np.abs(got[n] - want[n]).max() / scale))
    if options["type"].endswith("svd") and len(specs) > 1:  # the products too (sign-free)
        for n in want:
            if "_A" in n.rsplit(".lora", 1)[1] and not (clamped and n in undetermined):
                b = n.replace("_A", "_B")
                p = lambda t: t[b].reshape(t[b].shape[0], -1) @ t[n].reshape(t[n].shape[0], -1)
                worst = max(worst, float(np.abs(p(got) - p(want)).max() / max(np.abs(p(want)).max(), 1e-12)))
    return worst, len(undetermined)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ssmtune", required=True)
    ap.add_argument("--keep", help="write the cases' files under this directory and keep them")
    ap.add_argument("--random", type=int, default=0, metavar="N", help="N random cases instead of the fixed list")
    ap.add_argument("--seed", type=int, default=0, help="the first random case's seed (case i uses seed + i)")
    a = ap.parse_args()
    if not (os.path.isfile(a.ssmtune) and os.access(a.ssmtune, os.X_OK)):
        print("error: --ssmtune %s is not an executable; fix: build first and pass build/tools/ssmtune" % a.ssmtune)
        return 1
    root = a.keep or tempfile.mkdtemp(prefix="ssmtune_combine_")
    if a.random:
        todo = []
        for i in range(a.random):
            name, build, specs, weights, options = random_case(np.random.default_rng(a.seed + i))
            todo.append(("%s (seed %d)" % (name, a.seed + i), build, specs, weights, options))
    else:
        todo = [(name, build, tuple(dict(s) for s in specs), weights, options)
                for name, build, specs, weights, options in fixed_cases()]
    failures = skipped = 0
    print("%-56s %s" % ("case", "worst (of each tensor's largest magnitude)"))
    for index, (name, build, specs, weights, options) in enumerate(todo):
        result = run_case(a.ssmtune, root, index, name, build, specs, weights, options)
        ok = isinstance(result, tuple) and result[0] <= TOL
        failures += not ok
        shown = ("%.1e" % result[0] + (" (%d module(s) with a repeated singular value or a noise quantile: %s)" % (
            result[1], "skipped" if options.get("clamp") is not None else "B A only") if result[1] else "")
                 if isinstance(result, tuple) else result[:200])
        skipped += isinstance(result, tuple) and result[1] > 0
        print("%-56s %s%s" % (name, shown, "" if ok else "   FAIL"))
    print("%d case(s) disagree" % failures if failures else "every case agrees",
          "(%d with modules compared in part)" % skipped if skipped else "")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
