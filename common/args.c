#include "args.h"

#include <errno.h>
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
        }
        fprintf(stderr, "  %-16s %s%s\n", o->name, o->help, def);
    }
    fprintf(stderr, "  %-16s %s\n", "--help", "show this help and exit");
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
            *(int *)o->ptr = (int)x;
            break;
        }
        case OPT_LONG: {
            long x = strtol(v, &end, 10);
            if (errno || *end || end == v)
                return errorf("%s: %s expects an integer, got '%s'", prog, a, v);
            *(long *)o->ptr = x;
            break;
        }
        case OPT_FLOAT: {
            double x = strtod(v, &end);
            if (errno || *end || end == v)
                return errorf("%s: %s expects a number, got '%s'", prog, a, v);
            *(double *)o->ptr = x;
            break;
        }
        case OPT_STR: *(const char **)o->ptr = v; break;
        case OPT_FLAG: break;
        }
    }
    return 0;
}

int args_given(const Opt *opts, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (!strcmp(opts[i].name, name)) return opts[i].given;
    CHECK(0 && "unknown option name");
    return 0;
}
