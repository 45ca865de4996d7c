#!/bin/sh
# ldm-edit through the real program with tiny trained models: img2img at two
# strengths (strength 1 is ldm-sample's draw), inpainting that leaves every
# pixel more than 4 pixels from the mask byte-identical to the input, a
# resized mask, a folder with masks and a grid, the same bytes at 1 and 2
# threads, and a message for each bad input.
# usage: edit_cli.sh BUILD_DIR
set -u
BUILD=$(cd "$1" && pwd)
B=$BUILD/tools
. "$(dirname "$0")/testlib.sh"
same() { if cmp -s "$2" "$3"; then pass "$1"; else fail "$1 ($2 and $3 differ)"; fi; }

# pngtool: masks to order, and the pixel comparison the inpainting promise needs.
#   pngtool rect OUT W H X0 Y0 X1 Y1   grey W x H, white on [X0, X1) x [Y0, Y1)
#   pngtool size IMG                   "W H C"
#   pngtool mad A B [X]                mean |A - B| over A's pixels, grey, B's
#                                      window at x offset X (default 0)
#   pngtool far IN OUT MASK            "far F differ D near N changed K inside I
#       idiff J": pixels more than 4 px (Euclidean) from the mask's white
#       pixels, and of those how many differ between IN (converted by stb to
#       OUT's channels, as ldm-edit's reader does) and OUT; the others, and how
#       many changed; the white pixels, and how many changed
cat >"$T/pngtool.c" <<'EOC'
#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image.h>
#include <stb_image_write.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// channels: 0 for the file's own (*c), else converted to that many
static unsigned char *load(const char *p, int *w, int *h, int *c, int channels) {
    unsigned char *x = stbi_load(p, w, h, c, channels);
    if (!x) { fprintf(stderr, "%s: cannot read\n", p); exit(1); }
    if (channels) *c = channels;
    return x;
}

int main(int argc, char **argv) {
    if (argc == 9 && !strcmp(argv[1], "rect")) {
        int w = atoi(argv[3]), h = atoi(argv[4]);
        unsigned char *m = calloc((size_t)w * h, 1);
        for (int y = atoi(argv[6]); y < atoi(argv[8]); y++)
            for (int x = atoi(argv[5]); x < atoi(argv[7]); x++) m[y * w + x] = 255;
        return !stbi_write_png(argv[2], w, h, 1, m, w);
    }
    int w, h, c, w2, h2, c2, wm, hm, cm;
    if (argc == 3 && !strcmp(argv[1], "size")) {
        load(argv[2], &w, &h, &c, 0);
        printf("%d %d %d\n", w, h, c);
        return 0;
    }
    if ((argc == 4 || argc == 5) && !strcmp(argv[1], "mad")) {
        unsigned char *a = load(argv[2], &w, &h, &c, 1), *b = load(argv[3], &w2, &h2, &c2, 1);
        int off = argc == 5 ? atoi(argv[4]) : 0;
        if (h != h2 || off < 0 || off + w > w2) return 1;
        double s = 0;
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) s += abs(a[y * w + x] - b[y * w2 + x + off]);
        printf("%.3f\n", s / ((double)w * h));
        return 0;
    }
    if (argc != 5 || strcmp(argv[1], "far")) return 2;
    unsigned char *b = load(argv[3], &w2, &h2, &c2, 0), *a = load(argv[2], &w, &h, &c, c2);
    unsigned char *m = load(argv[4], &wm, &hm, &cm, 0);
    if (w != w2 || h != h2 || c != c2 || w != wm || h != hm) { fprintf(stderr, "sizes differ\n"); return 1; }
    long far = 0, differ = 0, near = 0, changed = 0, inside = 0, idiff = 0;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            int close = 0;
            for (int v = 0; v < h && !close; v++)
                for (int u = 0; u < w && !close; u++)
                    close = m[(v * w + u) * cm] >= 128 && (u - x) * (u - x) + (v - y) * (v - y) <= 16;
            int d = memcmp(a + (y * w + x) * c, b + (y * w + x) * c, c) != 0;
            if (m[(y * w + x) * cm] >= 128) inside++, idiff += d;
            if (close) near++, changed += d;
            else far++, differ += d;
        }
    printf("far %ld differ %ld near %ld changed %ld inside %ld idiff %ld\n", far, differ, near,
           changed, inside, idiff);
    return 0;
}
EOC
cc -O2 -I/usr/include/stb -o "$T/pngtool" "$T/pngtool.c" -lm || { echo "FAIL cannot build the PNG helper"; exit 1; }
P=$T/pngtool

