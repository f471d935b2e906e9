"""The CLI fuzzer's eval checks (run by its merges mode, cli_fuzz_results.py): `eval` on data the readers define —
a token or byte file's validation windows (tools/data/text.h), random IDX images (tools/data/idx.h) through the S4D,
frame and pixel-token classifiers — must give the loss `grads` gives on the same examples, and the metrics its
logits imply (accuracy, macro-F1 and MCC as scikit-learn computes them, perplexity, bits per byte)."""
import json
import math
import os
import struct
import sys

from cli_fuzz_common import agrees, eval_json, read_safetensors_floats, s4d_fixture, write_safetensors


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


def argmax_clear(z):
    """(index of the largest value, whether it leads the next by 1e-4: an argmax two implementations agree on)."""
    best = max(range(len(z)), key=z.__getitem__)
    return best, all(v <= z[best] - 1e-4 for k, v in enumerate(z) if k != best)


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
    got = eval_json(run.stdout)
    val = ids[n - n_val:]
    rows = [val[w * L:w * L + L + 1] for w in range(n_val) if w * L + L + 1 <= n_val][:B * K]
    batch, grads = os.path.join(d, "windows_batch.safetensors"), os.path.join(d, "windows_grads.safetensors")
    write_safetensors(batch, {"input_ids": ("I64", [len(rows), L + 1], sum(rows, []))})
    if run(["grads", "--model", base, "--adapter", adapter, "--batch", batch, "--out", grads], "grads " + what) != 0:
        return
    loss = read_safetensors_floats(grads, "loss")[1][0]
    problems = []
    if not agrees(got.get("loss"), loss, 1e-5):
        problems.append("loss %s, grads on its windows %s" % (got.get("loss"), loss))
    if not agrees(got.get("perplexity"), math.exp(got.get("loss", 0)), 1e-9):
        problems.append("perplexity %s for loss %s" % (got.get("perplexity"), got.get("loss")))
    if as_bytes != ("bits_per_byte" in got) or (as_bytes and not agrees(got["bits_per_byte"], got["loss"] / math.log(2), 1e-9)):
        problems.append("bits per byte %s for loss %s (bytes: %s)" % (got.get("bits_per_byte"), got.get("loss"), as_bytes))
    shape, logits = read_safetensors_floats(grads, "logits")
    if shape[1] == L + 1:
        hits, tie = 0, False
        for r, row in enumerate(rows):
            for t in range(L):
                best, clear = argmax_clear(logits[(r * (L + 1) + t) * V:(r * (L + 1) + t + 1) * V])
                tie = tie or not clear
                hits += best == row[t + 1]
        if not tie and not agrees(got.get("accuracy"), hits / (len(rows) * L), 1e-9):
            problems.append("accuracy %s, the argmax of grads' logits %s" % (got.get("accuracy"), hits / (len(rows) * L)))
    for problem in problems:
        run.broken += 1
        print("BROKEN (%s): %s" % (problem, what), flush=True)


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
    got = eval_json(run.stdout)
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
    shape, logits = read_safetensors_floats(grads, "logits")
    C, predicted, tie, loss = shape[-1], [], False, 0.0
    step = C * (shape[1] if len(shape) == 3 else 1)
    for r in range(m):
        z = logits[r * step + step - C:(r + 1) * step]  # the last frame's / pixel's
        best, clear = argmax_clear(z)
        tie = tie or not clear
        predicted.append(best - (256 if view == "pixels" else 0))
        if view == "pixels":
            loss += (z[best] + math.log(sum(math.exp(v - z[best]) for v in z)) - z[256 + truth[r]]) / m
    expected = {"loss": loss if view == "pixels" else read_safetensors_floats(grads, "loss")[1][0]}
    if not tie:
        expected.update(sklearn_metrics(predicted, truth))
    for name, value in expected.items():
        if not agrees(got.get(name), value, 1e-5 if name == "loss" else 1e-9):
            run.broken += 1
            print("BROKEN (%s %s, from grads' logits %s): %s" % (name, got.get(name), value, what), flush=True)


