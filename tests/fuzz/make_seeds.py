#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets (tests/fuzz/corpus/<target>/): small valid inputs of each kind.
Run once when the formats change; the files are committed. No dependencies beyond the standard library."""
import gzip, json, os, struct

here = os.path.dirname(os.path.abspath(__file__))

def safetensors(tensors):
    header, data = {}, b""
    for name, (shape, values) in tensors.items():
        raw = struct.pack("<%df" % len(values), *values)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + data

def split2(a, b):
    return struct.pack(">H", len(a)) + a + b

def put(target, name, data):
    d = os.path.join(here, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

def full(shape, v=0.1):
    n = 1
    for s in shape: n *= s
    return (shape, [v] * n)

# tiny Mamba: V=5, D=4, 1 layer, N=2, E=8, K=2, R=1
V, D, N, E, K, R = 5, 4, 2, 8, 2, 1
p = "backbone.layers.0.mixer."
mamba = {"backbone.embeddings.weight": full([V, D]), "backbone.layers.0.norm.weight": full([D], 1.0),
         p + "A_log": full([E, N], 0.5), p + "D": full([E], 1.0), p + "in_proj.weight": full([2 * E, D]),
         p + "conv1d.weight": full([E, 1, K]), p + "conv1d.bias": full([E]), p + "x_proj.weight": full([R + 2 * N, E]),
         p + "dt_proj.weight": full([E, R]), p + "dt_proj.bias": full([E]), p + "out_proj.weight": full([D, E]),
         "backbone.norm_f.weight": full([D], 1.0)}
cfg = {"model_type": "mamba", "vocab_size": V, "hidden_size": D, "num_hidden_layers": 1, "state_size": N,
       "intermediate_size": E, "conv_kernel": K, "time_step_rank": R}
put("safetensors", "tiny_mamba", safetensors(mamba))
put("safetensors", "empty", safetensors({}))
put("model_loader", "mamba", split2(json.dumps(cfg).encode(), safetensors(mamba)))
cfg_l = dict(cfg, model_type="longhorn")
longhorn = {k: v for k, v in mamba.items() if not k.endswith("A_log")}
put("model_loader", "longhorn", split2(json.dumps(cfg_l).encode(), safetensors(longhorn)))
# the same Mamba as a frame model: 3 real-valued features per step through backbone.encoder, V outputs, untied head
frame = {k: v for k, v in mamba.items() if k != "backbone.embeddings.weight"}
frame.update({"backbone.encoder.weight": full([D, 3]), "backbone.encoder.bias": full([D]), "lm_head.weight": full([V, D])})
put("model_loader", "mamba_frames", split2(json.dumps(dict(cfg, input_size=3, tie_word_embeddings=False)).encode(),
                                            safetensors(frame)))
# adapters for the fuzz target's fixed model (V=11, D=8, 2 layers, N=4, E=16, R=1)
lora = {}
for i in range(2):
    q = "base_model.model.backbone.layers.%d.mixer.in_proj." % i
    lora[q + "lora_A.weight"] = full([2, 8])
    lora[q + "lora_B.weight"] = full([32, 2])
put("adapter_loader", "lora", split2(json.dumps({"peft_type": "LORA", "r": 2, "target_modules": ["in_proj"]}).encode(),
                                      safetensors(lora)))
# LoRA inits that read the weight: the load rewrites in_proj to W - s B0 A0 (randomized SVD) and puts it back on detach
put("adapter_loader", "lora_pissa", split2(json.dumps({"peft_type": "LORA", "r": 2, "target_modules": ["in_proj"],
                                                        "init_lora_weights": "pissa_niter_2"}).encode(), safetensors(lora)))
so = {"base_model.model.backbone.layers.%d.mixer.state_offset" % i: full([16, 4]) for i in range(2)}
put("adapter_loader", "state_offset", split2(json.dumps({"peft_type": "STATE_OFFSET"}).encode(), safetensors(so)))
# LoRA with HF's per-module fields and DoRA: layer 1's in_proj at r 3, out_proj only in layer 1, dt_proj trained whole
mx = "base_model.model.backbone.layers.%d.mixer."
pat = {}
for i in range(2):
    r = 3 if i == 1 else 2
    pat[mx % i + "in_proj.lora_A.weight"] = full([r, 8])
    pat[mx % i + "in_proj.lora_B.weight"] = full([32, r])
    pat[mx % i + "in_proj.lora_magnitude_vector"] = full([32], 1.0)
    pat[mx % i + "dt_proj.weight"] = full([16, 1])
    pat[mx % i + "dt_proj.bias"] = full([16])
pat[mx % 1 + "out_proj.lora_A.weight"] = full([2, 16])
pat[mx % 1 + "out_proj.lora_B.weight"] = full([8, 2])
pat[mx % 1 + "out_proj.lora_magnitude_vector"] = full([8], 1.0)
put("adapter_loader", "lora_patterns_dora", split2(json.dumps({
    "peft_type": "LORA", "r": 2, "target_modules": ["in_proj", "out_proj"], "use_dora": True,
    "rank_pattern": {"layers.1.mixer.in_proj": 3}, "alpha_pattern": {"out_proj": 4},
    "exclude_modules": ["layers.0.mixer.out_proj"], "modules_to_save": ["dt_proj"]}).encode(), safetensors(pat)))
ext = {}
for i in range(2):
    ext[mx % i + "A_log_ext"] = full([16, 2], 1.5)
    ext[mx % i + "x_proj_B_ext"] = full([2, 16])
    ext[mx % i + "x_proj_C_ext"] = full([2, 16])
put("adapter_loader", "additional_scan", split2(json.dumps({"peft_type": "ADDITIONAL_SCAN", "d_state": 2}).encode(),
                                                 safetensors(ext)))
lr = {}
for i in range(2):
    lr[mx % i + "state_offset_lora_A"] = full([2, 4])
    lr[mx % i + "state_offset_lora_B"] = full([16, 2])
put("adapter_loader", "state_offset_low_rank", split2(json.dumps({"peft_type": "STATE_OFFSET", "r": 2}).encode(),
                                                       safetensors(lr)))
ic = {}
for i in range(2):
    ic[mx % i + "initial_state"] = full([16, 4])
    ic[mx % i + "conv_initial_state"] = full([16, 3])
put("adapter_loader", "initial_state_conv", split2(json.dumps({"peft_type": "INITIAL_STATE",
                                                                "conv_init_state": True}).encode(), safetensors(ic)))
pa = {}
for i in range(2):
    pa[mx % i + "A_log"] = full([16, 4], 0.5)
    pa[mx % i + "conv1d.weight"] = full([16, 1, 4])
    pa[mx % i + "conv1d.bias"] = full([16])
put("adapter_loader", "partial", split2(json.dumps({"peft_type": "PARTIAL", "param_names": ["A_log", "conv1d"]}).encode(),
                                         safetensors(pa)))
# IDX: 2 images of 3x2 and their labels
img = struct.pack(">IIII", 0x803, 2, 3, 2) + bytes(range(12))
lab = struct.pack(">II", 0x801, 2) + bytes([3, 7])
put("idx", "plain", split2(img, lab))
put("idx", "gzip", split2(gzip.compress(img), gzip.compress(lab)))
# run configs
put("run_config", "train", split2(json.dumps({"train": {"steps": 5, "lr": 0.01}, "data": {"kind": "synthetic",
    "task": {"name": "induction_heads", "span": 16}}}).encode(), b"train.batch_size=2,data.task.num_tokens=6"))
put("run_config", "lora", split2(json.dumps({"peft_type": "LORA", "r": 4, "target_modules": "all-linear"}).encode(), b""))
# PyTorch checkpoints: copies of the files torch.save wrote for the reader's tests (tests/engine/torch_checkpoints/,
# made there by make_fixtures.py, which needs torch; this script copies them and needs nothing)
fixtures = os.path.join(here, "..", "engine", "torch_checkpoints")
for name in ("views.bin", "views_deflated.bin", "views_zip64.bin", "parameters_protocol4.bin", "training_checkpoint.bin"):
    with open(os.path.join(fixtures, name), "rb") as f:
        put("torch_checkpoint", name[:-4], f.read())
# ... and the same checkpoints as the target's "PKL" inputs: data.pkl and the storages, which it wraps in an archive
import zipfile  # noqa: E402
for name in ("views.bin", "parameters_protocol4.bin"):
    with zipfile.ZipFile(os.path.join(fixtures, name)) as z:
        folder = [n for n in z.namelist() if n.endswith("/data.pkl")][0][:-len("data.pkl")]
        keys = sorted((n[len(folder) + 5:] for n in z.namelist() if n.startswith(folder + "data/")), key=int)
        storages = b"".join(struct.pack(">H", len(z.read(folder + "data/" + k))) + z.read(folder + "data/" + k)
                            for k in keys)
        put("torch_checkpoint", "pkl_" + name[:-4], b"PKL" + split2(z.read(folder + "data.pkl"), storages))
