// ldm-eval: FID, KID and Inception Score of a set of images against a
// reference, in the feature space of a network loaded from HDF5 (metrics/),
// and the reference statistics themselves.
//
//   ldm-eval stats (--data SRC | --images DIR) [--net NET] --out ref.h5
//   ldm-eval fid|kid (--images DIR | --stats a.h5 | --unet U --vae V --n N)
//                    (--ref ref.h5 | --data SRC)
//   ldm-eval is (--images DIR | --unet U --vae V --n N)
//
// Every image reaches the network the same way, whatever its source: 8-bit
// pixels (a folder's PNGs, an IDX file) as floats x / 127.5 - 1, then the
// network's own preprocessing (featnet.h: bilinear resize to its input side,
// grey <-> RGB). Images drawn from a model (--unet) are rounded to 8 bits
// first, so they score exactly as the PNGs ldm-sample would write. The score
// is the last line of standard output ("FID 12.3456").
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "args.h"
#include "common.h"
#include "featnet.h"
#include "image.h"
#include "imageset.h"
#include "paths.h"
#include "progress.h"
#include "stats.h"
#include "toolkit.h"

static void meta_of(FeatMeta *m, const FeatNet *f) {
    memset(m, 0, sizeof *m);
    snprintf(m->net, sizeof m->net, "%s", f->name);
    snprintf(m->net_hash, sizeof m->net_hash, "%s", f->hash);
    snprintf(m->preprocess, sizeof m->preprocess, "%s", f->preprocess);
}

// The side a source is read at: its own (featnet resizes in float, as the
// reference FID code does, rather than the reader in 8 bits). IDX sources:
// the project's fmnist32 convention (28 zero-padded to 32). A folder: the
// side of its first image; images of other sizes are resized and centre-
// cropped to it by the reader (README).
static int source_side(const char *src, int want, int *side) {
    struct stat st;
    if (want > 0 || stat(src, &st) != 0 || !S_ISDIR(st.st_mode)) return *side = want > 0 ? want : 32, 0;
    ImageSet probe;
    // Opening with a memory limit of 0 streams: only headers are read.
    if (imageset_open(&probe, src, 32, 1, 0)) return -1;
    int w, h, rc = imageset_item_size(&probe, 0, &w, &h);
    imageset_free(&probe);
    if (rc) return -1;
    *side = w < h ? w : h;
    return 0;
}

// Features (and logits when wanted) of the first n items of src: feat (n, D),
// logits (n, K). *n_out: how many (all when n <= 0). Arrays are malloc'd.
static int source_features(FeatNet *f, const char *src, int side, int64_t n, int batch,
                           float **feat, float **logits, int64_t *n_out) {
    ImageSet set;
    size_t max_memory = imageset_default_max_memory();
    int C = f->in_c == 1 ? 1 : 3;
    if (imageset_open(&set, src, side, C, max_memory)) return -1;
    if (n <= 0 || n > set.N) n = set.N;
    if (n < 1) {
        imageset_free(&set);
        return errorf("%s: no images", src);
    }
    if (batch > n) batch = (int)n;
    if (imageset_check_memory(&set, batch, max_memory)) return imageset_free(&set), -1;
    if (set.skipped)
        fprintf(stderr, "ldm-eval: %s: %d files could not be decoded and were skipped\n", src,
                set.skipped);
    size_t img = (size_t)C * side * side;
    float *x = xmalloc_aligned((size_t)batch * img * sizeof(float)); // (batch, C, side, side)
    int *idx = xmalloc((size_t)batch * sizeof *idx);
    *feat = xmalloc((size_t)n * f->dim * sizeof(float));
    if (logits) *logits = xmalloc((size_t)n * f->n_logits * sizeof(float));
    Progress prog;
    progress_init(&prog, 0);
    fprintf(stderr, "ldm-eval: %lld images of %s (%d x %d, %s) through %s\n", (long long)n,
            set.source, side, side, C == 1 ? "grey" : "RGB", f->name);
    int rc = 0;
    long nb = (long)((n + batch - 1) / batch);
    for (int64_t i0 = 0; i0 < n && rc == 0; i0 += batch) {
        int b = (int)(n - i0 < batch ? n - i0 : batch);
        for (int i = 0; i < b; i++) idx[i] = (int)(i0 + i);
        if (i0 + b < n) {
            int nxt = (int)(n - i0 - b < batch ? n - i0 - b : batch);
            int *pidx = xmalloc((size_t)nxt * sizeof *pidx);
            for (int i = 0; i < nxt; i++) pidx[i] = (int)(i0 + b + i);
            imageset_prefetch(&set, pidx, nxt);
            free(pidx);
        }
        if (imageset_batch(x, &set, idx, b, NULL)) {
            rc = -1;
            break;
        }
        featnet_forward(f, *feat + i0 * f->dim, logits ? *logits + i0 * f->n_logits : NULL, x,
                        b, C, side, side);
        long bi = (long)(i0 / batch) + 1;
        progress_print(&prog, bi, nb, (long)(i0 + b), "features", -1, bi == nb);
        if (interrupted()) rc = errorf("ldm-eval: interrupted");
    }
    progress_end(&prog);
    free(x), free(idx);
    imageset_free(&set);
    if (rc) {
        free(*feat);
        if (logits) free(*logits);
        return -1;
    }
    *n_out = n;
    return 0;
}

