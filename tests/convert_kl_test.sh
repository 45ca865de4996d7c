#!/bin/sh
# The published-autoencoder converter (tests/reference/convert_kl_vae.py) on
# random weights of kl_mirror at a small configuration (ch 32, ch_mult 1,2,
# one block per level, attention at the 16x16 level, 32x32 RGB), saved in
# every layout it reads: a latent-diffusion .ckpt (with loss.* tensors to
# drop), a whole Stable Diffusion checkpoint (first_stage_model.*), diffusers
# state_dicts with the newer and the older attention names, and a
# .safetensors file; each converted file must hold exactly the mirror's
# tensors and configuration. Bad files must be refused naming the tensor.
# Then, when the C side loads vae-kl checkpoints, vae-reconstruct on the
# converted file must give the mirror's PSNR on the same images.
# Usage: tests/convert_kl_test.sh [BUILD_DIR]   (needs /usr/bin/python3 with torch)
. "$(dirname "$0")/testlib.sh"
SRC=$(cd "$(dirname "$0")" && pwd)
B=${1:-build}
PY=/usr/bin/python3
if ! $PY -c "import torch, h5py" 2>/dev/null; then
    echo "SKIP convert_kl_test: $PY cannot import torch and h5py"
    exit 77
fi
CONV="$SRC/reference/convert_kl_vae.py"

# Writes the model in every layout, the reference tensors and a few images.
cat >"$T/make.py" <<'EOF'
import json, os, sys
import numpy as np, torch, h5py
from PIL import Image
sys.path.insert(0, sys.argv[1])
import kl_mirror as M, convert_kl_vae as C
T = sys.argv[2]
torch.manual_seed(0)
net = M.KLAutoencoder(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(16,),
                      z_channels=4, in_channels=3, image_size=32)
with torch.no_grad():  # no tensor left at its init value (GN weights 1, biases 0)
    for p in net.parameters():
        p.add_(0.05 * torch.randn_like(p))
sd = net.state_dict()
with h5py.File(f"{T}/ref.h5", "w") as f:
    for k, v in sd.items():
        f[k] = v.numpy()
extra = {"loss.logvar": torch.zeros(()), "loss.discriminator.main.0.weight": torch.randn(8, 3, 4, 4)}
torch.save({"state_dict": {**sd, **extra}, "global_step": 7}, f"{T}/ldm.ckpt")
torch.save({"state_dict": {**{"first_stage_model." + k: v for k, v in sd.items()},
                           "model.diffusion_model.out.2.weight": torch.randn(4, 8, 3, 3)}},
           f"{T}/sd.ckpt")
new, old = C.ldm_to_diffusers(sd, "new"), C.ldm_to_diffusers(sd, "old")
# The inverse mapping is the converter's own: pin it to diffusers' names
# (huggingface/diffusers scripts/convert_diffusers_to_original_stable_diffusion.py),
# so that one mistake made both ways cannot pass.
shape = lambda d, k: tuple(d[k].shape)
assert shape(new, "decoder.up_blocks.0.resnets.0.conv1.weight") == (64, 64, 3, 3)  # lowest res first
assert shape(new, "decoder.up_blocks.0.upsamplers.0.conv.weight") == (64, 64, 3, 3)
assert shape(new, "decoder.up_blocks.1.resnets.0.conv_shortcut.weight") == (32, 64, 1, 1)
assert "decoder.up_blocks.1.upsamplers.0.conv.weight" not in new
assert shape(new, "decoder.up_blocks.0.attentions.1.to_q.weight") == (64, 64)  # 16x16 level
assert shape(new, "encoder.down_blocks.0.downsamplers.0.conv.weight") == (32, 32, 3, 3)
assert shape(new, "encoder.down_blocks.1.resnets.0.conv_shortcut.weight") == (64, 32, 1, 1)
assert shape(new, "encoder.down_blocks.1.attentions.0.group_norm.weight") == (64,)
assert shape(new, "encoder.mid_block.resnets.1.norm2.weight") == (64,)
assert shape(new, "decoder.mid_block.attentions.0.to_out.0.weight") == (64, 64)
assert shape(old, "decoder.mid_block.attentions.0.proj_attn.weight") == (64, 64)
assert shape(old, "encoder.mid_block.attentions.0.query.bias") == (64,)
assert shape(new, "encoder.conv_norm_out.bias") == (64,) and "decoder.conv_norm_out.weight" in new
assert len(new) == len(sd) == len(old)
torch.save(new, f"{T}/diffusers_new.bin")
torch.save(old, f"{T}/diffusers_old.bin")
# .safetensors by its published layout: u64 header length, JSON, raw bytes.
header, blobs, off = {}, [], 0
for k, v in new.items():
    b = v.numpy().astype("<f4").tobytes()
    header[k] = {"dtype": "F32", "shape": list(v.shape), "data_offsets": [off, off + len(b)]}
    blobs.append(b); off += len(b)
