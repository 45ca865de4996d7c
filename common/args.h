// args.h: command-line flags from a table. Every program gets --help from it.
#pragma once

typedef enum { OPT_INT, OPT_LONG, OPT_FLOAT, OPT_STR, OPT_FLAG } OptType;

typedef struct {
    const char *name; // "--batch"
    OptType type;
    void *ptr;        // int*, long*, double*, const char**, int* (flag: 1 if given)
    const char *help; // one line; the default is printed from *ptr
    int given;        // set by args_parse when the flag was on the command line
} Opt;

// Returns 0 to go on, 1 if --help was printed (exit 0), -1 on a bad flag or
// value (message printed; exit non-zero). `usage` is the synopsis line(s).
int args_parse(int argc, char **argv, Opt *opts, int n, const char *usage);
// 1 if flag `name` was given on the command line.
int args_given(const Opt *opts, int n, const char *name);
