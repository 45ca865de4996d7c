#include "progress.h"

#include <string.h>
#include <unistd.h>

#include "common.h"

void progress_init(Progress *p, long step_start) {
    p->t_start = now_seconds();
    p->t_last_print = 0;
    p->step_start = step_start;
    p->is_tty = isatty(2);
}

void progress_print(Progress *p, long step, long total, long items_done,
                    const char *parts, double seconds_left, int force) {
    double t = now_seconds();
    // Not a terminal (logs, CI): a line every 10 s instead of a redraw.
    double every = p->is_tty ? 0.25 : 10.0;
    if (!force && t - p->t_last_print < every) return;
    p->t_last_print = t;
    double el = t - p->t_start;
    double rate = el > 0 ? items_done / el : 0;
    long done = step - p->step_start;
    double eta = seconds_left;
    if (eta < 0 && total > 0 && done > 0) eta = el / done * (total - step);
    char etas[32] = "?";
    if (eta >= 0) snprintf(etas, sizeof etas, "%ld:%02ld", (long)eta / 60, (long)eta % 60);
    char tot[32] = "";
    if (total > 0) snprintf(tot, sizeof tot, "/%ld", total);
    fprintf(stderr, "%sstep %ld%s | %s | %.1f img/s | ETA %s%s",
            p->is_tty ? "\r\033[K" : "", step, tot, parts, rate, etas,
            p->is_tty ? "" : "\n");
    fflush(stderr);
}

void progress_end(Progress *p) {
    if (p->is_tty) fputc('\n', stderr);
}
