#!/usr/bin/env python3
"""The PyTorch anchor for `ssmtune bench --what mamba` (issue 8's speed comparison).

The same Mamba-1 LM as ssmtune's bench — D=256, 4 layers, E=512, N=16, R=16, conv width 4, vocab 256, tied
embeddings, RMSNorm, batch 8 x 256 tokens, next-token cross-entropy, AdamW(lr 1e-3), float32 — written the way a
PyTorch user writes it without the CUDA kernels: modules from torch.nn and the selective scan as the plain
sequential loop over time (over unbound time slices) on the discretised tensors exp(delta*A) and delta*B*u of shape [B, L, E, N] (the form of
the reference scan in the Mamba paper's code). Autograd through the loop, torch.optim.AdamW.

Prints one JSON line: ms/step (best of --steps after one warm-up step), tokens/s, peak RSS and the peak RSS above
the process's RSS before the model was built (the same two measures ssmtune's bench prints). Not a test: it needs
Debian's python3-torch and exits 0 with a note when torch is absent, so tools/bench/compare_torch.sh can skip it.
"""
import argparse
import json
import math
import resource
import sys
import time


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def peak_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--length", type=int, default=256)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--vocab", type=int, default=256)
    a = p.parse_args()
    try:
        import torch
        import torch.nn as nn
        import torch.nn.functional as F
    except ImportError:
        print(json.dumps({"skipped": "python3-torch is not installed (apt-get install python3-torch)"}))
        return 0

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    D, E, N, V = a.hidden, 2 * a.hidden, 16, a.vocab
    R = math.ceil(D / 16)

    class RMSNorm(nn.Module):
        def __init__(self, d, eps=1e-5):
            super().__init__()
            self.eps = eps
            self.weight = nn.Parameter(torch.ones(d))

        def forward(self, x):
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight

    def selective_scan(u, delta, A, Bm, Cm, Dv, z):
        # u, delta, z: [B, E, L]; A: [E, N]; Bm, Cm: [B, N, L]
        delta = F.softplus(delta)
        dA = torch.exp(torch.einsum("bel,en->blen", delta, A))
        dBu = torch.einsum("bel,bnl,bel->blen", delta, Bm, u)
        # unbind once rather than indexing dA[:, t] in the loop: the indexing form's backward writes a full-size
        # gradient per step (quadratic in L, about 10x slower at L=32); this is the faster of the two usual forms.
        dA_t, dBu_t, C_t = dA.unbind(1), dBu.unbind(1), Cm.unbind(2)
        h = u.new_zeros(u.shape[0], E, N)
        ys = []
        for t in range(u.shape[2]):
            h = dA_t[t] * h + dBu_t[t]
            ys.append(torch.einsum("ben,bn->be", h, C_t[t]))
        y = torch.stack(ys, dim=2) + u * Dv[None, :, None]
        return y * F.silu(z)

    class Mixer(nn.Module):
        def __init__(self):
            super().__init__()
            self.in_proj = nn.Linear(D, 2 * E, bias=False)
            self.conv1d = nn.Conv1d(E, E, 4, groups=E, padding=3)
            self.x_proj = nn.Linear(E, R + 2 * N, bias=False)
            self.dt_proj = nn.Linear(R, E)
            self.A_log = nn.Parameter(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(E, 1))
            self.D = nn.Parameter(torch.ones(E))
            self.out_proj = nn.Linear(E, D, bias=False)

        def forward(self, h):  # [B, L, D]
            L = h.shape[1]
            x, z = self.in_proj(h).transpose(1, 2).chunk(2, dim=1)  # [B, E, L] each
            x = F.silu(self.conv1d(x)[..., :L])
            dbc = self.x_proj(x.transpose(1, 2))  # [B, L, R + 2N]
            dt, Bm, Cm = dbc.split([R, N, N], dim=-1)
            delta = self.dt_proj(dt).transpose(1, 2)  # [B, E, L]
            y = selective_scan(x, delta, -torch.exp(self.A_log), Bm.transpose(1, 2), Cm.transpose(1, 2), self.D, z)
            return self.out_proj(y.transpose(1, 2))

    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(V, D)
            self.norms = nn.ModuleList([RMSNorm(D) for _ in range(a.layers)])
            self.mixers = nn.ModuleList([Mixer() for _ in range(a.layers)])
            self.norm_f = RMSNorm(D)

        def forward(self, ids):
            h = self.embedding(ids)
            for norm, mixer in zip(self.norms, self.mixers):
                h = h + mixer(norm(h))
            return self.norm_f(h) @ self.embedding.weight.t()  # tied head

    rss_before = rss_bytes()
    model = LM()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.randint(0, V, (a.batch, a.length))

    def step():
        logits = model(ids)
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up: optimizer state
    best = math.inf
    for _ in range(a.steps):
        t0 = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - t0)
    tokens = a.batch * a.length
    print(json.dumps({
        "impl": "pytorch " + torch.__version__, "threads": torch.get_num_threads(),
        "params": sum(p.numel() for p in model.parameters()), "ms_per_step": best * 1e3,
        "tokens_per_s": tokens / best, "peak_rss_mib": peak_rss_bytes() / 2**20,
        "peak_rss_over_start_mib": (peak_rss_bytes() - rss_before) / 2**20}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
