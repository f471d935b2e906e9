"""Shared pieces of the CLI fuzzer (cli_fuzz.py): the runner that runs one `ssmtune` command and judges it by the
CLI's contract, safetensors I/O for batch files and `grads` output, the tolerance check, and the fixtures (tiny Mamba,
Longhorn and S4D models, adapters and batch files built with the binary itself). Standard library only."""
import json
import os
import random
import struct
import subprocess
import sys


def write_safetensors(path, tensors):
    """tensors: name -> (dtype name, shape, flat list); I64 and F32 only."""
    header, blobs, offset = {}, [], 0
    for name, (dtype, shape, values) in tensors.items():
        blob = struct.pack("<%d%s" % (len(values), "q" if dtype == "I64" else "f"), *values)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


class Runner:
    def __init__(self, binary, timeout):
        self.binary, self.timeout, self.cwd = binary, timeout, None  # cwd: where default outputs (runs/...) land
        self.runs = self.broken = self.slow = 0
        self.verbose = False
        self.stdout = ""  # the last run's

    def __call__(self, args, show):
        """Runs `ssmtune args`; returns its exit status (None on a timeout). Prints the runs that break the contract."""
        self.runs += 1
        try:
            r = subprocess.run([self.binary] + args, capture_output=True, text=True, errors="replace",
                               timeout=self.timeout, cwd=self.cwd, env=dict(os.environ, OMP_NUM_THREADS="1"))
        except subprocess.TimeoutExpired:
            self.slow += 1
            print("slow (over %ds): %s" % (self.timeout, show), flush=True)
            return None
        self.stdout = r.stdout
        errors = [l for l in r.stderr.splitlines()
                  if l.strip() and not l.startswith("warning:") and not l.startswith("note:")]
        broken = (r.returncode not in (0, 1, 2) or (r.returncode in (1, 2) and len(errors) != 1)
                  or (r.returncode in (1, 2) and not errors[0].startswith("error: "))
                  or "terminate" in r.stderr or "what()" in r.stderr)
        if broken:
            self.broken += 1
            print("BROKEN (exit %d): %s\n    %s" % (r.returncode, show, r.stderr[-800:].replace("\n", "\n    ")),
                  flush=True)
        elif self.verbose:
            print("exit %d: %s%s" % (r.returncode, show[:300], (" => " + errors[0][:200]) if errors else ""), flush=True)
        return r.returncode


def make_fixtures(run, d):
    text = os.path.join(d, "text.txt")
    with open(text, "w") as f:
        f.write("the state space model reads its input one token at a time. " * 200)
    open(os.path.join(d, "empty.txt"), "w").close()
    small = "train.batch_size=2,train.eval_batches=1"
    base = {"mamba": os.path.join(d, "base_mamba"), "longhorn": os.path.join(d, "base_longhorn")}
    model = {"hidden_size": 16, "num_hidden_layers": 2, "state_size": 4, "expand": 2, "time_step_rank": "auto"}
    for kind, out in base.items():
        cfg = os.path.join(d, kind + ".json")
        data = ({"kind": "synthetic", "task": {"name": "selective_copying", "span": 12}} if kind == "mamba"
                else {"kind": "text", "path": text})
        train = {"steps": 2, "seq_len": 16} if kind == "longhorn" else {"steps": 2}
        with open(cfg, "w") as f:
            json.dump({"model": dict(model, model_type=kind, vocab_size=10 if kind == "mamba" else 256),
                       "data": data, "train": train}, f)
        if run(["train", "--config", cfg, "--set", small, "--out", out, "--quiet"], "fixture " + kind) != 0:
            sys.exit("cli_fuzz: could not build the %s fixture" % kind)
    adapters = {}
    for name, peft in [("lora", {"peft_type": "LORA", "r": 2, "target_modules": ["in_proj", "out_proj"]}),
                       ("lora2", {"peft_type": "LORA", "r": 3, "target_modules": ["in_proj", "x_proj"]}),
                       ("pissa", {"peft_type": "LORA", "r": 2, "target_modules": ["in_proj"], "init_lora_weights": "pissa"}),
                       ("offset", {"peft_type": "STATE_OFFSET"})]:
        out = os.path.join(d, "ft_" + name)
        if run(["finetune", "--model", base["mamba"] + "/model", "--config", os.path.join(d, "mamba.json"), "--peft",
                json.dumps(peft), "--set", small + ",train.schedule=constant,train.warmup_steps=0", "--steps", "2",
                "--lr", "0.02", "--out", out, "--quiet"], "fixture " + name) != 0:
            sys.exit("cli_fuzz: could not build the %s adapter fixture" % name)
        adapters[name] = out + "/adapter"
    batches = {}
    for name, tensors in [("ids", {"input_ids": ("I64", [2, 6], [1, 2, 3, 4, 5, 6, 6, 5, 4, 3, 2, 1])}),
                          ("big_ids", {"input_ids": ("I64", [1, 4], [1, 2, 300, 4])}),
                          ("neg_ids", {"input_ids": ("I64", [1, 4], [1, -2, 3, 4])}),
                          ("float_ids", {"input_ids": ("F32", [1, 4], [1.0, 2.0, 3.0, 4.0])}),
                          ("one_step", {"input_ids": ("I64", [1, 1], [1])}),
                          ("no_batch", {"input_ids": ("I64", [0, 4], [])}),
                          ("frames", {"inputs": ("F32", [2, 5, 3], [0.5] * 30), "labels": ("I64", [2], [0, 1])})]:
        batches[name] = os.path.join(d, name + ".safetensors")
        write_safetensors(batches[name], tensors)
    return text, base, adapters, batches


