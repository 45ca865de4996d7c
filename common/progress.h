// progress.h: the training progress line on stderr (step, loss parts,
// items/s, ETA).
#pragma once
#include <stdio.h>

typedef struct {
    double t_start, t_last_print;
    long step_start;  // step at which this run (or resume) started
    int is_tty;
} Progress;

void progress_init(Progress *p, long step_start);
// Prints "\rstep S/T | <parts> | X img/s | ETA m:ss" at most ~4 times a
// second (always when force). total <= 0: unknown total (no ETA);
// seconds_left >= 0 overrides the ETA (wall-clock budgets).
void progress_print(Progress *p, long step, long total, long items_done,
                    const char *parts, double seconds_left, int force);
// Ends the progress line with a newline (when on a terminal).
void progress_end(Progress *p);
