"""Converts a published KL autoencoder (latent-diffusion's AutoencoderKL:
the kl-f4/f8/f16 first-stage models, Stable Diffusion's VAE) to the HDF5
checkpoint that the C side loads as a `vae-kl` model:

  root attributes: kind "vae", model "vae-kl", in_channels, image_size,
    ch, ch_mult ("1,2,4,4"), num_res_blocks, attn_resolutions ("" for none,
    else "16" or "32,16"), z_channels, groups (32), step 0, source (the
    input's file name)
  /model/<key>  float32 in PyTorch shapes, keys of kl_mirror.KLAutoencoder's
    state_dict (= latent-diffusion's AutoencoderKL keys)

Inputs:
  (a) a latent-diffusion / Stable Diffusion .ckpt (a dict with "state_dict"):
      encoder.*, decoder.*, quant_conv.*, post_quant_conv.* are kept (under
      "first_stage_model." in a whole Stable Diffusion checkpoint), loss.* and
      everything else dropped;
  (b) a diffusers AutoencoderKL state_dict: diffusion_pytorch_model.bin
      (torch.load) or .safetensors (the safetensors module when it imports,
      else the format is read here: a little-endian u64 header length, a
      JSON header, raw little-endian tensors).
Pickles are read with torch.load(weights_only=True); a checkpoint that holds
more than tensors and plain containers needs --unsafe-pickle (only for files
you trust: unpickling runs code).

diffusers' names, as huggingface/diffusers scripts/
convert_diffusers_to_original_stable_diffusion.py maps them (vae_conversion_map,
vae_conversion_map_attn): encoder.down_blocks.<i>.resnets.<j> =
encoder.down.<i>.block.<j>, down_blocks.<i>.downsamplers.0 = down.<i>.downsample,
decoder.up_blocks.<i> = decoder.up.<L-1-i> (reversed: up_blocks.0 is the
lowest resolution), up_blocks.<i>.upsamplers.0 = up.<L-1-i>.upsample,
mid_block.resnets.<0|1> = mid.block_<1|2>, mid_block.attentions.0 = mid.attn_1,
conv_shortcut = nin_shortcut, conv_norm_out = norm_out; in attention blocks
group_norm = norm, to_q/to_k/to_v/to_out.0 (newer) or query/key/value/proj_attn
(older) = q/k/v/proj_out, their Linear (C, C) weights reshaped to conv
(C, C, 1, 1).

ch, ch_mult, num_res_blocks, z_channels and in_channels are read off the
tensor shapes, the attention levels off the tensors present (attn_resolutions
= image_size >> level, so they follow --image-size, 256 by default, the size
the published models were trained at); then every tensor is checked against
kl_mirror's network of that configuration: a missing, misshapen or unknown
tensor is refused with its name (exit status 1).

  /usr/bin/python3 tests/reference/convert_kl_vae.py model.ckpt vae-kl-f8.h5
  /usr/bin/python3 tests/reference/convert_kl_vae.py \
      vae/diffusion_pytorch_model.safetensors sd-vae.h5
"""
import argparse
import json
import os
import re
import sys

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kl_mirror as M  # noqa: E402

PARTS = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")
GROUPS = 32


class ConvertError(Exception):
    """A problem with the input file; the message names the file and tensor."""


# ---------------------------------------------------------------- reading

SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64}