typedef struct {
    const char *cmd;
    const char *data, *images, *stats, *ref, *net, *out;
    int n, size, batch, threads, kid_subsets, kid_size, is_splits;
    long seed;
    // --unet: the model and its sampler
    const char *unet, *vae, *sampler, *weights, *class_arg;
    int steps;
    double eta, guidance;
} Args;

// The samples' side of fid/kid/is: features from --images, or statistics
// (and features, when the file has them) from --stats.
typedef struct {
    FeatStats st;
    float *feat, *logits; // (n, D), (n, K) or NULL
    FeatMeta meta;
    const char *what;     // for messages
} Side;

static int side_from_images(Side *s, FeatNet *f, const char *src, const Args *a, int logits) {
    int side;
    if (source_side(src, a->size, &side)) return -1;
    int64_t n;
    if (source_features(f, src, side, a->n, a->batch, &s->feat, logits ? &s->logits : NULL, &n))
        return -1;
    if (n < 2) return errorf("%s: %lld image(s); statistics need at least 2", src, (long long)n);
    featstats_compute(&s->st, s->feat, n, f->dim);
    meta_of(&s->meta, f);
    s->what = src;
    return 0;
}

// The samples' side drawn from a model: a.n images as ldm-sample would draw
// them (same seed, same images), with --class y, or `all` (image i of class
// i mod K: all classes in equal shares).
// -1 on a file's problem, -2 on a flag's.
static int side_from_model(Side *s, FeatNet *f, const Args *a, int logits) {
    int kind = sampler_from_name(a->sampler, "ldm-eval: --sampler");
    if (kind < 0) return -2;
    SampleModel m;
    int lr = sample_model_load(&m, a->unet, a->weights, a->batch, a->class_arg, a->guidance,
                               kind, a->steps, "ldm-eval");
    if (lr || sample_model_load_vae(&m, a->unet, a->vae, a->batch))
        return sample_model_free(&m), lr == -2 ? -2 : -1;
    const int K = m.u.cfg.num_classes;
    int *y = NULL, rc = -1;
    if (a->class_arg) {
        char *end;
        long c = strtol(a->class_arg, &end, 10);
        int all = !strcmp(a->class_arg, "all");
        if (K == 0) {
            errorf("ldm-eval: --class: %s is an unconditional UNet", a->unet);
            goto done;
        }
        if (!all && (end == a->class_arg || *end || c < 0 || c >= K)) {
            errorf("ldm-eval: --class %s: give a class 0..%d of %s, or all", a->class_arg, K - 1,
                   a->unet);
            goto done;
        }
        y = xmalloc((size_t)a->n * sizeof *y);
        for (int i = 0; i < a->n; i++) y[i] = all ? i % K : (int)c;
    }
    SampleSpec sp = sample_spec((SamplerKind)kind, a->steps, m.prediction);
    sp.eta = (float)a->eta;
    sp.guidance = y ? (float)a->guidance : 1.0f;
    int steps_n;
    if ((steps_n = sampler_timesteps(&sp, &m.sched, NULL)) < 0) goto done;
    fprintf(stderr, "ldm-eval: drawing %d images from %s (%s, %d steps, %s weights%s%s)\n",
            a->n, a->unet, a->sampler, steps_n, a->weights, y ? ", class " : "",
            y ? a->class_arg : "");
    Generator g;
    generator_init(&g, &m.u, &m.v, &m.sched, sp, m.scale, a->batch, a->unet, a->vae);
    // With classes asked for and a classifier of as many classes, also how
    // often it names the asked class.
    int acc = y && f->n_logits == K;
    s->feat = xmalloc((size_t)a->n * f->dim * sizeof(float));
    s->logits = logits || acc ? xmalloc((size_t)a->n * f->n_logits * sizeof(float)) : NULL;
    rc = generator_features(&g, f, a->n, y, (uint64_t)a->seed, s->feat, s->logits, 0);
    generator_free(&g);
    if (rc == 0 && acc) {
        int hit = 0;
        for (int i = 0; i < a->n; i++) {
            const float *l = s->logits + (size_t)i * K;
            int best = 0;
            for (int k = 1; k < K; k++)
                if (l[k] > l[best]) best = k;
            hit += best == y[i];
        }
        printf("class accuracy %.4f (%s's top class is the asked one, %d images)\n",
               (double)hit / a->n, f->name, a->n);
    }
    if (rc == 0) {
        featstats_compute(&s->st, s->feat, a->n, f->dim);
        meta_of(&s->meta, f);
        s->what = a->unet;
    }
done:
    free(y);
    sample_model_free(&m);
    return rc;
}