def sampling_allows(row, token, temperature, top_k, top_p, tol=1e-4):
    """Whether HF's sampling filters (logits / temperature, then top-k, then top-p over the softmax of what top-k kept;
    the most likely token always kept) can keep `token` of the logits `row`; `tol` is slack for the difference
    between the recurrent and the parallel logits (a near-tie counts either way)."""
    z = [v / temperature for v in row]
    if z[token] >= max(z) - tol:
        return True
    kth = sorted(z, reverse=True)[min(top_k, len(z)) - 1] if top_k else min(z)
    if z[token] < kth - tol:
        return False
    kept = [v for v in z if v >= kth - tol]
    m = max(kept)
    total = sum(math.exp(v - m) for v in kept)
    above = sum(math.exp(v - m) for v in kept if v > z[token] + tol) / total
    return top_p >= 1 or above < top_p + tol


def check_generate(run, rng, d, base, adapter, show):
    """`generate` runs the recurrent step mode, `grads` the parallel scan: on the generated sequence (teacher-forced)
    the parallel logits must allow every generated token — greedy: its logit the largest (to 1e-4); sampling: one the
    temperature / top-k / top-p filters keep (sampling_allows). Generation stops right after the first --stop-ids
    token, and only there; the prompt comes back first."""
    prompt = [rng.randrange(1, 10) for _ in range(rng.randint(1, 4))]
    new = rng.randint(1, 8)
    args = ["generate", "--model", base, "--adapter", adapter, "--ids", ",".join(map(str, prompt)),
            "--max-new-tokens", str(new), "--seed", str(rng.randint(0, 99))]
    temperature, top_k, top_p, stop = 0, 0, 1.0, []
    if rng.random() < 0.6:
        temperature, top_k, top_p = rng.choice([0.5, 1, 2]), rng.choice([0, 1, 2, 5]), rng.choice([1.0, 0.9, 0.5, 0.0])
        args += ["--temperature", str(temperature), "--top-k", str(top_k), "--top-p", str(top_p)]
    if rng.random() < 0.3:
        stop = rng.sample(range(10), rng.randint(1, 3))
        args += ["--stop-ids", ",".join(map(str, stop))]
    what = " ".join(args[5:]) + " " + show
    if run(args, "generate " + what) != 0:
        return
    seq = [int(t) for t in run.stdout.strip().splitlines()[-1].split(",")]
    generated = seq[len(prompt):]
    problems = []
    if seq[:len(prompt)] != prompt or not 1 <= len(generated) <= new:
        problems.append("%d new tokens after the prompt %s" % (len(generated), prompt))
    elif any(t in stop for t in generated[:-1]) or (len(generated) < new and generated[-1] not in stop):
        problems.append("it did not stop right after the first of the stop ids %s" % stop)
    else:
        batch, grads = os.path.join(d, "gen_batch.safetensors"), os.path.join(d, "gen_grads.safetensors")
        write_safetensors(batch, {"input_ids": ("I64", [1, len(seq) - 1], seq[:-1])})
        if run(["grads", "--model", base, "--adapter", adapter, "--batch", batch, "--out", grads], "grads " + what) != 0:
            return
        shape, logits = read_safetensors_floats(grads, "logits")
        V = shape[-1]
        for i in range(len(prompt) - 1, len(seq) - 1):
            row = list(logits[i * V:(i + 1) * V])
            if not sampling_allows(row, seq[i + 1], temperature or 1, top_k if temperature else 1, top_p):
                problems.append("at position %d the parallel logits do not allow %d (largest: %d, %g over %g)" %
                                (i + 1, seq[i + 1], row.index(max(row)), max(row), row[seq[i + 1]]))
                break
    for problem in problems:
        run.broken += 1
        print("BROKEN (generate gave %s: %s): %s" % (seq, problem, what), flush=True)
