// test_unet.c: the UNet's blocks and the whole UNet (forward, diffusion loss,
// every parameter gradient), unconditional and class-conditional, against
// tests/reference/gen_unet.py's goldens, plus the unet-s table, its time and
// class paths against finite differences, and thread-count invariance of a
// training step.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "layers.h"
#include "loss.h"
#include "params.h"
#include "rng.h"
#include "schedule.h"
#include "testutil.h"
#include "unet.h"

#define BLOCKS "blocks.h5"
#define UNETF "unet.h5"
#define UNET_COND "unet_cond.h5"

static float *read_f(const char *file, const char *group, const char *name, size_t want) {
    return golden_read_n(file, golden_name(group, name), want);
}

static void test_resblock(void) {
    size_t n;
    int *d = golden_read_int(BLOCKS, "res/dims", &n);
    int B = d[0], cin = d[1], cout = d[2], H = d[3], W = d[4], temb = d[5];
    free(d);
    ParamTable t;
    params_init(&t);
    ResBlock r;
    resblock_params(&r, &t, "res", cin, cout, H, W, temb);
    check_golden_table("ResBlock", &t, BLOCKS, "res");
    float *params = read_f(BLOCKS, "res", "params", t.total);
    float *gref = read_f(BLOCKS, "res", "grads", t.total);
    float *grads = xcalloc(t.total, sizeof(float));
    float *acts = xmalloc(resblock_acts_floats(&r, B) * sizeof(float));
    float *work = xmalloc(resblock_work_floats(&r, B) * sizeof(float));
    resblock_carve(&r, acts, B);

    size_t nin = (size_t)B * cin * H * W, nout = (size_t)B * cout * H * W;
    float *x = read_f(BLOCKS, "res", "x", nin);
    float *ta = read_f(BLOCKS, "res", "temb_act", (size_t)B * temb);
    float *ref = read_f(BLOCKS, "res", "out", nout);
    float *dout = read_f(BLOCKS, "res", "dout", nout);
    float *dxref = read_f(BLOCKS, "res", "dx", nin);
    float *dtref = read_f(BLOCKS, "res", "dtemb_act", (size_t)B * temb);
    float *out = xmalloc(nout * sizeof(float));
    float *dx = xcalloc(nin, sizeof(float));
    float *dt = xcalloc((size_t)B * temb, sizeof(float));
    resblock_forward(&r, out, x, ta, params, B, work);
    check_close("ResBlock 4->34 forward", out, ref, nout, 1e-5);
    resblock_backward(&r, dx, dt, grads, dout, x, ta, params, B, work);
    check_close("ResBlock d x", dx, dxref, nin, 1e-5);
    check_close("ResBlock d SiLU(temb)", dt, dtref, (size_t)B * temb, 1e-5);
    check_param_grads("ResBlock", &t, grads, gref, 1e-5);

    free(x), free(ta), free(ref), free(dout), free(dxref), free(dtref), free(out), free(dx);
    free(dt), free(params), free(gref), free(grads), free(acts), free(work);
    params_free(&t);
}

