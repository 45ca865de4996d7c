// vae-encode: encodes an image set once into the HDF5 latent cache (mean and
// log-variance per image, labels and class names when the source has them,
// and the scale factor of the latents).
#include <math.h>
#include <string.h>

#include "args.h"
#include "common.h"
#include "imageset.h"
#include "latent_cache.h"
#include "paths.h"
#include "progress.h"
#include "rng.h"
#include "toolkit.h"
#include "vae.h"
#include "vae_ckpt.h"

int main(int argc, char **argv) {
    tool_process_init();
    const char *vae_path = NULL, *data = NULL, *out = NULL;
    int batch = 256, seed = 0, threads = default_threads();
    size_t max_memory = imageset_default_max_memory();
    Opt opts[] = {
        {"--vae", OPT_STR, &vae_path, "VAE checkpoint from vae-train", 0, NULL, 0, 0},
        {"--data", OPT_STR, &data, "image source (as for vae-train)", 0, NULL, 0, 0},
        {"--out", OPT_STR, &out, "latent cache to write (HDF5)", 0, NULL, 0, 0},
        {"--batch", OPT_INT, &batch, "images encoded at once", 0, NULL, 0, 0},
        {"--seed", OPT_INT, &seed, "seed of the latent draw that sets the scale factor", 0, NULL, 0, 0},
        {"--threads", OPT_INT, &threads, "threads", 0, NULL, 0, 0},
        {"--max-memory", OPT_SIZE, &max_memory, "memory for decoded images, e.g. 512M or 4G: "
         "a folder that needs more is decoded while encoding; a quarter of the RAM by default",
         0, NULL, 0, 0},
    };
    int no = sizeof opts / sizeof *opts;
    int rc = args_parse(argc, argv, opts, no, "--vae vae.h5 --data SRC --out latents.h5 [options]");
    if (rc) return rc > 0 ? 0 : 2;
    if (!vae_path || !data || !out)
        return errorf("vae-encode: --vae, --data and --out are required (see --help)"), 2;
    if (batch < 1 || threads < 1) return errorf("vae-encode: --batch and --threads must be positive"), 2;
    if (check_output_path((PathArg){"--out", out}, OUT_FILE,
                          (PathArg[]){{"--vae", vae_path}, {"--data", data}}, 2))
        return 1;
    set_threads(threads);
    h5_quiet();

    // The image shape comes from the checkpoint and the batch from the data
    // (never more buffers than images), so the set opens between the two.
    VaeConfig cfg;
    Attrs *a = xmalloc(sizeof *a); // large: not on the stack
    int bad = ckpt_read_attrs(vae_path, "vae", a) || vae_config_from_attrs(&cfg, a, vae_path);
    free(a);
    if (bad) return 1;
    ImageSet set;
    if (imageset_open(&set, data, cfg.image_size, cfg.in_channels, max_memory)) return 1;
    if (set.skipped) fprintf(stderr, "vae-encode: %d files skipped\n", set.skipped);
    if (set.root_images)
        warnf("%s: %d images directly in the folder and %d in sub-folders: no class labels "
              "(for labels, put every image in a sub-folder named after its class)", data,
              set.root_images, set.N + set.skipped - set.root_images);
    if (batch > set.N) batch = set.N;
    if (imageset_check_memory(&set, batch, max_memory)) return 1;
    Vae v;
    if (vae_load(&v, vae_path, batch, NULL)) return 1;
    const VaeConfig *c = &v.cfg;
    int h = vae_latent_size(c);
    size_t img = (size_t)c->in_channels * c->image_size * c->image_size;
    size_t lat = (size_t)c->latent_channels * h * h;
    char hash[17];
    vae_hash_of(hash, &v);

    // Installed before the temporary cache file exists, so that no SIGINT
    // can kill the process between its creation and the loop's check.
    interrupt_install();
    LatentCacheWriter w;
    if (latent_cache_create(&w, out, set.N, c->latent_channels, h, h, set.labels != NULL))
        return 1;
    // The names are a convenience (ldm-sample shows them): names too long for
    // an attribute leave the labels, numbered, rather than no cache.
    int named = set.class_names && strlen(set.class_names) < ATTR_STR_MAX;
    if (set.class_names && !named)
        warnf("%s: the names of its %d classes take %zu bytes, more than the %d a cache "
              "attribute holds: the cache keeps the labels without the names", set.source,
              set.num_classes, strlen(set.class_names), ATTR_STR_MAX - 1);
    if (named) latent_cache_set_class_names(&w, set.class_names);
    float *x = xmalloc(batch * img * sizeof(float));      // (B, C, S, S)
    float *mean = xmalloc(batch * lat * sizeof(float));   // (B, Z, h, w)
    float *logvar = xmalloc(batch * lat * sizeof(float)); // (B, Z, h, w)
    float *eps = xmalloc(batch * lat * sizeof(float));    // (B, Z, h, w)
    int *idx = xmalloc(batch * sizeof(int));
    Rng rng;
    rng_init(&rng, (uint64_t)seed);
    // scale_factor = 1 / std of latents drawn once over the whole set, in double.
    double sum = 0, sumsq = 0;
    Progress prog;
    progress_init(&prog, 0);
    long nb = (set.N + batch - 1) / batch;
    for (int i0 = 0; i0 < set.N; i0 += batch) {
        if (interrupted()) {
            progress_end(&prog);
            latent_cache_abort(&w);
            fprintf(stderr, "vae-encode: interrupted; no cache written at %s\n", out);
            return 130;
        }
        int b = set.N - i0 < batch ? set.N - i0 : batch;
        for (int i = 0; i < b; i++) idx[i] = i0 + i;
        if (imageset_batch(x, &set, idx, b, NULL)) {
            progress_end(&prog);
            latent_cache_abort(&w);
            return 1;
        }
        // The next batch decodes in the background while this one encodes.
        int next = set.N - (i0 + b) < batch ? set.N - (i0 + b) : batch;
        for (int i = 0; i < next; i++) idx[i] = i0 + b + i;
        imageset_prefetch(&set, idx, next);
        vae_encode(&v, mean, logvar, x, b);
        rng_normal_fill(&rng, eps, b * lat);
        for (size_t j = 0; j < b * lat; j++) {
            double z = (double)mean[j] + exp(0.5 * (double)logvar[j]) * eps[j];
            sum += z;
            sumsq += z * z;
        }
        if (latent_cache_append(&w, mean, logvar, set.labels ? set.labels + i0 : NULL, b)) {
            latent_cache_abort(&w);
            return 1;
        }
        progress_print(&prog, i0 / batch + 1, nb, i0 + b, "encoding", -1, i0 + b == set.N);
    }
    progress_end(&prog);
    double n = (double)set.N * lat, mu = sum / n, var = sumsq / n - mu * mu;
    if (!(var > 0) || !isfinite(var)) {
        latent_cache_abort(&w);
        return errorf("%s: the latents have no variance (%g); is the VAE trained?", vae_path, var), 1;
    }
    double scale = 1.0 / sqrt(var);
    if (latent_cache_finish(&w, scale, c->image_size, c->in_channels, set.source, hash))
        return 1;
    fprintf(stderr, "vae-encode: %d images -> %s, latents (%d, %d, %d), scale_factor %.6f, "
            "vae_hash %s, %s\n", set.N, out, c->latent_channels, h, h, scale, hash,
            !set.labels ? "no labels" : named ? "labels and class names" : "labels");
    if (set.num_classes) {
        fprintf(stderr, "vae-encode: %d classes:", set.num_classes);
        for (int k = 0; k < set.num_classes && k < 20; k++) {
            char name[128];
            class_name_get(name, sizeof name, set.class_names, k);
            fprintf(stderr, " %d %s%s", k, name, k + 1 < set.num_classes ? "," : "\n");
        }
        if (set.num_classes > 20) fprintf(stderr, " ...\n");
    }
    free(x), free(mean), free(logvar), free(eps), free(idx);
    vae_free(&v);
    imageset_free(&set);
    return 0;
}