h = json.dumps(header).encode()
with open(f"{T}/diffusers.safetensors", "wb") as f:
    f.write(len(h).to_bytes(8, "little")); f.write(h); f.write(b"".join(blobs))
# Bad files: a missing tensor, a misshapen one, one too many.
bad = dict(sd); del bad["decoder.up.0.block.1.conv2.weight"]
torch.save({"state_dict": bad}, f"{T}/missing.ckpt")
bad = dict(sd); bad["encoder.mid.attn_1.k.weight"] = torch.randn(64, 32, 1, 1)
torch.save({"state_dict": bad}, f"{T}/shape.ckpt")
bad = dict(sd); bad["decoder.up.1.block.0.time_emb_proj.weight"] = torch.randn(64, 8)
torch.save({"state_dict": bad}, f"{T}/extra.ckpt")
bad = dict(new); del bad["decoder.up_blocks.0.resnets.1.norm2.bias"]
torch.save(bad, f"{T}/diffusers_missing.bin")
bad = dict(new); bad["encoder.mid_block.attentions.0.to_v.weight"] = torch.randn(64, 63)
torch.save(bad, f"{T}/diffusers_shape.bin")
torch.save({"state_dict": {**sd, "encoder.conv_in.weight": sd["encoder.conv_in.weight"].long()}},
           f"{T}/int.ckpt")
# Images for the PSNR check, and the mirror's PSNR on them (decode of the
# posterior mean, clamped to [-1, 1], 10 log10(4 / MSE), as vae-reconstruct).
os.makedirs(f"{T}/img")
rng = np.random.default_rng(0)
xs = []
for i in range(4):
    a = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    a = (a.astype(np.float32) * 0.3 + np.linspace(0, 170, 32)[None, :, None]).astype(np.uint8)
    Image.fromarray(a).save(f"{T}/img/{i}.png")
    xs.append(torch.from_numpy(a).permute(2, 0, 1).float() / 127.5 - 1)
x = torch.stack(xs)
with torch.no_grad():
    xh = net.decode(net.encode(x)[0]).clamp(-1, 1)
mse = ((xh.double() - x.double()) ** 2).mean().item()
print(f"{10 * np.log10(4 / mse):.3f}")
EOF
if ! $PY "$T/make.py" "$SRC/reference" "$T" >"$T/psnr" 2>"$T/make.err"; then
    fail "making the test models"; cat "$T/make.err"
    finish convert_kl_test; exit 1
fi

# same OUT: the converted file holds exactly the reference tensors and the
# small configuration's attributes.
cat >"$T/same.py" <<'EOF'
import sys, h5py, numpy as np
out, ref = sys.argv[1], sys.argv[2]
want = dict(kind="vae", model="vae-kl", in_channels=3, image_size=32, ch=32, ch_mult="1,2",
            num_res_blocks=1, attn_resolutions="16", z_channels=4, groups=32, step=0)
with h5py.File(out) as f, h5py.File(ref) as r:
    for k, v in want.items():
        got = f.attrs[k]
        got = got.decode() if isinstance(got, bytes) else got
        assert got == v, f"attribute {k}: {got!r}, expected {v!r}"
    g = f["model"]
    assert sorted(g.keys()) == sorted(r.keys()), set(g.keys()) ^ set(r.keys())
    for k in r:
        assert g[k].dtype == np.float32, k
        assert np.array_equal(g[k][()], r[k][()]), f"{k} differs"
    print(len(r), "tensors equal")