# Tiny models: a VAE for 32x32 grey images, its cache, an unconditional UNet,
# a conditional one and one without label dropout.
V="--data fashion-mnist-test --batch 16 --base-channels 4 --threads 1 --eval-every 1000"
U="--latents $T/lat.h5 --steps 2 --base-channels 16 --batch 8 --threads 1 --eval-every 1000"
# (30 VAE steps: after 3 its decoder draws nearly the same image from any latent)
expect_ok "train a tiny VAE" "$B/vae-train" $V --out "$T/vae.h5" --steps 30
expect_ok "encode its cache" "$B/vae-encode" --vae "$T/vae.h5" --data fashion-mnist-test --out "$T/lat.h5" --threads 1
expect_ok "train a tiny UNet" "$B/ldm-train" $U --out "$T/unet.h5"
expect_ok "train a tiny conditional UNet" "$B/ldm-train" $U --out "$T/cond.h5" --num-classes 10
expect_ok "train one without label dropout" "$B/ldm-train" $U --out "$T/nodrop.h5" --num-classes 10 --p-uncond 0
# Inputs with texture: 3 generated RGB images, which the grey VAE reads as grey.
sh "$(dirname "$0")/../tools/gen-images.sh" "$T/gen" 3 32 >/dev/null 2>&1 || fail "gen-images.sh"
mkdir "$T/in" && cp "$T/gen/000/"*.png "$T/in/"
M="--unet $T/unet.h5 --vae $T/vae.h5 --steps 10 --threads 1"
E=$B/ldm-edit
IN=$T/in/000001.png

expect_ok "ldm-edit --help" "$E" --help
for f in --input --input-dir --mask --mask-dir --strength --resample --out --out-dir --grid \
         --sampler --steps --eta --class --guidance --seed --weights --threads --batch; do
    grep -q -- "^  $f " "$T/out" "$T/err" || fail "--help lacks $f"
done

# img2img
expect_ok "img2img at strength 0.3" "$E" $M --input "$IN" --out "$T/i03.png" --strength 0.3
grep -q "steps 7..9 of ddim 10" "$T/err" && pass "strength 0.3 of 10 steps runs steps 7..9" || fail "strength 0.3: $(head -1 "$T/err")"
[ "$($P size "$T/i03.png")" = "32 32 1" ] && pass "the result has the input's size" || fail "result size $($P size "$T/i03.png")"
expect_ok "img2img at strength 1.0" "$E" $M --input "$IN" --out "$T/i10.png" --strength 1 --seed 5
cmp -s "$T/i03.png" "$T/i10.png" && fail "strengths 0.3 and 1 give the same image" || pass "strengths 0.3 and 1 differ"
expect_ok "ldm-sample's image of seed 5" "$B/ldm-sample" $M --n 1 --seed 5 --out-dir "$T/s5"
same "strength 1 without a mask is ldm-sample's draw of the same seed" "$T/i10.png" "$T/s5/000000.png"
# The result follows the input at a low strength and ignores it at strength 1
# (pure noise): two inputs (rectangles), the same seed.
"$P" rect "$T/ra.png" 32 32 4 4 20 28
"$P" rect "$T/rb.png" 32 32 12 2 30 14
for s in 0.3 1; do for r in ra rb; do
    expect_ok "img2img of $r at $s" "$E" $M --input "$T/$r.png" --out "$T/$r$s.png" --strength $s
done; done
lo=$("$P" mad "$T/ra0.3.png" "$T/rb0.3.png") hi=$("$P" mad "$T/ra1.png" "$T/rb1.png")
if awk -v lo="$lo" -v hi="$hi" 'BEGIN { exit !(lo > 1 && hi == 0) }'; then
    pass "two inputs give different results at strength 0.3 (mean |diff| $lo), the same at 1 ($hi)"
else fail "two inputs: mean |diff| $lo at strength 0.3, $hi at 1 (wanted > 1 and 0)"; fi
# Strength 0.01 of 50 steps is one step from t = 0: the VAE's reconstruction
# (encode, times the scale factor, noise, denoise, divided by it, decode).
mkdir "$T/one" && cp "$IN" "$T/one/"
expect_ok "vae-reconstruct of the input" "$B/vae-reconstruct" --vae "$T/vae.h5" --data "$T/one" --n 1 --out "$T/rec.png" --threads 1
expect_ok "img2img at strength 0.01 of 50 steps" "$E" $M --input "$IN" --out "$T/e001.png" --strength 0.01 --steps 50
d=$("$P" mad "$T/e001.png" "$T/rec.png" 34)
if awk -v d="$d" 'BEGIN { exit !(d < 1) }'; then pass "strength 0.01 gives the VAE's reconstruction (mean |diff| $d)"
else fail "strength 0.01 is not the VAE's reconstruction (mean |diff| $d)"; fi
expect_ok "img2img with DPM-Solver++ at 0.6" "$E" $M --input "$IN" --out "$T/dpm.png" --strength 0.6 --sampler dpmpp2m