def s4d_fixture(run, d):
    """An S4D classifier (D 8, 2 layers, dropout 0.1) trained 2 steps on 24 tiny IDX images (4 rows of 3 pixels, 3
    classes) it writes, with d/s4d.json, the images' run config; built once, returns its run directory."""
    out = os.path.join(d, "base_s4d")
    if os.path.exists(out):
        return out
    images, r = os.path.join(d, "idx"), random.Random(0)
    os.makedirs(images, exist_ok=True)
    labels = [k % 3 for k in range(24)]
    pixels = bytes(min(255, 60 * labels[k] + r.randint(0, 80)) for k in range(24) for _ in range(12))
    for split in ("train", "t10k"):
        with open(os.path.join(images, split + "-images-idx3-ubyte"), "wb") as f:
            f.write(struct.pack(">iiii", 0x803, 24, 4, 3) + pixels)
        with open(os.path.join(images, split + "-labels-idx1-ubyte"), "wb") as f:
            f.write(struct.pack(">ii", 0x801, 24) + bytes(labels))
    with open(os.path.join(d, "s4d.json"), "w") as f:
        json.dump({"data": {"kind": "fashion_mnist", "path": images, "order": "row"}, "train": {"steps": 2}}, f)
    if run(["train", "--config", os.path.join(d, "s4d.json"), "--set", "model.d_model=8,model.n_layers=2,"
            "model.d_state=8,train.batch_size=2,train.eval_batches=1", "--out", out, "--quiet"], "fixture s4d") != 0:
        sys.exit("cli_fuzz: could not build the s4d fixture")
    return out


def read_safetensors_header(f):
    """The JSON header of an open safetensors file (left at the end of the header) and its size."""
    n = struct.unpack("<Q", f.read(8))[0]
    return json.loads(f.read(n)), n


def safetensors_shapes(path):
    """{name: shape} of a safetensors file's tensors."""
    with open(path, "rb") as f:
        header, _ = read_safetensors_header(f)
    return {name: entry["shape"] for name, entry in header.items() if name != "__metadata__"}


def read_safetensors_floats(path, name):
    """(shape, flat values) of one F32 or F64 tensor of a safetensors file."""
    with open(path, "rb") as f:
        header, n = read_safetensors_header(f)
        begin, end = header[name]["data_offsets"]
        f.seek(8 + n + begin)
        data = f.read(end - begin)
    code = {"F32": "f", "F64": "d"}[header[name]["dtype"]]
    return header[name]["shape"], struct.unpack("<%d%s" % (len(data) // struct.calcsize(code), code), data)


def agrees(value, reference, rtol):
    """Both known and |value − reference| ≤ rtol · max(1, |reference|)."""
    return value is not None and reference is not None and abs(value - reference) <= rtol * max(1.0, abs(reference))


def eval_json(stdout):
    """`eval`'s (last) JSON line as a dict, {} without one."""
    return next((json.loads(line) for line in reversed(stdout.splitlines()) if line.startswith("{")), {})


def eval_loss(stdout):
    """The loss from `eval`'s JSON line, or None."""
    loss = eval_json(stdout).get("loss")
    return float(loss) if loss is not None else None
