/* The communication layer (core/dist.h): MPI point-to-point messages with deadlines, or one
 * process. */
#include "core/dist.h"

#include "core/error.h"
#include "core/mem.h"
#include "core/progress.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef LOQT_MPI
#include <mpi.h>
#endif

static int world_rank = 0, world_size = 1;
static double timeout_s = 300.0;
static uint64_t sent[DIST_NCHAN];
static double comm_s; /* wall seconds inside transfers, waiting for the other ranks included */

int dist_rank(void) { return world_rank; }
int dist_size(void) { return world_size; }
void dist_set_timeout(double seconds) { timeout_s = seconds > 0 ? seconds : timeout_s; }
uint64_t dist_bytes_sent(dist_channel ch) { return ch < DIST_NCHAN ? sent[ch] : 0; }
double dist_comm_seconds(void) { return comm_s; }
size_t dist_staging_bytes(int ranks) { return ranks > 1 ? 2 * (size_t)DIST_PIECE_BYTES : 0; }

/* the number of ranks mpirun (or another PMI launcher) started, 0 if none did */
static int launched_ranks(void) {
    const char *v = getenv("OMPI_COMM_WORLD_SIZE");
    if (!v) v = getenv("PMI_SIZE");
    return v ? atoi(v) : 0;
}

#ifndef LOQT_MPI

int dist_compiled(void) { return 0; }

int dist_init(int *argc, char ***argv) {
    (void)argc, (void)argv;
    if (launched_ranks() > 1)
        return loqt_set_error("started by mpirun with %d ranks, but this loqt was built without MPI: "
                              "build it with 'make MPI=1' (build-mpi/loqt)", launched_ranks());
    return 0;
}
void dist_finalize(void) {}
int dist_allreduce_f32(const dist_seg *s, int n, dist_channel ch) { (void)s, (void)n, (void)ch; return 0; }
int dist_reduce_f32(const dist_seg *s, int n, int root, dist_channel ch) { (void)s, (void)n, (void)root, (void)ch; return 0; }
int dist_bcast_f32(const dist_seg *s, int n, int root, dist_channel ch) { (void)s, (void)n, (void)root, (void)ch; return 0; }
int dist_allreduce_f64(double *x, int n, dist_channel ch) { (void)x, (void)n, (void)ch; return 0; }
int dist_bcast_bytes(void *buf, size_t n, int root) { (void)buf, (void)n, (void)root; return 0; }
int dist_barrier(void) { return 0; }

#else

int dist_compiled(void) { return 1; }

static int mpi_started;
static char *stage_send, *stage_recv; /* DIST_PIECE_BYTES each, MEM_SCRATCH */

static int mpi_error(int rc, const char *what) {
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    return loqt_set_error("rank %d: MPI failed during %s: %.*s (another rank probably died)", world_rank, what, len, msg);
}

int dist_init(int *argc, char ***argv) {
    if (launched_ranks() < 1) return 0; /* not started by mpirun: one process */
    int provided = 0, rc = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
    if (rc != MPI_SUCCESS) return loqt_set_error("MPI_Init failed (started by mpirun?)");
    mpi_started = 1;
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world_size);
    if (world_size > 1) {
        stage_send = mem_alloc(MEM_SCRATCH, DIST_PIECE_BYTES);
        stage_recv = mem_alloc(MEM_SCRATCH, DIST_PIECE_BYTES);
    }
    return 0;
}

void dist_finalize(void) {
    if (!mpi_started) return;
    dist_barrier();
    mem_free(stage_send);
    mem_free(stage_recv);
    stage_send = stage_recv = NULL;
    MPI_Finalize();
    mpi_started = 0;
}

static void pause_briefly(int round) {
    /* spin a little (a message usually arrives within microseconds), then sleep, so that a rank
     * waiting for a slower one does not take a core from it */
    if (round < 64) return;
    struct timespec ts = {0, round < 1000 ? 20000 : 500000};
    nanosleep(&ts, NULL);
}