# inpainting: a 10 x 8 hole; every pixel more than 4 px away keeps its byte
"$P" rect "$T/mask.png" 32 32 9 12 19 20
"$P" rect "$T/mask64.png" 64 64 18 24 38 40
expect_ok "inpainting (DDIM)" "$E" $M --input "$IN" --mask "$T/mask.png" --out "$T/inp.png"
r=$("$P" far "$IN" "$T/inp.png" "$T/mask.png")
case $r in
"far "*" differ 0 near "*) case $r in *" changed 0 "*) fail "inpainting changed nothing ($r)" ;;
                                       *) pass "pixels > 4 px from the mask are the input's bytes, the hole is filled ($r)" ;; esac ;;
*) fail "inpainting touched pixels far from the mask ($r)" ;;
esac
# Without the known region put back at every step the hole would be img2img's
# pixels (same strength, same noise).
expect_ok "inpainting at strength 0.5" "$E" $M --input "$IN" --mask "$T/mask.png" --out "$T/inp05.png" --strength 0.5
expect_ok "img2img at strength 0.5" "$E" $M --input "$IN" --out "$T/i05.png" --strength 0.5
r=$("$P" far "$T/i05.png" "$T/inp05.png" "$T/mask.png")
case $r in *" idiff 0") fail "the hole is img2img's: the known region was not put back ($r)" ;;
*) pass "the known region put back changes the hole ($r)" ;; esac
expect_ok "inpainting with Euler-a and --resample 3" "$E" $M --input "$IN" --mask "$T/mask.png" --out "$T/inp_r.png" --sampler euler_a --resample 3
r=$("$P" far "$IN" "$T/inp_r.png" "$T/mask.png")
case $r in "far "*" differ 0 "*) pass "the same with resampling ($r)" ;; *) fail "resampling: $r" ;; esac
expect_ok "a 64x64 mask for a 32x32 input" "$E" $M --input "$IN" --mask "$T/mask64.png" --out "$T/inp64.png"
grep -q "resized (nearest)" "$T/err" && pass "the resize is announced" || fail "no note of the resized mask"
same "the mask resized (nearest) gives the same result as the 32x32 one" "$T/inp.png" "$T/inp64.png"

# A folder with masks by name, a grid; batch 1 makes image 0 the single run's.
mkdir "$T/masks"
cp "$T/mask.png" "$T/masks/000000.png"
"$P" rect "$T/masks/000001.png" 32 32 0 0 16 32
"$P" rect "$T/masks/000002.jpg" 32 32 20 20 32 32
expect_ok "inpainting of the folder's first image alone" "$E" $M --input "$T/in/000000.png" --mask "$T/mask.png" --out "$T/inp0.png"
expect_ok "a folder with masks and a grid" "$E" $M --input-dir "$T/in" --mask-dir "$T/masks" --out-dir "$T/o1" --grid "$T/grid.png" --batch 1 --threads 1
n=$(ls "$T/o1" | wc -l)
[ "$n" = 3 ] && [ -s "$T/grid.png" ] && pass "3 results and the grid ($($P size "$T/grid.png"))" || fail "$n results, grid $(ls "$T")"
[ "$($P size "$T/grid.png")" = "100 100 1" ] && pass "the grid is 3 x 3 images" || fail "grid size $($P size "$T/grid.png")"
same "the folder's first result (batch 1) = the single run with its mask" "$T/o1/000000.png" "$T/inp0.png"
for f in 000001 000002; do
    r=$("$P" far "$T/in/$f.png" "$T/o1/$f.png" "$T/masks/$f.png" 2>/dev/null || "$P" far "$T/in/$f.png" "$T/o1/$f.png" "$T/masks/$f.jpg")
    case $r in "far "*" differ 0 "*) pass "folder: $f's pixels far from its mask kept ($r)" ;; *) fail "folder $f: $r" ;; esac