EOF
for f in ldm.ckpt sd.ckpt diffusers_new.bin diffusers_old.bin diffusers.safetensors; do
    expect_ok "convert $f" $PY "$CONV" "$T/$f" "$T/$f.h5" --image-size 32
    check "$f: tensors and attributes equal to the mirror's ($(tail -c 80 "$T/out" | tr -d '\n'))" \
        $PY "$T/same.py" "$T/$f.h5" "$T/ref.h5"
done
expect_ok "default image size 256" $PY "$CONV" "$T/ldm.ckpt" "$T/d256.h5"
check "image_size 256 puts the attention at 128" $PY -c "
import h5py; f = h5py.File('$T/d256.h5'); a = f.attrs['attn_resolutions']
assert f.attrs['image_size'] == 256 and (a.decode() if isinstance(a, bytes) else a) == '128'"

expect_fail "missing tensor named" "missing tensor decoder.up.0.block.1.conv2.weight" \
    $PY "$CONV" "$T/missing.ckpt" "$T/bad.h5" --image-size 32
expect_fail "misshapen tensor named" "tensor encoder.mid.attn_1.k.weight has shape (64, 32, 1, 1)" \
    $PY "$CONV" "$T/shape.ckpt" "$T/bad.h5" --image-size 32
expect_fail "unknown tensor named" "unknown tensor decoder.up.1.block.0.time_emb_proj.weight" \
    $PY "$CONV" "$T/extra.ckpt" "$T/bad.h5" --image-size 32
expect_fail "diffusers: missing tensor named in both namings" \
    "missing tensor decoder.up.1.block.1.norm2.bias (decoder.up_blocks.0.resnets.1.norm2.bias)" \
    $PY "$CONV" "$T/diffusers_missing.bin" "$T/bad.h5" --image-size 32
expect_fail "diffusers: misshapen tensor named" "encoder.mid.attn_1.v.weight" \
    $PY "$CONV" "$T/diffusers_shape.bin" "$T/bad.h5" --image-size 32
expect_fail "integer tensor refused" "tensor encoder.conv_in.weight is torch.int64" \
    $PY "$CONV" "$T/int.ckpt" "$T/bad.h5" --image-size 32
expect_fail "missing file" "nope.ckpt: no such file" $PY "$CONV" "$T/nope.ckpt" "$T/bad.h5"
check "no output left by a refused file" test ! -e "$T/bad.h5"
echo "garbage" >"$T/junk.ckpt"
expect_fail "not a checkpoint" "junk.ckpt: cannot read" $PY "$CONV" "$T/junk.ckpt" "$T/bad.h5"

# The C side on the converted file: the mirror's PSNR on the same images.
R="$B/tools/vae-reconstruct"
if [ -x "$R" ]; then
    OMP_NUM_THREADS=2 timeout 120 "$R" --vae "$T/diffusers_new.bin.h5" --data "$T/img" --n 4 \
        --out "$T/rec.png" >"$T/rec.out" 2>"$T/rec.err"
    rc=$?
    # A build without the vae-kl loader reads the file as a vae-f4c4 one and
    # misses that model's first attribute; any other failure is one.
    if [ $rc -ne 0 ] && grep -q "missing attribute 'base_channels'" "$T/rec.err"; then
        echo "SKIP vae-reconstruct on the converted file: this build does not load vae-kl ($(head -1 "$T/rec.err"))"
    else
        want=$(cat "$T/psnr")
        got=$(sed -n 's/^PSNR \([-0-9.]*\) dB.*/\1/p' "$T/rec.out")
        check "vae-reconstruct PSNR $got dB = the mirror's $want dB (within 0.01)" \
            $PY -c "import sys; sys.exit(not ('$got' and abs(float('$got') - $want) <= 0.01))"
    fi
else
    echo "SKIP vae-reconstruct on the converted file: $R not built"
fi
finish convert_kl_test