static void test_attn(const char *group) {
    size_t n;
    int *d = golden_read_int(BLOCKS, golden_name(group, "dims"), &n);
    int B = d[0], C = d[1], H = d[2], W = d[3], heads = d[4];
    free(d);
    ParamTable t;
    params_init(&t);
    AttnBlock a;
    attnblock_params(&a, &t, "attn", C, H, W, heads);
    char what[64];
    snprintf(what, sizeof what, "Attn(%d, %d head%s)", C, heads, heads > 1 ? "s" : "");
    check_golden_table(what, &t, BLOCKS, group);
    float *params = read_f(BLOCKS, group, "params", t.total);
    float *gref = read_f(BLOCKS, group, "grads", t.total);
    float *grads = xcalloc(t.total, sizeof(float));
    float *acts = xmalloc(attnblock_acts_floats(&a, B) * sizeof(float));
    float *work = xmalloc(attnblock_work_floats(&a, B) * sizeof(float));
    attnblock_carve(&a, acts, B);
    size_t nx = (size_t)B * C * H * W;
    float *x = read_f(BLOCKS, group, "x", nx);
    float *ref = read_f(BLOCKS, group, "out", nx);
    float *dout = read_f(BLOCKS, group, "dout", nx);
    float *dxref = read_f(BLOCKS, group, "dx", nx);
    float *out = xmalloc(nx * sizeof(float));
    float *dx = xcalloc(nx, sizeof(float));
    attnblock_forward(&a, out, x, params, B, work);
    char msg[96];
    snprintf(msg, sizeof msg, "%s forward", what);
    check_close(msg, out, ref, nx, 1e-5);
    attnblock_backward(&a, dx, grads, dout, x, params, B, work);
    snprintf(msg, sizeof msg, "%s d x", what);
    check_close(msg, dx, dxref, nx, 1e-5);
    check_param_grads(what, &t, grads, gref, 1e-5);
    free(x), free(ref), free(dout), free(dxref), free(out), free(dx);
    free(params), free(gref), free(grads), free(acts), free(work);
    params_free(&t);
}

static void test_time_embed(void) {
    size_t n;
    int *d = golden_read_int(BLOCKS, "time/dims", &n);
    int B = d[0], D = d[1], E = d[2];
    free(d);
    ParamTable t;
    params_init(&t);
    TimeEmbed te;
    time_embed_params(&te, &t, "time_embed", D, E);
    check_golden_table("TimeEmbed", &t, BLOCKS, "time");
    float *params = read_f(BLOCKS, "time", "params", t.total);
    float *gref = read_f(BLOCKS, "time", "grads", t.total);
    float *grads = xcalloc(t.total, sizeof(float));
    float *acts = xmalloc(time_embed_acts_floats(&te, B) * sizeof(float));
    time_embed_carve(&te, acts, B);
    int *steps = golden_read_int(BLOCKS, "time/t", &n);
    CHECK((int)n == B);
    size_t no = (size_t)B * E;
    float *ref = read_f(BLOCKS, "time", "out", no);
    float *dout = read_f(BLOCKS, "time", "dout", no);
    float *out = xmalloc(no * sizeof(float));
    time_embed_forward(&te, out, steps, NULL, params, B);
    check_close("TimeEmbed forward (t = 0, 7, 500, 999)", out, ref, no, 1e-5);
    time_embed_backward(&te, grads, dout, NULL, params, B);
    check_param_grads("TimeEmbed", &t, grads, gref, 1e-5);
    free(steps), free(ref), free(dout), free(out);
    free(params), free(gref), free(grads), free(acts);
    params_free(&t);
}

// The time embedding with a class table of K = 3: real and null labels, one
// class twice, one unused.
static void test_time_label(void) {
    size_t n;
    int *d = golden_read_int(BLOCKS, "time_label/dims", &n);
    int B = d[0], D = d[1], E = d[2], K = d[3];
    free(d);
    ParamTable t;
    params_init(&t);
    TimeEmbed te;
    time_embed_params(&te, &t, "time_embed", D, E);
    time_embed_add_classes(&te, &t, "label_emb.weight", K);
    check_golden_table("TimeEmbed + class table", &t, BLOCKS, "time_label");
    float *params = read_f(BLOCKS, "time_label", "params", t.total);
    float *gref = read_f(BLOCKS, "time_label", "grads", t.total);
    float *grads = xcalloc(t.total, sizeof(float));
    float *acts = xmalloc(time_embed_acts_floats(&te, B) * sizeof(float));
    time_embed_carve(&te, acts, B);
    int *steps = golden_read_int(BLOCKS, "time_label/t", &n);
    CHECK((int)n == B);
    int *y = golden_read_int(BLOCKS, "time_label/y", &n);
    CHECK((int)n == B);
    size_t no = (size_t)B * E;
    float *ref = read_f(BLOCKS, "time_label", "out", no);
    float *dout = read_f(BLOCKS, "time_label", "dout", no);
    float *out = xmalloc(no * sizeof(float));
    time_embed_forward(&te, out, steps, y, params, B);
    check_close("TimeEmbed + class rows forward (labels 1, null, 0, 1, null, 0)", out, ref, no,
                1e-5);
    time_embed_backward(&te, grads, dout, y, params, B);
    check_param_grads("TimeEmbed + class table", &t, grads, gref, 1e-5);
    // Row 2 is no item's label: its gradient is exactly zero, not residue.
    const float *row2 = grads + te.classes + 2 * (size_t)E;
    int zero_row = 1;
    for (int j = 0; j < E; j++) zero_row &= row2[j] == 0.0f;
    check_true("the unused class row gets no gradient", zero_row);
    free(steps), free(y), free(ref), free(dout), free(out);
    free(params), free(gref), free(grads), free(acts);
    params_free(&t);
}