static int cmd_stats(const Args *a, FeatNet *f) {
    const char *src = a->data ? a->data : a->images;
    Side s = {0};
    if (side_from_images(&s, f, src, a, 0)) return 1;
    if (featstats_write(a->out, &s.st, s.feat, &s.meta)) return 1;
    fprintf(stderr, "ldm-eval: wrote %s (%lld images, %d features, %s %s)\n", a->out,
            (long long)s.st.n, s.st.D, s.meta.net, s.meta.net_hash);
    printf("stats %s n %lld dim %d\n", a->out, (long long)s.st.n, s.st.D);
    featstats_free(&s.st), free(s.feat);
    return 0;
}

static int cmd_score(const Args *a, FeatNet *f, const FeatMeta *ref_meta) {
    int is = !strcmp(a->cmd, "is"), kid = !strcmp(a->cmd, "kid");
    Side smp = {0}, ref = {0};
    if (a->images) {
        if (side_from_images(&smp, f, a->images, a, is)) return 1;
    } else if (a->unet) {
        int rc = side_from_model(&smp, f, a, is);
        if (rc) return rc == -2 ? 2 : 1;
    } else {
        if (featstats_read(a->stats, &smp.st, kid ? &smp.feat : NULL, &smp.meta)) return 1;
        if (kid && !smp.feat)
            return errorf("%s: has statistics but no features; KID needs the features (write it "
                          "with ldm-eval stats)", a->stats), 1;
        smp.what = a->stats;
        if (featmeta_check(&smp.meta, a->stats, ref_meta, "the feature network")) return 1;
    }
    if (is) {
        if (f->n_logits < 2) return errorf("ldm-eval is: %s has no class logits", f->name), 1;
        double m, sd;
        if (inception_score(&m, &sd, smp.logits, smp.st.n, f->n_logits, a->is_splits)) return 1;
        printf("IS std %.4f over %d splits of %lld images, %s\n", sd, a->is_splits,
               (long long)smp.st.n, f->name);
        printf("IS %.4f\n", m);
        return 0;
    }
    if (a->ref) {
        if (featstats_read(a->ref, &ref.st, kid ? &ref.feat : NULL, &ref.meta)) return 1;
        if (kid && !ref.feat)
            return errorf("%s: has statistics but no features; KID needs the features", a->ref), 1;
        ref.what = a->ref;
    } else if (side_from_images(&ref, f, a->data, a, 0)) {
        return 1;
    }
    if (featmeta_check(&smp.meta, smp.what, &ref.meta, ref.what)) return 1;
    if (kid) {
        double m, sd;
        if (kid_score(&m, &sd, smp.feat, smp.st.n, ref.feat, ref.st.n, f->dim, a->kid_subsets,
                      a->kid_size, (uint64_t)a->seed))
            return 1;
        printf("KID std %.6f over %d subsets of %lld, %s, %lld vs %lld images\n", sd,
               a->kid_subsets, (long long)(a->kid_size < smp.st.n ? a->kid_size : smp.st.n),
               f->name, (long long)smp.st.n, (long long)ref.st.n);
        printf("KID %.6f\n", m);
    } else {
        double fd;
        if (frechet_distance(&fd, &smp.st, &ref.st)) return 1;
        printf("FID over %lld vs %lld images, %s %s\n", (long long)smp.st.n,
               (long long)ref.st.n, f->name, f->hash);
        printf("FID %.4f\n", fd > -5e-5 && fd < 0 ? 0.0 : fd); // no "-0.0000" from round-off
    }
    featstats_free(&smp.st), featstats_free(&ref.st);
    free(smp.feat), free(smp.logits), free(ref.feat);
    return 0;
}

