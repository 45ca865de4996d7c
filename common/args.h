// args.h: command-line flags from a table. Every program gets --help from it.
#pragma once
#include <stddef.h>

// OPT_SIZE: a byte count with an optional K, M or G suffix (powers of 1024).
typedef enum { OPT_INT, OPT_LONG, OPT_FLOAT, OPT_STR, OPT_FLAG, OPT_SIZE } OptType;

typedef struct {
    const char *name; // "--batch"
    OptType type;
    void *ptr;        // int*, long*, double*, const char**, int* (flag: 1 if given), size_t*
    const char *help; // one line; the default is printed from *ptr
    int given;        // set by args_parse when the flag was on the command line
    // Optional. attr: the checkpoint attribute that stores this setting (a
    // resumed run takes it from there; see tools/trainer.h). lo, hi: the
    // allowed range of a numeric value, inclusive, checked for the flag and
    // for the attribute alike (both 0: any value; floats must be finite).
    const char *attr;
    double lo, hi;
    // With attr: a checkpoint without that attribute (written before the
    // setting existed, or by a model family without it) keeps the flag's value.
    int attr_optional;
} Opt;

// Returns 0 to go on, 1 if --help was printed (exit 0), -1 on a bad flag or
// value (message printed; exit non-zero). `usage` is the synopsis line(s).
int args_parse(int argc, char **argv, Opt *opts, int n, const char *usage);
// A value for option o (from the command line or a file) within o's range;
// -1 with a message naming `where` (the program, or a file) otherwise.
int args_check_range(const Opt *o, double v, const char *where);
// 1 if flag `name` was given on the command line.
int args_given(const Opt *opts, int n, const char *name);
// "512M", "4G", "1.5G", "1500000000" -> bytes (K, M, G: 1024, 1024^2,
// 1024^3; either case; fractions rounded down). -1 on anything else.
int args_parse_size(const char *v, size_t *out);
// Bytes for --help and messages, in the largest unit reached, with one
// decimal when not whole: "4G", "5.9G", "512M", "1000".
void args_format_size(char *out, size_t cap, size_t bytes);
// "1,2" <-> {1, 2} (a model's channel multipliers, attention resolutions):
// parse returns the count, at most cap, or -1 (message names `what`; an
// empty list is refused).
int int_list_parse(int *out, int cap, const char *s, const char *what);
void int_list_format(char *out, size_t cap, const int *v, int n);