// The narrow UNets of gen_unet.py: TINY (unet.h5, 10 config entries) and
// TINY_COND (unet_cond.h5, an 11th: the number of classes).
static void tiny_config(UNetConfig *c, const char *file) {
    size_t n;
    int *v = golden_read_int(file, "config", &n);
    CHECK(n == 10 || n == 11);
    memset(c, 0, sizeof *c);
    c->latent_channels = v[0], c->latent_size = v[1], c->base_channels = v[2];
    c->num_levels = 2, c->channel_mult[0] = v[3], c->channel_mult[1] = v[4];
    c->num_res_blocks = v[5];
    c->num_attn = 1, c->attn_resolutions[0] = v[6];
    c->num_heads = v[7], c->temb_dim = v[8], c->time_dim = v[9];
    c->num_classes = n == 11 ? v[10] : 0;
    free(v);
}

static void test_unet(void) {
    UNetConfig c;
    tiny_config(&c, UNETF);
    check_true("tiny UNet config passes unet_config_check", unet_config_check(&c, "tiny") == 0);
    size_t n;
    int *t = golden_read_int(UNETF, "t", &n);
    int B = (int)n;
    UNet u;
    unet_init(&u, &c, B + 1); // B < max_batch exercises the carving strides
    check_golden_table("UNet", &u.table, UNETF, "");
    float *params = read_f(UNETF, "", "params", u.table.total);
    memcpy(u.params, params, u.table.total * sizeof(float));
    float *gref = read_f(UNETF, "", "grads", u.table.total);
    size_t nl = (size_t)B * c.latent_channels * c.latent_size * c.latent_size;
    float *x0 = read_f(UNETF, "", "x0", nl), *noise = read_f(UNETF, "", "noise", nl);
    float *xt = read_f(UNETF, "", "xt", nl), *pred = read_f(UNETF, "", "pred", nl);
    float *vt = read_f(UNETF, "", "v_target", nl), *loss = read_f(UNETF, "", "loss", 1);

    Schedule s;
    CHECK(schedule_init(&s, 1000, "linear", "test") == 0);
    float *v = xmalloc(nl * sizeof(float));
    diffusion_target(v, &s, PRED_V, x0, noise, t, B, nl / B);
    check_close("v target", v, vt, nl, 1e-6);

    DiffusionLoss dl;
    diffusion_loss_init(&dl, B + 1, nl / B); // B < max_batch, as for the UNet
    float l = diffusion_loss_forward(&dl, &u, &s, PRED_EPS, x0, noise, t, B);
    check_close("q_sample x_t", dl.xt, xt, nl, 1e-6);
    check_close("UNet forward (eps prediction at x_t)", dl.pred, pred, nl, 1e-4);
    check_close("diffusion loss (eps MSE)", &l, loss, 1, 1e-4);
    memset(u.grads, 0, u.table.total * sizeof(float));
    diffusion_loss_backward(&dl, &u);
    check_param_grads("UNet eps-MSE", &u.table, u.grads, gref, 1e-4);

    // A training step (loss and every gradient) is the same at 1 and 2 threads.
    float *g1 = xmalloc(u.table.total * sizeof(float));
    float l1, l2;
    set_threads(1);
    memset(u.grads, 0, u.table.total * sizeof(float));
    l1 = diffusion_loss_forward(&dl, &u, &s, PRED_EPS, x0, noise, t, B);
    diffusion_loss_backward(&dl, &u);
    memcpy(g1, u.grads, u.table.total * sizeof(float));
    set_threads(2);
    memset(u.grads, 0, u.table.total * sizeof(float));
    l2 = diffusion_loss_forward(&dl, &u, &s, PRED_EPS, x0, noise, t, B);
    diffusion_loss_backward(&dl, &u);
    check_true("loss and grads bit-identical at 1 and 2 threads",
               l1 == l2 && memcmp(g1, u.grads, u.table.total * sizeof(float)) == 0);

    // Gradients accumulate: a second backward doubles them.
    diffusion_loss_forward(&dl, &u, &s, PRED_EPS, x0, noise, t, B);
    diffusion_loss_backward(&dl, &u);
    for (size_t i = 0; i < u.table.total; i++) g1[i] *= 2;
    check_close("backward accumulates into grads", u.grads, g1, u.table.total, 1e-6);

    free(g1), free(v), free(x0), free(noise), free(xt), free(pred), free(vt), free(loss);
    free(t), free(params), free(gref);
    schedule_free(&s);
    diffusion_loss_free(&dl);
    unet_free(&u);
}