def read_safetensors(path):
    try:
        from safetensors.torch import load_file
        return load_file(path, device="cpu")
    except ImportError:
        pass
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ConvertError(f"{path}: not a safetensors file (too short)")
    n = int.from_bytes(raw[:8], "little")
    if n > len(raw) - 8:
        raise ConvertError(f"{path}: not a safetensors file (header length {n})")
    try:
        header = json.loads(raw[8:8 + n])
    except ValueError as e:
        raise ConvertError(f"{path}: not a safetensors file (header: {e})")
    data = memoryview(raw)[8 + n:]
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        lo, hi = t["data_offsets"]
        if not 0 <= lo <= hi <= len(data):
            raise ConvertError(f"{path}: tensor {name}: data outside the file")
        dt = t["dtype"]
        if dt == "BF16":  # no numpy type: the high half of a float32
            u = np.frombuffer(data[lo:hi], dtype="<u2").astype(np.uint32) << 16
            a = u.view(np.float32)
        elif dt in SAFETENSORS_DTYPES:
            a = np.frombuffer(data[lo:hi], dtype=np.dtype(SAFETENSORS_DTYPES[dt]).newbyteorder("<"))
        else:
            raise ConvertError(f"{path}: tensor {name}: dtype {dt} is not a float type")
        shape = tuple(t["shape"])
        if a.size != int(np.prod(shape, dtype=np.int64)):
            raise ConvertError(f"{path}: tensor {name}: {a.size} values for shape {shape}")
        out[name] = torch.from_numpy(a.astype(np.float32).reshape(shape))
    return out


def read_tensors(path, unsafe_pickle=False):
    """The file's tensors by name, any float type, as float32."""
    if path.endswith(".safetensors"):
        sd = read_safetensors(path)
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=not unsafe_pickle)
        except FileNotFoundError:
            raise ConvertError(f"{path}: no such file")
        except Exception as e:  # pickle and zip errors have no common base
            hint = "" if unsafe_pickle else (
                " (a checkpoint holding more than tensors needs --unsafe-pickle, for files "
                "you trust)")
            raise ConvertError(f"{path}: cannot read: {str(e) or type(e).__name__}{hint}")
        if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
            obj = obj["state_dict"]
        if not isinstance(obj, dict):
            raise ConvertError(f"{path}: not a state_dict or checkpoint (a {type(obj).__name__})")
        sd = {k: v for k, v in obj.items() if torch.is_tensor(v)}
    for k, v in sd.items():
        if not v.is_floating_point():
            raise ConvertError(f"{path}: tensor {k} is {v.dtype}, not a float type")
    return {k: v.float() for k, v in sd.items()}


# ------------------------------------------------------------ diffusers names

RESNET_DIFFUSERS = {"conv_shortcut": "nin_shortcut"}
ATTN_DIFFUSERS = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v",
                  "to_out.0": "proj_out", "query": "q", "key": "k", "value": "v",
                  "proj_attn": "proj_out"}
ATTN_NEW = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
ATTN_OLD = {"norm": "group_norm", "q": "query", "k": "key", "v": "value", "proj_out": "proj_attn"}


def is_diffusers(sd):
    return any(".down_blocks." in k or ".mid_block." in k or ".up_blocks." in k for k in sd)


def levels_of(sd, pattern, path):
    """Number of levels 0..L-1 of the indices `pattern` (one group) matches;
    refuses a gap."""
    idx = {int(m.group(1)) for k in sd for m in [re.match(pattern, k)] if m}
    if idx and idx != set(range(max(idx) + 1)):
        raise ConvertError(f"{path}: levels {sorted(idx)} of {pattern} have a gap")
    return len(idx)


def split_leaf(rest, table, path, key):
    """'conv_shortcut.weight' -> ('nin_shortcut', 'weight') through table;
    names not in the table stay as they are."""
    sub, _, leaf = rest.rpartition(".")
    if leaf not in ("weight", "bias"):
        raise ConvertError(f"{path}: tensor {key}: not a weight or bias")
    return table.get(sub, sub), leaf


