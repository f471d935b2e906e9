#!/usr/bin/env python3
"""Writes the PyTorch checkpoints that tests/engine/test_torch_checkpoint.cpp reads, with torch.save itself (Debian's
python3-torch). Run once when they change; the files are committed, so the tests need no Python. Each tensor's values
follow a formula the C++ test recomputes, so nothing here is trusted blindly: the test checks what torch wrote."""
import collections, json, os, shutil, struct, zipfile

import torch

here = os.path.dirname(os.path.abspath(__file__))


def out(name):
    return os.path.join(here, name)


def views():
    """Every dtype torch.save stores that ssmtune holds, and every kind of view: a transpose sharing its base's
    storage, a storage offset, a strided slice, an expanded (stride 0) tensor, a 0-d scalar and an empty tensor."""
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4) * 0.5 - 1
    long = torch.arange(20, dtype=torch.float32) * 0.25
    d = collections.OrderedDict()
    d["f32"] = base
    d["f32_t"] = base.t()
    d["offset"] = long[5:11].reshape(2, 3)
    d["strided"] = long[::3]
    d["expanded"] = torch.tensor([1.5, -2.5]).expand(3, 2)
    d["scalar"] = torch.tensor(3.5)
    d["empty"] = torch.zeros(0, 4)
    d["f64"] = torch.linspace(-1, 1, 5, dtype=torch.float64)
    d["f16"] = torch.tensor([0.5, -2.0, 65504.0, 0.0001], dtype=torch.float16)
    d["bf16"] = torch.tensor([1.5, -3.25, 1e30], dtype=torch.bfloat16)
    d["i64"] = torch.tensor([-5, 0, 2 ** 40], dtype=torch.int64)
    d["i32"] = torch.tensor([-7, 2 ** 30], dtype=torch.int32)
    d["i16"] = torch.tensor([-300, 300], dtype=torch.int16)
    d["i8"] = torch.tensor([-128, 127], dtype=torch.int8)
    d["u8"] = torch.tensor([0, 255], dtype=torch.uint8)
    d["bool"] = torch.tensor([True, False, True])
    return d