// The conditional tiny UNet: its table (label_emb after time_embed), loss,
// output and every gradient on real and null labels. (Its class path is
// dead, see gen_unet.py: test_time_label and test_unet_s_classes check it.)
static void test_unet_cond(void) {
    UNetConfig c;
    tiny_config(&c, UNET_COND);
    check_true("conditional tiny UNet config passes unet_config_check",
               c.num_classes == 3 && unet_config_check(&c, "tiny-cond") == 0);
    size_t n;
    int *t = golden_read_int(UNET_COND, "t", &n);
    int B = (int)n;
    int *y = golden_read_int(UNET_COND, "y", &n);
    CHECK((int)n == B);
    UNet u;
    unet_init(&u, &c, B);
    check_golden_table("conditional UNet", &u.table, UNET_COND, "");
    float *params = read_f(UNET_COND, "", "params", u.table.total);
    memcpy(u.params, params, u.table.total * sizeof(float));
    float *gref = read_f(UNET_COND, "", "grads", u.table.total);
    size_t nl = (size_t)B * c.latent_channels * c.latent_size * c.latent_size;
    float *x0 = read_f(UNET_COND, "", "x0", nl), *noise = read_f(UNET_COND, "", "noise", nl);
    float *pred = read_f(UNET_COND, "", "pred", nl), *loss = read_f(UNET_COND, "", "loss", 1);
    Schedule s;
    CHECK(schedule_init(&s, 1000, "linear", "test") == 0);
    DiffusionLoss dl;
    diffusion_loss_init(&dl, B, nl / B);
    float l = diffusion_loss_forward_labels(&dl, &u, &s, PRED_EPS, x0, noise, t, y, B);
    check_close("conditional UNet forward (labels 2, null, 0, null)", dl.pred, pred, nl, 1e-4);
    check_close("conditional diffusion loss", &l, loss, 1, 1e-4);
    memset(u.grads, 0, u.table.total * sizeof(float));
    diffusion_loss_backward(&dl, &u);
    check_param_grads("conditional UNet eps-MSE", &u.table, u.grads, gref, 1e-4);

    float *g1 = xmalloc(u.table.total * sizeof(float));
    float l1, l2;
    set_threads(1);
    memset(u.grads, 0, u.table.total * sizeof(float));
    l1 = diffusion_loss_forward_labels(&dl, &u, &s, PRED_EPS, x0, noise, t, y, B);
    diffusion_loss_backward(&dl, &u);
    memcpy(g1, u.grads, u.table.total * sizeof(float));
    set_threads(2);
    memset(u.grads, 0, u.table.total * sizeof(float));
    l2 = diffusion_loss_forward_labels(&dl, &u, &s, PRED_EPS, x0, noise, t, y, B);
    diffusion_loss_backward(&dl, &u);
    check_true("conditional loss and grads bit-identical at 1 and 2 threads",
               l1 == l2 && memcmp(g1, u.grads, u.table.total * sizeof(float)) == 0);
    free(g1);
    free(t), free(y), free(params), free(gref), free(x0), free(noise), free(pred), free(loss);
    schedule_free(&s);
    diffusion_loss_free(&dl);
    unet_free(&u);
}