static void usage_all(void) {
    fprintf(stderr,
            "usage: ldm-eval COMMAND [options]   (ldm-eval COMMAND --help for its options)\n\n"
            "  stats  (--data SRC | --images DIR) [--net NET] --out ref.h5\n"
            "         mean, covariance and features of a source's images\n"
            "  fid    (--images DIR | --stats a.h5 | --unet U --vae V --n N)\n"
            "         (--ref ref.h5 | --data SRC)\n"
            "  kid    the same inputs: Kernel Inception Distance (features on both sides)\n"
            "  is     (--images DIR | --data SRC | --unet U --vae V --n N): Inception Score (a network\n"
            "         with class logits)\n\n"
            "NET: fmnist-cnn (default; the Fashion-MNIST classifier shipped in metrics/),\n"
            "inception-fid (a converted file: tests/reference/convert_fid_inception.py),\n"
            "or a weights file's path. With --ref the network is the one it was made with.\n"
            "The score is the last line of standard output, e.g. \"FID 12.3456\".\n");
}

int main(int argc, char **argv) {
    tool_process_init();
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage_all();
        return argc < 2 ? 2 : 0;
    }
    Args a = {.cmd = argv[1], .net = NULL, .n = 0, .size = 0, .batch = 64,
              .threads = default_threads(), .kid_subsets = 100, .kid_size = 1000,
              .is_splits = 10, .seed = 0, .sampler = "ddim", .weights = "ema", .steps = 50,
              .eta = 0.0, .guidance = 1.0};
    const char *cmds[] = {"stats", "fid", "kid", "is"};
    int known = 0;
    for (int i = 0; i < 4; i++) known |= !strcmp(a.cmd, cmds[i]);
    if (!known) {
        usage_all();
        return errorf("ldm-eval: unknown command '%s' (stats, fid, kid or is)", a.cmd), 2;
    }
    Opt opts[] = {
        {"--data", OPT_STR, &a.data, "image source: fashion-mnist, fashion-mnist-test, an IDX file or a folder (stats: the source; fid/kid: the reference)"},
        {"--images", OPT_STR, &a.images, "folder of images (searched recursively)"},
        {"--stats", OPT_STR, &a.stats, "fid/kid: the samples' statistics file (ldm-eval stats)"},
        {"--ref", OPT_STR, &a.ref, "fid/kid: the reference statistics file"},
        {"--net", OPT_STR, &a.net, "feature network: fmnist-cnn, inception-fid or a weights file (default: --ref's, else fmnist-cnn)"},
        {"--out", OPT_STR, &a.out, "stats: the statistics file to write"},
        {"--n", OPT_INT, &a.n, "use the first n images of each source read (0: all)", .lo = 0, .hi = 1 << 30},
        {"--size", OPT_INT, &a.size, "side images are read at (0: IDX 32, a folder its first image's)", .lo = 0, .hi = 8192},
        {"--batch", OPT_INT, &a.batch, "images per network call", .lo = 1, .hi = 4096},
        {"--kid-subsets", OPT_INT, &a.kid_subsets, "kid: number of random subsets", .lo = 1, .hi = 100000},
        {"--kid-size", OPT_INT, &a.kid_size, "kid: items per subset (capped at the smaller set)", .lo = 2, .hi = 1 << 30},
        {"--is-splits", OPT_INT, &a.is_splits, "is: number of splits", .lo = 1, .hi = 1000},
        {"--unet", OPT_STR, &a.unet, "fid/kid/is: draw the samples from this UNet (not written; --n of them)"},
        {"--vae", OPT_STR, &a.vae, "with --unet: the VAE that decodes its latents"},
        {"--sampler", OPT_STR, &a.sampler, "with --unet: ddim, ddpm, dpmpp2m or euler_a"},
        {"--steps", OPT_INT, &a.steps, "with --unet: sampler steps", .lo = 1, .hi = 100000},
        {"--eta", OPT_FLOAT, &a.eta, "with --unet: DDIM eta", .hi = 100},
        {"--weights", OPT_STR, &a.weights, "with --unet: ema or raw"},
        {"--class", OPT_STR, &a.class_arg, "with a class-conditional --unet: a class number, or all (classes in equal shares)"},
        {"--guidance", OPT_FLOAT, &a.guidance, "with --class: classifier-free guidance scale", .lo = 0, .hi = 1000},
        {"--seed", OPT_LONG, &a.seed, "seed of the samples drawn with --unet (as ldm-sample's) and of KID's subsets"},
        {"--threads", OPT_INT, &a.threads, "threads", .lo = 1, .hi = 1024},
    };
    int no = sizeof opts / sizeof *opts;
    char prog[32];
    snprintf(prog, sizeof prog, "ldm-eval %s", a.cmd);
    argv[1] = prog;
    int rc = args_parse(argc - 1, argv + 1, opts, no, "[options]  (see ldm-eval --help)");
    if (rc) return rc > 0 ? 0 : 2;

    int is_stats = !strcmp(a.cmd, "stats"), is_is = !strcmp(a.cmd, "is");
    if (is_stats) {
        if (!a.out) return errorf("ldm-eval stats: --out is required"), 2;
        if (!!a.data + !!a.images != 1)
            return errorf("ldm-eval stats: give one source, --data or --images"), 2;
        if (a.stats || a.ref) return errorf("ldm-eval stats: --stats and --ref are for fid/kid"), 2;
    } else if (is_is) {
        if (!!a.images + !!a.unet + !!a.data != 1)
            return errorf("ldm-eval is: give the samples as --images DIR, --data SRC or --unet "
                          "FILE"), 2;
        if (a.stats || a.ref)
            return errorf("ldm-eval is: takes no reference (--ref, --stats)"), 2;
        if (a.data) a.images = a.data, a.data = NULL; // read alike
    } else {
        // --data is the reference, or with --ref (and no other samples) the samples.
        int data_samples = a.data && a.ref && !a.images && !a.stats && !a.unet;
        if (!!a.images + !!a.stats + !!a.unet + data_samples != 1)
            return errorf("ldm-eval %s: give the samples as one of --images DIR, --stats FILE, "
                          "--unet FILE or (with --ref) --data SRC", a.cmd), 2;
        if (!data_samples && !!a.ref + !!a.data != 1)
            return errorf("ldm-eval %s: give the reference as --ref FILE or --data SRC", a.cmd), 2;
        if (data_samples) a.images = a.data, a.data = NULL; // read alike
        if (a.out) return errorf("ldm-eval %s: --out is for stats", a.cmd), 2;
    }
    if (a.unet && (!a.vae || a.n < 1))
        return errorf("ldm-eval %s: --unet needs --vae and --n (the number of images to draw)",
                      a.cmd), 2;
    if (!a.unet && (a.vae || a.class_arg))
        return errorf("ldm-eval %s: --vae and --class go with --unet", a.cmd), 2;
    if (strcmp(a.weights, "ema") && strcmp(a.weights, "raw"))
        return errorf("ldm-eval: --weights must be ema or raw, not '%s'", a.weights), 2;
    if (is_stats) {
        const PathArg inputs[] = {{"--data", a.data ? a.data : a.images}};
        if (check_output_path((PathArg){"--out", a.out}, OUT_FILE, inputs, 1)) return 1;
    }
    set_threads(a.threads);
    h5_quiet();
    interrupt_install();

    // The network: --net, else the one --ref was made with, else fmnist-cnn.
    FeatMeta ref_meta = {0};
    if (a.ref) {
        FeatStats st;
        if (featstats_read(a.ref, &st, NULL, &ref_meta)) return 1;
        featstats_free(&st);
    }
    char path[PATH_MAX];
    if (featnet_resolve(path, sizeof path, a.net ? a.net : a.ref ? ref_meta.net : "fmnist-cnn"))
        return 1;
    FeatNet f;
    if (featnet_load(&f, path)) return 1;
    FeatMeta mine;
    meta_of(&mine, &f);
    if (a.ref && featmeta_check(&ref_meta, a.ref, &mine, path)) return 1;
    rc = is_stats ? cmd_stats(&a, &f) : cmd_score(&a, &f, &mine);
    featnet_free(&f);
    return rc;
}
