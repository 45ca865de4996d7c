// stats.h: feature statistics and the measures built on them.
//   FID (Heusel et al., 2017): |mu_a - mu_b|^2 + tr(Sa) + tr(Sb)
//       - 2 tr sqrt(Sa^1/2 Sb Sa^1/2), square roots by symmetric
//       eigendecompositions in double (LAPACK dsyevd_ from OpenBLAS).
//   KID (Binkowski et al., 2018): unbiased MMD^2 with the kernel
//       k(x, y) = (x.y / D + 1)^3, averaged over random subsets.
//   IS (Salimans et al., 2016): exp(E KL(p(y|x) || p(y))) over splits.
#pragma once
#include <stdint.h>

typedef struct {
    int D;
    int64_t n;
    double *mu;    // (D)
    double *sigma; // (D, D) covariance, unbiased (n - 1)
} FeatStats;

// What a statistics file records of how its features were made; FID and KID
// refuse to compare statistics whose meta differ.
typedef struct {
    char net[32];         // FeatNet.name
    char net_hash[17];    // FeatNet.hash
    char preprocess[160]; // FeatNet.preprocess
} FeatMeta;

// Mean and covariance of feat (n, D), two passes in double. n >= 2.
void featstats_compute(FeatStats *s, const float *feat, int64_t n, int D);
void featstats_free(FeatStats *s);
// Writes /mu (D) and /sigma (D, D) as float64, /features (n, D) float32 when
// feat is non-NULL (KID needs them), root attributes kind = "feature-stats",
// n, dim, net, net_hash, preprocess; temporary file then rename.
int featstats_write(const char *path, const FeatStats *s, const float *feat, const FeatMeta *m);
// Reads what featstats_write wrote; *feat (n, D) is malloc'd, or NULL when the
// file has none (feat may be NULL: not wanted). -1 with a message naming path.
int featstats_read(const char *path, FeatStats *s, float **feat, FeatMeta *m);
// 0 when a and b were made alike, else -1 with a message naming both and
// what differs (ia, ib: where they came from, for the message).
int featmeta_check(const FeatMeta *a, const char *ia, const FeatMeta *b, const char *ib);

// FID of two statistics of the same D. n <= D on either side makes its
// covariance singular: a warning, and the value is still finite. -1 with a
// message if D differs.
int frechet_distance(double *fd, const FeatStats *a, const FeatStats *b);
// KID over `subsets` subsets of min(subset_size, na, nb) items drawn from each
// side without replacement (seeded, reproducible): *mean, *std over subsets.
int kid_score(double *mean, double *std, const float *fa, int64_t na, const float *fb,
              int64_t nb, int D, int subsets, int subset_size, uint64_t seed);
// IS of logits (n, K) (softmax taken here) over `splits` consecutive splits.
int inception_score(double *mean, double *std, const float *logits, int64_t n, int K,
                    int splits);