// unet-s as the spec lays it out: the mirror's parameter count, the zero-init
// convolutions, and the shape of a forward pass.
static void test_unet_s(void) {
    UNetConfig c;
    unet_config_default(&c);
    check_true("unet-s config passes unet_config_check", unet_config_check(&c, "unet-s") == 0);
    UNet u;
    unet_init(&u, &c, 2);
    char msg[128];
    snprintf(msg, sizeof msg, "unet-s has 3993476 parameters (mirror), got %zu", u.table.total);
    check_true(msg, u.table.total == 3993476);
    const char *keys[] = {"time_embed.2.weight", "conv_in.weight", "down.0.res.1.conv2.weight",
                          "down.0.downsample.weight", "down.1.res.0.skip.weight",
                          "down.1.attn.1.proj.weight", "mid.attn.q.weight",
                          "up.0.res.2.skip.weight", "up.0.attn.2.v.bias",
                          "up.0.upsample.weight", "up.1.res.0.conv1.weight", "out_conv.bias"};
    int found = 1;
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) found &= params_find(&u.table, keys[i]) >= 0;
    check_true("unet-s keys follow the mirror's state_dict", found &&
               params_find(&u.table, "up.1.attn.0.q.weight") < 0 &&
               params_find(&u.table, "down.1.downsample.weight") < 0);
    int i = params_find(&u.table, "up.0.res.0.conv1.weight");
    check_true("up.0.res.0.conv1 is 256 -> 128 (concat of s5)", i >= 0 &&
               u.table.info[i].shape[0] == 128 && u.table.info[i].shape[1] == 256);
    i = params_find(&u.table, "up.0.res.2.conv1.weight");
    check_true("up.0.res.2.conv1 is 192 -> 128 (concat of s3)", i >= 0 &&
               u.table.info[i].shape[1] == 192);

    Rng rng;
    rng_init(&rng, 7);
    params_init_values(&u.table, u.params, &rng);
    int zeros = 1;
    const char *zk[] = {"out_conv.weight", "out_conv.bias", "mid.attn.proj.weight",
                        "up.1.res.2.conv2.weight"};
    for (size_t k = 0; k < 4; k++) {
        const ParamInfo *p = &u.table.info[params_find(&u.table, zk[k])];
        for (size_t j = 0; j < p->size; j++) zeros &= u.params[p->offset + j] == 0.0f;
    }
    check_true("zero-init convs (out_conv, attn proj, conv2) start at zero", zeros);
    // With out_conv zero the output is exactly zero at init.
    size_t nl = 2 * 4 * 8 * 8;
    float *x = xmalloc(nl * sizeof(float)), *out = xmalloc(nl * sizeof(float));
    rng_normal_fill(&rng, x, nl);
    int t[2] = {0, 999};
    unet_forward(&u, out, x, t, NULL, 2);
    int allzero = 1;
    for (size_t k = 0; k < nl; k++) allzero &= out[k] == 0.0f;
    check_true("unet-s output at init is zero (zero-init out_conv)", allzero);

    // Bad configurations are reported, not crashed on.
    UNetConfig bad = c;
    bad.latent_size = 7;
    check_true("odd latent size rejected", unet_config_check(&bad, "bad") < 0);
    bad = c;
    bad.num_heads = 3;
    check_true("channels not divisible by heads rejected", unet_config_check(&bad, "bad") < 0);
    bad = c;
    bad.num_levels = 0;
    check_true("no levels rejected", unet_config_check(&bad, "bad") < 0);
    free(x), free(out);
    unet_free(&u);
}