def diffusers_to_ldm(sd, path):
    L = levels_of(sd, r"encoder\.down_blocks\.(\d+)\.", path)
    if levels_of(sd, r"decoder\.up_blocks\.(\d+)\.", path) != L:
        raise ConvertError(f"{path}: the encoder's down_blocks and the decoder's up_blocks "
                           f"differ in number")
    out = {}
    for k, v in sd.items():
        m = re.match(r"(encoder|decoder)\.(.*)$", k)
        if not m:
            if k.startswith(("quant_conv.", "post_quant_conv.")):
                out[k] = v
                continue
            raise ConvertError(f"{path}: tensor {k} is not part of an AutoencoderKL")
        part, rest = m.groups()
        name = None
        r = re.match(r"(down|up)_blocks\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)"
                     r"\.(\d+)\.(.*)$", rest)
        if r:
            kind, i, what, j, tail = r.groups()
            i, j = int(i), int(j)
            if (kind == "down") != (part == "encoder"):
                raise ConvertError(f"{path}: tensor {k}: {kind}_blocks in the {part}")
            lv = i if kind == "down" else L - 1 - i
            prefix = f"{part}.{'down' if kind == 'down' else 'up'}.{lv}"
            if what == "resnets":
                sub, leaf = split_leaf(tail, RESNET_DIFFUSERS, path, k)
                name = f"{prefix}.block.{j}.{sub}.{leaf}"
            elif what == "attentions":
                sub, leaf = split_leaf(tail, ATTN_DIFFUSERS, path, k)
                name = f"{prefix}.attn.{j}.{sub}.{leaf}"
            elif j == 0 and tail.startswith("conv."):
                name = f"{prefix}.{'downsample' if what == 'downsamplers' else 'upsample'}.{tail}"
        else:
            r = re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.*)$", rest)
            if r:
                what, j, tail = r.groups()
                if what == "resnets" and j in ("0", "1"):
                    sub, leaf = split_leaf(tail, RESNET_DIFFUSERS, path, k)
                    name = f"{part}.mid.block_{int(j) + 1}.{sub}.{leaf}"
                elif what == "attentions" and j == "0":
                    sub, leaf = split_leaf(tail, ATTN_DIFFUSERS, path, k)
                    name = f"{part}.mid.attn_1.{sub}.{leaf}"
            elif rest.startswith("conv_norm_out."):
                name = f"{part}.norm_out.{rest[len('conv_norm_out.'):]}"
            elif rest.startswith(("conv_in.", "conv_out.")):
                name = k
        if name is None:
            raise ConvertError(f"{path}: tensor {k} has no latent-diffusion name")
        if ".attn" in name and v.dim() == 2:
            v = v.reshape(*v.shape, 1, 1)  # Linear (C, C) -> conv (C, C, 1, 1)
        if name in out:
            raise ConvertError(f"{path}: tensor {k}: a second tensor for {name}")
        out[name] = v
    return out


def ldm_to_diffusers(sd, attn="new"):
    """The inverse, for the tests: latent-diffusion keys -> diffusers keys,
    attention names of the newer (to_q...) or older (query...) diffusers,
    their weights as Linear (C, C)."""
    table = ATTN_NEW if attn == "new" else ATTN_OLD
    L = levels_of(sd, r"encoder\.down\.(\d+)\.", "<state_dict>")
    out = {}
    for k, v in sd.items():
        name = k
        m = re.match(r"(encoder|decoder)\.(down|up)\.(\d+)\.(block|attn|downsample|upsample)"
                     r"\.(.*)$", k)
        m_mid = re.match(r"(encoder|decoder)\.mid\.(block_1|block_2|attn_1)\.(.*)$", k)
        attn_block = False
        if m:
            part, kind, lv, what, tail = m.groups()
            i = int(lv) if kind == "down" else L - 1 - int(lv)
            prefix = f"{part}.{kind}_blocks.{i}"
            if what in ("block", "attn"):
                j, _, tail = tail.partition(".")
                attn_block = what == "attn"
                name = f"{prefix}.{'attentions' if attn_block else 'resnets'}.{j}.{tail}"
            else:
                name = f"{prefix}.{what}rs.0.{tail}"  # downsamplers / upsamplers
        elif m_mid:
            part, what, tail = m_mid.groups()
            attn_block = what == "attn_1"
            name = (f"{part}.mid_block.attentions.0.{tail}" if attn_block else
                    f"{part}.mid_block.resnets.{int(what[-1]) - 1}.{tail}")
        elif re.match(r"(encoder|decoder)\.norm_out\.", k):
            name = k.replace(".norm_out.", ".conv_norm_out.")
        sub, _, leaf = name.rpartition(".")
        head, _, last = sub.rpartition(".")
        if attn_block:
            sub = f"{head}.{table[last]}"
            if leaf == "weight" and last != "norm":
                v = v.reshape(v.shape[0], v.shape[1])
        elif last == "nin_shortcut":
            sub = f"{head}.conv_shortcut"
        out[f"{sub}.{leaf}"] = v
    return out