def rezip(src, dst, **kw):
    """The same archive written again by Python's zipfile (deflated, or with zip64 records)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", compression=kw.get("compression", zipfile.ZIP_STORED)) as z:
        for info in zin.infolist():
            with z.open(info.filename, "w", force_zip64=kw.get("force_zip64", False)) as f:
                f.write(zin.read(info.filename))


def safetensors(path, tensors):
    header, data = {}, b""
    for name, t in tensors.items():
        raw = t.contiguous().numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + data)


def tiny_mamba():
    """A 2-layer Mamba as state-spaces/mamba-* ship theirs: mamba_ssm's config.json, original names
    (backbone.embedding.weight) and lm_head.weight saved tied (one storage); plus the same weights as model.safetensors
    with HF names, sharded .bin, and a LoRA adapter as legacy adapter_model.bin beside its safetensors twin."""
    torch.manual_seed(0)
    V, D, E, N, K, R, layers = 16, 8, 16, 4, 4, 1, 2
    sd = collections.OrderedDict()
    emb = torch.randn(V, D) * 0.5
    sd["backbone.embedding.weight"] = emb
    for i in range(layers):
        p = "backbone.layers.%d." % i
        sd[p + "mixer.A_log"] = torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(E, 1)
        sd[p + "mixer.D"] = torch.ones(E)
        sd[p + "mixer.in_proj.weight"] = torch.randn(2 * E, D) * 0.3
        sd[p + "mixer.conv1d.weight"] = torch.randn(E, 1, K) * 0.3
        sd[p + "mixer.conv1d.bias"] = torch.randn(E) * 0.1
        sd[p + "mixer.x_proj.weight"] = torch.randn(R + 2 * N, E) * 0.3
        sd[p + "mixer.dt_proj.weight"] = torch.randn(E, R) * 0.3
        sd[p + "mixer.dt_proj.bias"] = torch.randn(E) * 0.1 - 3
        sd[p + "mixer.out_proj.weight"] = torch.randn(D, E) * 0.3
        sd[p + "norm.weight"] = 1 + torch.randn(D) * 0.1
    sd["backbone.norm_f.weight"] = 1 + torch.randn(D) * 0.1
    sd["lm_head.weight"] = emb  # tied: one storage in the file
    config = {"d_model": D, "n_layer": layers, "vocab_size": V, "ssm_cfg": {"d_state": N, "d_conv": K, "expand": 2,
              "dt_rank": R}, "rms_norm": True, "residual_in_fp32": True, "fused_add_norm": True,
              "pad_vocab_size_multiple": 8}
    for d in ("tiny_mamba_bin", "tiny_mamba_safetensors", "tiny_mamba_sharded"):
        shutil.rmtree(out(d), ignore_errors=True)
        os.makedirs(out(d))
        with open(os.path.join(out(d), "config.json"), "w") as f:
            json.dump(config, f, indent=1)
    torch.save(sd, os.path.join(out("tiny_mamba_bin"), "pytorch_model.bin"))
    damaged = collections.OrderedDict(sd)
    damaged["backbone.norm_f.weight"] = sd["backbone.norm_f.weight"].clone()
    damaged["backbone.norm_f.weight"][3] = float("nan")
    torch.save(damaged, out("tiny_mamba_nan.bin"))  # the bad-input matrix's NaN row
    hf = collections.OrderedDict((k.replace("backbone.embedding.", "backbone.embeddings."), v) for k, v in sd.items()
                                 if k != "lm_head.weight")
    safetensors(os.path.join(out("tiny_mamba_safetensors"), "model.safetensors"), hf)
    names = list(sd)
    shards = {"pytorch_model-00001-of-00002.bin": names[: len(names) // 2],
              "pytorch_model-00002-of-00002.bin": names[len(names) // 2:]}
    weight_map = {}
    for shard, keys in shards.items():
        torch.save(collections.OrderedDict((k, sd[k]) for k in keys), os.path.join(out("tiny_mamba_sharded"), shard))
        weight_map.update({k: shard for k in keys})
    with open(os.path.join(out("tiny_mamba_sharded"), "pytorch_model.bin.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": 0}, "weight_map": weight_map}, f, indent=1)
    # LoRA r 2 on in_proj and x_proj, B non-zero so the adapter changes the outputs
    lora = collections.OrderedDict()
    for i in range(layers):
        for module, (rows, cols) in (("in_proj", (2 * E, D)), ("x_proj", (R + 2 * N, E))):
            q = "base_model.model.backbone.layers.%d.mixer.%s." % (i, module)
            lora[q + "lora_A.weight"] = torch.randn(2, cols) * 0.3
            lora[q + "lora_B.weight"] = torch.randn(rows, 2) * 0.3
    adapter_config = {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["in_proj", "x_proj"]}
    for d in ("lora_bin", "lora_safetensors"):
        shutil.rmtree(out(d), ignore_errors=True)
        os.makedirs(out(d))
        with open(os.path.join(out(d), "adapter_config.json"), "w") as f:
            json.dump(adapter_config, f, indent=1)
    torch.save(lora, os.path.join(out("lora_bin"), "adapter_model.bin"))
    safetensors(os.path.join(out("lora_safetensors"), "adapter_model.safetensors"), lora)


torch.save(views(), out("views.bin"))
rezip(out("views.bin"), out("views_deflated.bin"), compression=zipfile.ZIP_DEFLATED)
rezip(out("views.bin"), out("views_zip64.bin"), force_zip64=True)
params = collections.OrderedDict([("weight", torch.nn.Parameter(torch.arange(6, dtype=torch.float32).reshape(2, 3))),
                                  ("bias", torch.nn.Parameter(torch.tensor([0.25, -0.5]), requires_grad=False))])
torch.save(params, out("parameters_protocol4.bin"), pickle_protocol=4)
torch.save(views(), out("legacy.bin"), _use_new_zipfile_serialization=False)
torch.save({"model": views(), "step": 3}, out("training_checkpoint.bin"))
tiny_mamba()
print("torch", torch.__version__, "wrote", sorted(os.listdir(here)))