// Every weight random: uniform within the default init's bounds, the
// zero-init ones and GroupNorm's (around 1 for its scales) included, the
// class table N(0, 1).
static void random_weights(UNet *u, Rng *rng) {
    for (int i = 0; i < u->table.n; i++) {
        const ParamInfo *p = &u->table.info[i];
        float b = p->init_bound > 0 ? p->init_bound : 0.5f; // zero-init and GN too
        rng_uniform_fill(rng, u->params + p->offset, p->size, -b, b);
        if (p->init_bound < 0)
            for (size_t j = 0; j < p->size; j++) u->params[p->offset + j] += 1.0f;
    }
    if (u->cfg.num_classes)
        rng_normal_fill(rng, u->params + u->te.classes,
                        (size_t)(u->cfg.num_classes + 1) * u->cfg.temb_dim);
}

// The narrow golden model has C <= 32 everywhere, so its time path is dead
// (see check_grads). unet-s has two or more channels a group everywhere: check
// its time-path and bias gradients (accumulated over every ResBlock) against
// central finite differences of the loss, with every weight random.
static void test_unet_s_time_path(void) {
    UNetConfig c;
    unet_config_default(&c);
    UNet u;
    unet_init(&u, &c, 1);
    Rng rng;
    rng_init(&rng, 11);
    random_weights(&u, &rng);
    size_t nl = 4 * 8 * 8;
    float *x0 = xmalloc(nl * sizeof(float)), *noise = xmalloc(nl * sizeof(float));
    rng_normal_fill(&rng, x0, nl);
    rng_normal_fill(&rng, noise, nl);
    int t[1] = {321};
    Schedule s;
    CHECK(schedule_init(&s, 1000, "linear", "test") == 0);
    DiffusionLoss dl;
    diffusion_loss_init(&dl, 1, nl);
    memset(u.grads, 0, u.table.total * sizeof(float));
    diffusion_loss_forward(&dl, &u, &s, PRED_EPS, x0, noise, t, 1);
    diffusion_loss_backward(&dl, &u);
    const char *names[] = {"time_embed.0.weight", "time_embed.2.bias",
                           "down.0.res.0.temb_proj.weight", "up.0.res.1.conv1.bias",
                           "mid.res2.temb_proj.bias"};
    double worst = 0;
    for (size_t k = 0; k < sizeof names / sizeof *names; k++) {
        const ParamInfo *p = &u.table.info[params_find(&u.table, names[k])];
        // the element with the largest analytic gradient
        size_t best = p->offset;
        for (size_t j = p->offset; j < p->offset + p->size; j++)
            if (fabsf(u.grads[j]) > fabsf(u.grads[best])) best = j;
        float keep = u.params[best], h = 1e-2f;
        u.params[best] = keep + h;
        double lp = diffusion_loss_forward(&dl, &u, &s, PRED_EPS, x0, noise, t, 1);
        u.params[best] = keep - h;
        double lm = diffusion_loss_forward(&dl, &u, &s, PRED_EPS, x0, noise, t, 1);
        u.params[best] = keep;
        double fd = (lp - lm) / (2.0 * (double)h), g = u.grads[best];
        double rel = fabs(fd - g) / fmax(fabs(g), 1e-30);
        printf("     %-32s analytic %.6g  finite difference %.6g\n", names[k], g, fd);
        if (!(rel <= worst)) worst = rel;
        CHECK(fabs(g) > 0);
    }
    char msg[160];
    snprintf(msg, sizeof msg, "unet-s time path and biases vs finite differences: worst rel %.3g (tol 5e-3)",
             worst);
    check_true(msg, worst <= 5e-3);

    // Fixed weights (prepared Winograd weights, as the samplers use them)
    // give the same forward bit for bit, and unfixing goes back to reading
    // u->params: a changed weight changes the output again.
    float *o1 = xmalloc(nl * sizeof(float)), *o2 = xmalloc(nl * sizeof(float));
    unet_forward(&u, o1, x0, t, NULL, 1);
    unet_fix_weights(&u, 1);
    unet_forward(&u, o2, x0, t, NULL, 1);
    check_true("unet-s has prepared (Winograd) weights to fix", u.prep && u.prep_floats > 0);
    check_true("unet-s forward with fixed weights is bit-identical",
               memcmp(o1, o2, nl * sizeof(float)) == 0);
    unet_fix_weights(&u, 0);
    const ParamInfo *pw = &u.table.info[params_find(&u.table, "up.0.res.1.conv1.weight")];
    u.params[pw->offset] += 0.5f;
    unet_forward(&u, o2, x0, t, NULL, 1);
    check_true("after unet_fix_weights(u, 0) a changed weight is used",
               memcmp(o1, o2, nl * sizeof(float)) != 0);
    free(o1), free(o2);
    free(x0), free(noise);
    schedule_free(&s);
    diffusion_loss_free(&dl);
    unet_free(&u);
}

