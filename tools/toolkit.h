// toolkit.h: pieces the command-line programs share (tools/ only).
#pragma once
#include "checkpoint.h"
#include "imageset.h"
#include "vae.h"

// Default thread count: all cores the process may use.
int default_threads(void);

// Creates folder `dir` and its missing parents (mkdir -p); -1 with a message
// naming the folder that cannot be created or written.
int tool_make_dir(const char *dir);

// First call in the main() of every program that writes checkpoints or
// caches: a file that cannot be written must end in a message and a
// non-zero exit, not in a signal (see toolkit.c).
void tool_process_init(void);

// *psnr = 10 log10(4 / MSE) of decode(posterior mean), clamped to [-1, 1],
// against items [start, start + n) of s, batched by v->max_batch (a
// streamed s must be reserved for that batch). -1 with a message when an
// item cannot be read (imageset_batch).
int vae_psnr(Vae *v, ImageSet *s, int start, int n, double *psnr);

#include "latent_cache.h"
// The cache was made by this VAE: latent shape, image shape and the VAE hash
// agree. -1 with a message naming both files otherwise.
int check_cache_matches_vae(const LatentCache *c, const Vae *v, const char *vae_path);
// Hash of a loaded VAE's parameters (16 hex digits).
void vae_hash_of(char out[17], const Vae *v);

// ---- generation: what ldm-sample, ldm-eval and ldm-train's FD measure share
#include "featnet.h"
#include "latent_cache.h"
#include "sampler.h"
#include "schedule.h"
#include "stats.h"
#include "unet.h"

// A UNet checkpoint with the VAE that decodes its latents, as ldm-sample and
// ldm-eval load them.
typedef struct {
    UNet u;
    Vae v;
    Schedule sched;
    int T, prediction;
    double scale;      // the cache's scale factor, recorded in the UNet checkpoint
    char *class_names; // (ATTR_STR_MAX) CLASS_NAMES_ATTR, "" when absent or not naming K classes
    int no_dropout;    // the checkpoint records label dropout p_uncond = 0
    char vae_hash[17]; // the hash of the VAE the UNet was trained with
    int has_vae;       // v is loaded
} SampleModel;

// Loads the UNet's weights (--weights: "ema" or "raw"), its attributes and
// schedule, to sample `batch` images a call with sampler `kind` and `steps`:
// the UNet holds 2 batch items when class_arg and guidance call for guided
// passes (conditional and null in one batch), and steps must lie in 1..T
// (DDPM ignores them). -1 with a message naming the file (exit 1), or -2
// with one from `prog` for the flags (exit 2). Then (after the caller has
// checked its other flags against the model) sample_model_load_vae loads the
// VAE for vae_batch, checking that the two belong together (latent shape,
// the VAE's hash); -1 with a message otherwise. sample_model_free after either.
int sample_model_load(SampleModel *m, const char *unet_path, const char *weights, int batch,
                      const char *class_arg, double guidance, int kind, int steps,
                      const char *prog);
int sample_model_load_vae(SampleModel *m, const char *unet_path, const char *vae_path,
                          int vae_batch);
// ldm-sample's --class and --guidance rules for the UNet of m, messages
// from `prog`: the class 0..K-1 (a number or a class name of m), -1 for
// "all" (only when allow_all), -3 without --class (the null class on a
// conditional UNet; warns when guidance_given), or -2 with a message (--class
// on an unconditional UNet, out of range, no such name). Warns when a class
// meets guidance != 1 on a UNet trained without label dropout.
int sample_class_arg(const SampleModel *m, const char *unet_path, const char *class_arg,
                     int allow_all, int guidance_given, double guidance, const char *prog);
void sample_model_free(SampleModel *m);

// Latents drawn by a UNet with a sampler, divided by the cache's scale factor
// and decoded: images exactly as ldm-sample writes them.
typedef struct {
    UNet *u;
    Vae *v;
    const Schedule *sched;
    SampleSpec spec;    // sampler, steps, eta, prediction, guidance (labels per call)
    double scale;       // the latent cache's scale factor
    const char *unet_what, *vae_what; // files, for messages
    int max_b;          // images per call
    float *z;           // (max_b, Z, h, w) + 1 latents
    // Editing (ldm-edit): with spec.start > 0, the clean latents (b, Z, h, w)
    // of the next call's images, noised to the start step (edit_start_latent);
    // NULL otherwise (generator_init).
    const float *x0;
} Generator;

// u's max_batch must hold max_b (2 max_b with guidance on a conditional UNet).
void generator_init(Generator *g, UNet *u, Vae *v, const Schedule *sched, SampleSpec spec,
                    double scale, int max_b, const char *unet_what, const char *vae_what);
void generator_free(Generator *g);
// Images i0 .. i0 + b - 1 of the run seeded `seed` into x (b, C, S, S), with
// class labels y (b) or NULL. x_T of image i is values [i ln, (i + 1) ln) of
// one stream over all images (ln = Z h w), so it depends on neither the batch
// nor the number of images (with x0 and spec.start > 0: the noise that takes
// x0 to the start step); the step noise of stochastic samplers comes from
// stream `bi` (the batch's index). -1 with a message naming the file when the
// latents or the images are not finite (broken weights).
int generator_run(Generator *g, float *x, int64_t i0, int b, int64_t bi, const int *y,
                  uint64_t seed);
// Rounds images in [-1, 1] to the 8-bit values a PNG keeps and back
// (x -> round((clamp(x) + 1) 127.5) / 127.5 - 1), so that features of
// generated images equal those of the same images written and read again.
void quantize_8bit(float *x, size_t n);
// Features (n, D) and, when logits is not NULL, logits (n, K) of n generated
// images (classes y (n) or NULL), in g->max_b batches, 8-bit quantised.
// `quiet`: no progress line. -1 with a message on failure or interrupt.
int generator_features(Generator *g, FeatNet *f, int64_t n, const int *y, uint64_t seed,
                       float *feat, float *logits, int quiet);
// The weights file of a feature network: NET is a path (anything with a '/'
// or ending in .h5) or a name looked up as <dir>/<name>.h5 in
// $LDM_WEIGHTS_DIR, the installed data folder, then the source tree's
// metrics/ (where the committed fmnist-cnn.h5 is). -1 with a message listing
// where it looked.
int featnet_resolve(char *out, size_t cap, const char *net);