done
expect_ok "the folder with Euler-a, resampling 2, batch 2, 1 thread" "$E" $M --input-dir "$T/in" --mask-dir "$T/masks" --out-dir "$T/t1" --sampler euler_a --resample 2 --batch 2 --threads 1
expect_ok "the same at 2 threads" "$E" $M --input-dir "$T/in" --mask-dir "$T/masks" --out-dir "$T/t2" --sampler euler_a --resample 2 --batch 2 --threads 2
for f in 000000 000001 000002; do same "$f.png bit-identical at 1 and 2 threads" "$T/t1/$f.png" "$T/t2/$f.png"; done
expect_ok "img2img of a folder without masks, with a grid" "$E" $M --input-dir "$T/in" --out-dir "$T/o2" --grid "$T/grid2.png" --strength 0.5
[ "$($P size "$T/grid2.png")" = "66 100 1" ] && pass "the grid is 3 rows of input / result" || fail "grid size $($P size "$T/grid2.png")"

# Class and guidance on conditional models.
expect_ok "img2img of class 3 with guidance 2" "$E" --unet "$T/cond.h5" --vae "$T/vae.h5" --steps 5 --input "$IN" --out "$T/c.png" --class 3 --guidance 2
expect_ok "guidance on a UNet without label dropout" "$E" --unet "$T/nodrop.h5" --vae "$T/vae.h5" --steps 5 --input "$IN" --out "$T/c.png" --class 3 --guidance 2
grep -q "without label dropout" "$T/err" && pass "... warns that its null class was never learnt" || fail "no label-dropout warning"

# Bad input: a message each, exit non-zero.
printf 'not an image' >"$T/junk.png"
mkdir "$T/empty" "$T/nomask"
"$P" rect "$T/big.png" 64 64 0 0 8 8
expect_fail "--class on an unconditional UNet" "unconditional" "$E" $M --input "$IN" --out "$T/x.png" --class 1
expect_fail "a class out of range" "out of range" "$E" --unet "$T/cond.h5" --vae "$T/vae.h5" --input "$IN" --out "$T/x.png" --class 10
expect_fail "--class all" "neither" "$E" --unet "$T/cond.h5" --vae "$T/vae.h5" --input "$IN" --out "$T/x.png" --class all
expect_fail "--strength 0" "strength" "$E" $M --input "$IN" --out "$T/x.png" --strength 0
expect_fail "--strength 1.5" "strength" "$E" $M --input "$IN" --out "$T/x.png" --strength 1.5
expect_fail "a mask that is not an image" "$T/junk.png" "$E" $M --input "$IN" --mask "$T/junk.png" --out "$T/x.png"
expect_fail "an input that cannot be decoded" "$T/junk.png" "$E" $M --input "$T/junk.png" --out "$T/x.png"
expect_fail "an input of another size" "64x64 but the VAE" "$E" $M --input "$T/big.png" --out "$T/x.png"
expect_fail "an empty input folder" "no image" "$E" $M --input-dir "$T/empty" --out-dir "$T/x"
mkdir "$T/bad" && cp "$IN" "$T/bad/a.png" && cp "$T/junk.png" "$T/bad/b.png"
expect_fail "a folder input that cannot be decoded" "$T/bad/b.png" "$E" $M --input-dir "$T/bad" --out-dir "$T/x"
expect_fail "--out onto the input" "same file" "$E" $M --input "$IN" --out "$IN"
expect_fail "--out-dir onto the input folder" "same file" "$E" $M --input-dir "$T/in" --out-dir "$T/in"
expect_fail "--grid onto an input" "same file" "$E" $M --input-dir "$T/in" --out-dir "$T/x" --grid "$T/in/000000.png"
mkdir "$T/twice" && cp "$IN" "$T/twice/a.png" && cp "$IN" "$T/twice/a.k.png" && cp "$IN" "$T/twice/a.jpg"
expect_fail "a.jpg and a.png in one folder" "both be written as $T/x/a.png" "$E" $M --input-dir "$T/twice" --out-dir "$T/x"
expect_fail "an input without its mask" "no mask" "$E" $M --input-dir "$T/in" --mask-dir "$T/nomask" --out-dir "$T/x"
expect_fail "--resample without a mask" "needs a mask" "$E" $M --input "$IN" --out "$T/x.png" --resample 2
expect_fail "--input and --input-dir" "one of" "$E" $M --input "$IN" --input-dir "$T/in" --out "$T/x.png"
expect_fail "--input without --out" "takes --out" "$E" $M --input "$IN"
[ ! -e "$T/x" ] && [ ! -e "$T/x.png" ] && pass "nothing written by the refused runs" || fail "a refused run wrote $T/x or $T/x.png"

finish edit_cli