// unet-s with 10 classes: the table's place and init, what the labels do to
// the output, and the class rows' gradients against central finite
// differences of the whole model's loss (unet-s has two or more channels a
// GroupNorm group, so the class path is live, unlike in the tiny goldens).
static void test_unet_s_classes(void) {
    const int K = 10;
    UNetConfig c, c0;
    unet_config_default(&c0);
    c = c0;
    c.num_classes = K;
    check_true("unet-s with 10 classes passes unet_config_check", unet_config_check(&c, "cond") == 0);
    UNetConfig bad = c;
    bad.num_classes = -1;
    check_true("a negative class count rejected", unet_config_check(&bad, "bad") < 0);
    bad.num_classes = UNET_MAX_CLASSES + 1;
    check_true("more than UNET_MAX_CLASSES classes rejected", unet_config_check(&bad, "bad") < 0);

    UNet u, u0;
    unet_init(&u, &c, 2);
    unet_init(&u0, &c0, 1);
    int ti = params_find(&u.table, "label_emb.weight");
    const ParamInfo *tab = ti >= 0 ? &u.table.info[ti] : NULL;
    check_true("label_emb.weight (11, 256) follows time_embed.2.bias (the mirror's order)",
               tab && ti == params_find(&u.table, "time_embed.2.bias") + 1 &&
               tab->ndim == 2 && tab->shape[0] == K + 1 && tab->shape[1] == 256 &&
               u.table.total == u0.table.total + (size_t)(K + 1) * 256);

    // Init: unconditional, unet_init_values is params_init_values; the class
    // table is drawn last, so every other tensor gets the unconditional values.
    Rng r1, r2;
    rng_init(&r1, 5), rng_init(&r2, 5);
    unet_init_values(&u0, &r1);
    float *ref = xmalloc(u0.table.total * sizeof(float));
    params_init_values(&u0.table, ref, &r2);
    check_true("unconditional unet_init_values == params_init_values",
               memcmp(ref, u0.params, u0.table.total * sizeof(float)) == 0);
    rng_init(&r1, 5);
    unet_init_values(&u, &r1);
    int same = 1;
    for (int i = 0; i < u0.table.n; i++) {
        const ParamInfo *p = &u0.table.info[i];
        const ParamInfo *q = &u.table.info[params_find(&u.table, p->name)];
        same &= memcmp(u0.params + p->offset, u.params + q->offset, p->size * sizeof(float)) == 0;
    }
    double sum = 0, sq = 0;
    for (size_t j = 0; j < tab->size; j++) {
        double v = u.params[tab->offset + j];
        sum += v, sq += v * v;
    }
    double mean = sum / tab->size, sd = sqrt(sq / tab->size - mean * mean);
    char msg[200];
    snprintf(msg, sizeof msg, "class table init N(0, 1): mean %.3f, std %.3f over %zu values; "
             "the other tensors as unconditional", mean, sd, tab->size);
    check_true(msg, fabs(mean) < 0.1 && fabs(sd - 1) < 0.1 && same);
    free(ref);
    unet_free(&u0);

    Rng rng;
    rng_init(&rng, 13);
    random_weights(&u, &rng);
    size_t nl = 4 * 8 * 8;
    float *x = xmalloc(2 * nl * sizeof(float)), *noise = xmalloc(2 * nl * sizeof(float));
    float *o1 = xmalloc(2 * nl * sizeof(float)), *o2 = xmalloc(2 * nl * sizeof(float));
    rng_normal_fill(&rng, x, nl);
    memcpy(x + nl, x, nl * sizeof(float)); // two copies of one latent
    rng_normal_fill(&rng, noise, 2 * nl);
    int t[2] = {321, 321}, y[2] = {3, 7}, ynull[2] = {K, K};
    unet_forward(&u, o1, x, t, y, 2);
    check_true("two labels give two outputs for one x and t",
               memcmp(o1, o1 + nl, nl * sizeof(float)) != 0);
    unet_forward(&u, o1, x, t, NULL, 2);
    unet_forward(&u, o2, x, t, ynull, 2);
    check_true("no labels on a conditional UNet = the null class, bit for bit",
               memcmp(o1, o2, 2 * nl * sizeof(float)) == 0);

    // Labels 3 and the null class: their rows against finite differences,
    // every other row exactly zero.
    Schedule s;
    CHECK(schedule_init(&s, 1000, "linear", "test") == 0);
    DiffusionLoss dl;
    diffusion_loss_init(&dl, 2, nl);
    int yl[2] = {3, K};
    memset(u.grads, 0, u.table.total * sizeof(float));
    diffusion_loss_forward_labels(&dl, &u, &s, PRED_EPS, x, noise, t, yl, 2);
    diffusion_loss_backward(&dl, &u);
    int others_zero = 1;
    for (int k = 0; k <= K; k++)
        for (int j = 0; k != 3 && k != K && j < 256; j++)
            others_zero &= u.grads[tab->offset + (size_t)k * 256 + j] == 0.0f;
    check_true("class rows of labels not in the batch get no gradient", others_zero);
    double worst = 0;
    for (int k = 0; k < 2; k++) {
        size_t row = tab->offset + (size_t)yl[k] * 256, best = row;
        for (size_t j = row; j < row + 256; j++)
            if (fabsf(u.grads[j]) > fabsf(u.grads[best])) best = j;
        float keep = u.params[best], h = 1e-2f;
        u.params[best] = keep + h;
        double lp = diffusion_loss_forward_labels(&dl, &u, &s, PRED_EPS, x, noise, t, yl, 2);
        u.params[best] = keep - h;
        double lm = diffusion_loss_forward_labels(&dl, &u, &s, PRED_EPS, x, noise, t, yl, 2);
        u.params[best] = keep;
        double fd = (lp - lm) / (2.0 * (double)h), g = u.grads[best];
        printf("     label_emb row %-2d analytic %.6g  finite difference %.6g\n", yl[k], g, fd);
        double rel = fabs(fd - g) / fmax(fabs(g), 1e-30);
        if (!(rel <= worst)) worst = rel;
        CHECK(fabs(g) > 0);
    }
    snprintf(msg, sizeof msg, "unet-s class rows (label 3, null) vs finite differences: worst "
             "rel %.3g (tol 5e-3)", worst);
    check_true(msg, worst <= 5e-3);
    free(x), free(noise), free(o1), free(o2);
    schedule_free(&s);
    diffusion_loss_free(&dl);
    unet_free(&u);
}

int main(void) {
    test_resblock();
    test_attn("attn");
    test_attn("attn2");
    test_time_embed();
    test_time_label();
    test_unet();
    test_unet_cond();
    test_unet_s();
    test_unet_s_time_path();
    test_unet_s_classes();
    return test_summary("test_unet");
}