# ------------------------------------------------------------ configuration

def select_autoencoder(sd, path):
    """The AutoencoderKL's tensors of a checkpoint: top-level encoder.* ...,
    or those under first_stage_model. (a whole Stable Diffusion checkpoint)."""
    if not any(k.startswith(PARTS) for k in sd):
        pre = "first_stage_model."
        if any(k.startswith(pre + p) for k in sd for p in PARTS):
            sd = {k[len(pre):]: v for k, v in sd.items() if k.startswith(pre)}
        else:
            raise ConvertError(f"{path}: no encoder.* / decoder.* tensors: not an "
                               f"autoencoder checkpoint")
    return {k: v for k, v in sd.items() if k.startswith(PARTS)}


def tensor(sd, name, path, ndim=None):
    if name not in sd:
        raise ConvertError(f"{path}: missing tensor {name}")
    t = sd[name]
    if ndim is not None and t.dim() != ndim:
        raise ConvertError(f"{path}: tensor {name} has shape {tuple(t.shape)}, "
                           f"expected {ndim} dimensions")
    return t


def infer_config(sd, path, image_size):
    w = tensor(sd, "encoder.conv_in.weight", path, 4)
    ch, in_channels = w.shape[0], w.shape[1]
    L = levels_of(sd, r"encoder\.down\.(\d+)\.", path)
    if L == 0:
        raise ConvertError(f"{path}: missing tensor encoder.down.0.block.0.conv1.weight")
    nrb = 0
    while f"encoder.down.0.block.{nrb}.conv1.weight" in sd:
        nrb += 1
    if nrb == 0:
        raise ConvertError(f"{path}: missing tensor encoder.down.0.block.0.conv1.weight")
    ch_mult = []
    for lv in range(L):
        name = f"encoder.down.{lv}.block.0.conv1.weight"
        c = tensor(sd, name, path, 4).shape[0]
        if c % ch:
            raise ConvertError(f"{path}: tensor {name}: {c} channels, not a multiple of "
                               f"conv_in's {ch}")
        if c % GROUPS:
            raise ConvertError(f"{path}: tensor {name}: {c} channels, not a multiple of the "
                               f"{GROUPS} GroupNorm groups")
        ch_mult.append(c // ch)
    z = tensor(sd, "decoder.conv_in.weight", path, 4).shape[1]
    zz = tensor(sd, "encoder.conv_out.weight", path, 4).shape[0]
    if zz != 2 * z:
        raise ConvertError(f"{path}: tensor encoder.conv_out.weight has {zz} output channels, "
                           f"expected 2 x {z} (decoder.conv_in's latent channels)")
    if image_size % 2 ** (L - 1):
        raise ConvertError(f"--image-size {image_size} is not a multiple of 2^{L - 1} "
                           f"({L} levels in {path})")
    attn = []
    for lv in range(L):
        enc = f"encoder.down.{lv}.attn.0.q.weight" in sd
        dec = f"decoder.up.{lv}.attn.0.q.weight" in sd
        if enc != dec:
            raise ConvertError(f"{path}: missing tensor "
                               f"{'decoder.up' if enc else 'encoder.down'}.{lv}.attn.0.q.weight "
                               f"(attention at level {lv} of one side only)")
        if enc:
            attn.append(image_size >> lv)
    return dict(ch=int(ch), ch_mult=[int(m) for m in ch_mult], num_res_blocks=nrb,
                attn_resolutions=attn, z_channels=int(z), in_channels=int(in_channels),
                image_size=image_size, groups=GROUPS)


def check_against_mirror(sd, cfg, path, diffusers=False):
    """sd's tensors in the mirror's state_dict order; refuses a missing,
    misshapen, unknown or non-finite tensor by name (for a diffusers file
    also by its diffusers name). Shapes are compared in latent-diffusion's
    layout (attention weights already reshaped to conv)."""
    net = M.KLAutoencoder(cfg["ch"], tuple(cfg["ch_mult"]), cfg["num_res_blocks"],
                          tuple(cfg["attn_resolutions"]), cfg["z_channels"], cfg["in_channels"],
                          cfg["image_size"], cfg["groups"])
    want = net.state_dict()
    alias = dict(zip(want, ldm_to_diffusers(want))) if diffusers else {}

    def named(k):
        return f"{k} ({alias[k]})" if k in alias else k

    for k in sd:
        if k not in want:
            raise ConvertError(f"{path}: unknown tensor {k} (not in the vae-kl network of "
                               f"{describe(cfg)})")
    out = {}
    for k, ref in want.items():
        if k not in sd:
            raise ConvertError(f"{path}: missing tensor {named(k)}")
        t = sd[k]
        if tuple(t.shape) != tuple(ref.shape):
            raise ConvertError(f"{path}: tensor {named(k)} has shape {tuple(t.shape)}, "
                               f"expected {tuple(ref.shape)}")
        if not torch.isfinite(t).all():
            raise ConvertError(f"{path}: tensor {named(k)} holds NaN or infinite values")
        out[k] = t
    return out


def describe(cfg):
    return (f"ch {cfg['ch']}, ch_mult {','.join(map(str, cfg['ch_mult']))}, num_res_blocks "
            f"{cfg['num_res_blocks']}, z_channels {cfg['z_channels']}, attn_resolutions "
            f"'{','.join(map(str, cfg['attn_resolutions']))}'")


def write_h5(sd, cfg, out, source, step=0, groups=None):
    """The checkpoint at `out`, written beside it and renamed when whole.
    groups: more {group: {key: tensor}} beside /model (torch_train_kl.py's
    discriminator)."""
    tmp = out + ".tmp"
    with h5py.File(tmp, "w", libver=("v110", "v110")) as f:
        f.attrs["kind"] = "vae"
        f.attrs["model"] = "vae-kl"
        for a in ("in_channels", "image_size", "ch", "num_res_blocks", "z_channels", "groups"):
            f.attrs[a] = np.int64(cfg[a])
        f.attrs["ch_mult"] = ",".join(map(str, cfg["ch_mult"]))
        f.attrs["attn_resolutions"] = ",".join(map(str, cfg["attn_resolutions"]))
        f.attrs["step"] = np.int64(step)
        f.attrs["source"] = source
        for name, tensors in [("model", sd)] + list((groups or {}).items()):
            g = f.create_group(name)
            for k, v in tensors.items():
                g.create_dataset(k, data=v.detach().cpu().numpy().astype(np.float32))
    os.replace(tmp, out)


def convert(inp, out, image_size=256, unsafe_pickle=False):
    """Returns (config, tensors written)."""
    sd = read_tensors(inp, unsafe_pickle)
    diffusers = is_diffusers(sd)
    sd = diffusers_to_ldm(sd, inp) if diffusers else select_autoencoder(sd, inp)
    cfg = infer_config(sd, inp, image_size)
    sd = check_against_mirror(sd, cfg, inp, diffusers)
    write_h5(sd, cfg, out, os.path.basename(inp))
    return cfg, sd


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("input", help="latent-diffusion .ckpt, or diffusers .bin / .safetensors")
    ap.add_argument("out", help="the HDF5 checkpoint to write")
    ap.add_argument("--image-size", type=int, default=256,
                    help="image side the checkpoint declares (default 256)")
    ap.add_argument("--unsafe-pickle", action="store_true",
                    help="unpickle any object (trusted files only: unpickling runs code)")
    a = ap.parse_args()
    if a.image_size < 1:
        ap.error("--image-size must be positive")
    try:
        cfg, sd = convert(a.input, a.out, a.image_size, a.unsafe_pickle)
    except ConvertError as e:
        sys.exit(f"convert_kl_vae: {e}")
    n = sum(v.numel() for v in sd.values())
    print(f"{a.out}: vae-kl, {describe(cfg)}, in_channels {cfg['in_channels']}, image_size "
          f"{cfg['image_size']}, {len(sd)} tensors, {n:,} parameters")


if __name__ == "__main__":
    main()
