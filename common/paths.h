// paths.h: the paths a program is given, checked before any work, and the
// paths derived from them (never truncated).
#pragma once
#include <stddef.h>
#include <stdio.h>

// A path and the flag that gave it, for messages ("--vae", "x.h5").
typedef struct {
    const char *flag, *path;
} PathArg;

// What an output flag names: a file (written beside and renamed over, or
// appended to), or a folder that files are written into (created if missing).
typedef enum { OUT_FILE, OUT_DIR } OutKind;

// Room an output path must leave below PATH_MAX for the names derived from
// it: "<out>.tmp.<pid>", "<out>.log.jsonl.prev", "<stem>.step<N>.h5",
// "<dir>/<index>.png".
#define PATH_DERIVED_MAX 64

// Refuses, with a message naming out.flag, out.path and the problem (-1),
// an output that would destroy an input or cannot be written:
//  - the same file as one of inputs[0..n) (same device and inode, so links,
//    symlinks and other spellings of a path count; an input that does not
//    exist, such as the data set name "fashion-mnist", or whose path is
//    NULL, is skipped);
//  - a path longer than PATH_MAX - PATH_DERIVED_MAX, or a last component
//    longer than NAME_MAX - PATH_DERIVED_MAX (the OS would refuse what is
//    derived from it);
//  - OUT_FILE: an existing file that is not a regular file (a folder; a FIFO
//    or device, which the rename would replace), a parent folder that is
//    missing, not a folder or not writable;
//  - OUT_DIR: an existing file that is not a folder.
int check_output_path(PathArg out, OutKind kind, const PathArg *inputs, int n_inputs);

// 0 if `path` names a regular file (after symlinks); else -1 with *why set
// to a short reason (the stat error, "is a folder", "is not a regular file
// (a FIFO, socket or device)"). A FIFO opened for reading waits for a writer
// and a device may never end, so a user's file is checked before it is
// opened.
int regular_file(const char *path, const char **why);

// fopen(path, "rb") of a regular file only: checked on the open descriptor
// (opened non-blocking, so a FIFO does not hang the open itself). NULL with
// *why set otherwise.
FILE *fopen_regular(const char *path, const char **why);

// snprintf for a path derived from a user's path: -1 with a message when it
// does not fit in buf[cap], instead of a silently truncated path.
int path_printf(char *buf, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
