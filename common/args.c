#include "args.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

static void print_help(const char *prog, const Opt *opts, int n, const char *usage) {
    fprintf(stderr, "usage: %s %s\n\noptions:\n", prog, usage);
    for (int i = 0; i < n; i++) {
        const Opt *o = &opts[i];
        char def[96] = "";
        switch (o->type) {
        case OPT_INT: snprintf(def, sizeof def, " (default %d)", *(int *)o->ptr); break;
        case OPT_LONG: snprintf(def, sizeof def, " (default %ld)", *(long *)o->ptr); break;
        case OPT_FLOAT: snprintf(def, sizeof def, " (default %g)", *(double *)o->ptr); break;
        case OPT_STR:
            if (*(const char **)o->ptr)
                snprintf(def, sizeof def, " (default %s)", *(const char **)o->ptr);
            break;
        case OPT_FLAG: break;
        case OPT_SIZE: {
            char v[32];
            args_format_size(v, sizeof v, *(size_t *)o->ptr);
            snprintf(def, sizeof def, " (default %s)", v);
            break;
        }
        }
        if (strstr(o->help, "(default")) def[0] = '\0'; // the help says it better
        fprintf(stderr, "  %-16s %s%s\n", o->name, o->help, def);
    }
    fprintf(stderr, "  %-16s %s\n", "--help", "show this help and exit");
}

int args_check_range(const Opt *o, double v, const char *where) {
    if (o->type == OPT_FLOAT && !isfinite(v))
        return errorf("%s: %s must be a finite number, got %g", where, o->name, v);
    if ((o->lo != 0 || o->hi != 0) && v < o->lo)
        return errorf("%s: %s must be at least %.15g, got %.15g", where, o->name, o->lo, v);
    if ((o->lo != 0 || o->hi != 0) && v > o->hi)
        return errorf("%s: %s must be at most %.15g, got %.15g", where, o->name, o->hi, v);
    return 0;
}

int args_parse(int argc, char **argv, Opt *opts, int n, const char *usage) {
    const char *prog = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            print_help(prog, opts, n, usage);
            return 1;
        }
        Opt *o = NULL;
        for (int j = 0; j < n; j++)
            if (!strcmp(a, opts[j].name)) o = &opts[j];
        if (!o) return errorf("%s: unknown option '%s' (see --help)", prog, a);
        o->given = 1;
        if (o->type == OPT_FLAG) {
            *(int *)o->ptr = 1;
            continue;
        }
        if (i + 1 >= argc) return errorf("%s: option %s needs a value", prog, a);
        const char *v = argv[++i];
        char *end = NULL;
        errno = 0;
        switch (o->type) {
        case OPT_INT: {
            long x = strtol(v, &end, 10);
            if (errno || *end || end == v || x < -2147483647L || x > 2147483647L)
                return errorf("%s: %s expects an integer, got '%s'", prog, a, v);
            if (args_check_range(o, (double)x, prog)) return -1;
            *(int *)o->ptr = (int)x;
            break;
        }
        case OPT_LONG: {
            long x = strtol(v, &end, 10);
            if (errno || *end || end == v)
                return errorf("%s: %s expects an integer, got '%s'", prog, a, v);
            if (args_check_range(o, (double)x, prog)) return -1;
            *(long *)o->ptr = x;
            break;
        }
        case OPT_FLOAT: {
            double x = strtod(v, &end);
            if (errno || *end || end == v)
                return errorf("%s: %s expects a number, got '%s'", prog, a, v);
            if (args_check_range(o, x, prog)) return -1;
            *(double *)o->ptr = x;
            break;
        }
        case OPT_STR: *(const char **)o->ptr = v; break;
        case OPT_FLAG: break;
        case OPT_SIZE: {
            size_t x;
            if (args_parse_size(v, &x) != 0)
                return errorf("%s: %s expects a size in bytes such as 512M, 4G or 1500000000 "
                              "(K, M, G: powers of 1024), got '%s'", prog, a, v);
            if (args_check_range(o, (double)x, prog)) return -1;
            *(size_t *)o->ptr = x;
            break;
        }
        }
    }
    return 0;
}

int args_parse_size(const char *v, size_t *out) {
    // Digits, an optional fraction and suffix, nothing else: strtoull and
    // strtod alone would also take "-1", " 1", "inf", "1e9" and hex.
    const char *p = v;
    while (*p >= '0' && *p <= '9') p++;
    const char *dot = p;
    if (*p == '.')
        for (p++; *p >= '0' && *p <= '9'; p++) {}
    if (p == v || (dot == v && p == dot + 1)) return -1; // no digit at all
    size_t unit = 1;
    switch (*p) {
    case 'k': case 'K': unit = (size_t)1 << 10; p++; break;
    case 'm': case 'M': unit = (size_t)1 << 20; p++; break;
    case 'g': case 'G': unit = (size_t)1 << 30; p++; break;
    }
    if (*p) return -1;
    errno = 0;
    unsigned long long whole = dot == v ? 0 : strtoull(v, NULL, 10);
    size_t bytes;
    if (errno || mul_size((size_t)whole, unit, &bytes) != 0) return -1;
    size_t frac = *dot == '.' ? (size_t)(strtod(dot, NULL) * (double)unit) : 0;
    if (bytes > SIZE_MAX - frac) return -1;
    *out = bytes + frac;
    return 0;
}

void args_format_size(char *out, size_t cap, size_t bytes) {
    static const char units[] = "KMG";
    int u = -1; // the largest unit bytes reaches
    for (int k = 0; k < 3; k++)
        if (bytes >= (size_t)1 << (10 * (k + 1))) u = k;
    if (u < 0) {
        snprintf(out, cap, "%zu", bytes);
        return;
    }
    size_t unit = (size_t)1 << (10 * (u + 1));
    if (bytes % unit == 0) snprintf(out, cap, "%zu%c", bytes / unit, units[u]);
    else snprintf(out, cap, "%.1f%c", (double)bytes / (double)unit, units[u]);
}

int args_given(const Opt *opts, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (!strcmp(opts[i].name, name)) return opts[i].given;
    CHECK(0 && "unknown option name");
    return 0;
}

int int_list_parse(int *out, int cap, const char *s, const char *what) {
    int n = 0;
    const char *p = s;
    while (*p) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 1 || v > 1 << 16 || n == cap)
            return errorf("%s: '%s' is not a list of up to %d positive integers like 1,2",
                          what, s, cap);
        out[n++] = (int)v;
        p = end;
        if (*p == ',' && p[1]) p++;
        else if (*p) return errorf("%s: '%s' is not a comma-separated list", what, s);
    }
    if (n == 0) return errorf("%s: empty list", what);
    return n;
}

void int_list_format(char *out, size_t cap, const int *v, int n) {
    size_t len = 0;
    out[0] = 0;
    for (int i = 0; i < n && len < cap; i++)
        len += snprintf(out + len, cap - len, i ? ",%d" : "%d", v[i]);
}