/* Sends sbytes to `to` and receives rbytes from `from` (either may be 0), within the timeout. */
static int xfer(const void *sbuf, size_t sbytes, int to, void *rbuf, size_t rbytes, int from,
                dist_channel ch, const char *what) {
    MPI_Request req[2];
    int nreq = 0, rc;
    const double t0 = loqt_now();
    if (rbytes) {
        rc = MPI_Irecv(rbuf, (int)rbytes, MPI_BYTE, from, 0, MPI_COMM_WORLD, &req[nreq++]);
        if (rc != MPI_SUCCESS) return mpi_error(rc, what);
    }
    if (sbytes) {
        rc = MPI_Isend((void *)sbuf, (int)sbytes, MPI_BYTE, to, 0, MPI_COMM_WORLD, &req[nreq++]);
        if (rc != MPI_SUCCESS) return mpi_error(rc, what);
        sent[ch] += sbytes;
    }
    for (int round = 0;; round++) {
        int done = 0;
        rc = MPI_Testall(nreq, req, &done, MPI_STATUSES_IGNORE);
        if (rc != MPI_SUCCESS) return mpi_error(rc, what);
        if (done) {
            comm_s += loqt_now() - t0;
            return 0;
        }
        if (loqt_now() - t0 > timeout_s)
            return loqt_set_error("rank %d: rank %d did not answer for %.0f s during %s: a rank died or hangs "
                                  "(--dist-timeout; the last complete checkpoint is intact)",
                                  world_rank, rbytes ? from : to, timeout_s, what);
        pause_briefly(round);
    }
}

/* ---- a vector made of pieces ---------------------------------------------------------------- */

typedef struct {
    const dist_seg *s;
    int n;
    size_t esz; /* element bytes */
    void (*add)(void *dst, const void *src, size_t n);
} vvec;

enum { VV_GET, VV_PUT, VV_ADD };

static void add_f32(void *d, const void *s, size_t n) {
    float *x = d;
    const float *y = s;
    for (size_t i = 0; i < n; i++) x[i] += y[i];
}

static void add_f64(void *d, const void *s, size_t n) {
    double *x = d;
    const double *y = s;
    for (size_t i = 0; i < n; i++) x[i] += y[i];
}

static size_t vv_len(const vvec *v) {
    size_t n = 0;
    for (int i = 0; i < v->n; i++) n += v->s[i].n;
    return n;
}

/* elements [off, off + len) of the vector out of (GET) or into (PUT, ADD) buf */
static void vv_apply(const vvec *v, size_t off, size_t len, char *buf, int mode) {
    size_t base = 0;
    for (int i = 0; i < v->n && len; i++) {
        const size_t n = v->s[i].n;
        if (off >= base + n) {
            base += n;
            continue;
        }
        const size_t a = off - base, k = n - a < len ? n - a : len;
        char *p = (char *)v->s[i].data + a * v->esz;
        if (mode == VV_GET) memcpy(buf, p, k * v->esz);
        else if (mode == VV_PUT) memcpy(p, buf, k * v->esz);
        else v->add(p, buf, k);
        buf += k * v->esz;
        off += k;
        len -= k;
        base += n;
    }
}

static size_t piece_elems(const vvec *v) { return DIST_PIECE_BYTES / v->esz; }

/* Sends elements [sa, sa+sl) to `to` while receiving [ra, ra+rl) from `from`, in pieces, applying
 * what arrives with `mode` (PUT or ADD). */
static int exchange(const vvec *v, size_t sa, size_t sl, int to, size_t ra, size_t rl, int from,
                    int mode, dist_channel ch, const char *what) {
    const size_t P = piece_elems(v);
    for (size_t k = 0; k < sl || k < rl; k += P) {
        const size_t s = k < sl ? (sl - k < P ? sl - k : P) : 0, r = k < rl ? (rl - k < P ? rl - k : P) : 0;
        if (s) vv_apply(v, sa + k, s, stage_send, VV_GET);
        if (xfer(stage_send, s * v->esz, to, stage_recv, r * v->esz, from, ch, what)) return -1;
        if (r) vv_apply(v, ra + k, r, stage_recv, mode);
    }
    return 0;
}

/* the start of chunk c of n elements (n * c stays far below 2^64: n < 2^40, c <= ranks) */
static size_t chunk_at(size_t n, int c) { return (size_t)((uint64_t)n * (uint64_t)c / (uint64_t)world_size); }

static int ring_allreduce(const vvec *v, dist_channel ch, const char *what) {
    const int N = world_size, r = world_rank, next = (r + 1) % N, prev = (r + N - 1) % N;
    const size_t n = vv_len(v);
    if (N < 2 || n == 0) return 0;
    for (int s = 0; s < N - 1; s++) { /* reduce-scatter: afterwards chunk r holds the sum */
        const int cs = (r - s - 1 + 2 * N) % N, cr = (r - s - 2 + 2 * N) % N;
        if (exchange(v, chunk_at(n, cs), chunk_at(n, cs + 1) - chunk_at(n, cs), next, chunk_at(n, cr),
                     chunk_at(n, cr + 1) - chunk_at(n, cr), prev, VV_ADD, ch, what))
            return -1;
    }
    for (int s = 0; s < N - 1; s++) { /* all-gather */
        const int cs = (r - s + N) % N, cr = (r - s - 1 + N) % N;
        if (exchange(v, chunk_at(n, cs), chunk_at(n, cs + 1) - chunk_at(n, cs), next, chunk_at(n, cr),
                     chunk_at(n, cr + 1) - chunk_at(n, cr), prev, VV_PUT, ch, what))
            return -1;
    }
    return 0;
}

/* chain root+1 -> ... -> root (reduce, ADD) or root -> root+1 -> ... (broadcast, PUT): this
 * rank receives from its predecessor on the chain and sends to its successor, piece by piece */
static int chain(const vvec *v, int root, int mode, dist_channel ch, const char *what) {
    const int N = world_size, pos = (world_rank - root + N) % N;
    const size_t n = vv_len(v), P = piece_elems(v);
    if (N < 2 || n == 0) return 0;
    const int first = mode == VV_ADD ? 1 : 0, last = mode == VV_ADD ? N : N - 1; /* N: the root */
    const int p = pos == 0 && mode == VV_ADD ? N : pos;
    const int recv = p > first, send = p < last;
    const int from = (world_rank + N - 1) % N, to = (world_rank + 1) % N;
    for (size_t k = 0; k < n; k += P) {
        const size_t len = n - k < P ? n - k : P;
        if (recv) {
            if (xfer(NULL, 0, to, stage_recv, len * v->esz, from, ch, what)) return -1;
            vv_apply(v, k, len, stage_recv, mode);
        }
        if (send) {
            vv_apply(v, k, len, stage_send, VV_GET);
            if (xfer(stage_send, len * v->esz, to, NULL, 0, from, ch, what)) return -1;
        }
    }
    return 0;
}

int dist_allreduce_f32(const dist_seg *segs, int nseg, dist_channel ch) {
    const vvec v = {segs, nseg, sizeof(float), add_f32};
    return ring_allreduce(&v, ch, "a gradient all-reduce");
}

int dist_reduce_f32(const dist_seg *segs, int nseg, int root, dist_channel ch) {
    const vvec v = {segs, nseg, sizeof(float), add_f32};
    return chain(&v, root, VV_ADD, ch, "a gradient reduction");
}

int dist_bcast_f32(const dist_seg *segs, int nseg, int root, dist_channel ch) {
    const vvec v = {segs, nseg, sizeof(float), add_f32};
    return chain(&v, root, VV_PUT, ch, "a parameter broadcast");
}

int dist_allreduce_f64(double *x, int n, dist_channel ch) {
    const dist_seg s = {x, (size_t)n};
    const vvec v = {&s, 1, sizeof(double), add_f64};
    return ring_allreduce(&v, ch, "an all-reduce of control values");
}

int dist_bcast_bytes(void *buf, size_t n, int root) {
    const dist_seg s = {buf, n};
    const vvec v = {&s, 1, 1, NULL};
    return chain(&v, root, VV_PUT, DIST_CONTROL, "a broadcast of control values");
}

int dist_barrier(void) {
    double x = 0;
    return dist_allreduce_f64(&x, 1, DIST_CONTROL);
}

#endif
