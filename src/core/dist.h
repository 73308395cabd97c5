/* The communication layer of data-parallel training: rank, size and the few collectives the
 * trainer needs, with a count of the bytes this rank sends.
 *
 * Built with MPI=1 (LOQT_MPI) and started by mpirun, it runs over MPI point-to-point messages;
 * otherwise (the default build, or an MPI build started without mpirun) it is one process of
 * rank 0 whose collectives do nothing.  Nothing outside core/dist.c includes mpi.h.
 *
 * The collectives are written here on MPI_Isend / MPI_Irecv rather than taken from MPI_Allreduce
 * for two reasons: the bytes each rank sends are then known exactly (docs/data_parallel.md checks
 * them against the cost model), and every wait has a deadline, so a rank that dies or hangs makes
 * the others stop with one clear line instead of waiting forever.
 *
 * A vector is given as pieces (dist_seg), reduced as if they were one contiguous vector, so many
 * small gradient buffers travel as one bucket without being copied into one first.  Messages go
 * through two staging buffers of DIST_PIECE_BYTES each (MEM_SCRATCH, from dist_init).
 *
 * Algorithms (N ranks, a vector of n elements, chunk c = [floor(c n / N), floor((c+1) n / N))):
 *   all-reduce: ring reduce-scatter then ring all-gather; rank r sends every chunk but chunk r in
 *               the first and every chunk but chunk r+1 (mod N) in the second: 2n - |c_r| -
 *               |c_{r+1}| elements, 2 (N-1)/N n on average, n exactly when N = 2;
 *   reduce:     a pipelined chain root+1 -> root+2 -> ... -> root; every rank but the root sends n;
 *   broadcast:  a pipelined chain root -> root+1 -> ...; every rank but root-1 sends n.
 * Sums are in the element type, added in the same order on every rank for a given chunk, so after
 * an all-reduce every rank holds bit-identical values. */
#ifndef LOQT_DIST_H
#define LOQT_DIST_H

#include <stddef.h>
#include <stdint.h>

/* What the bytes were for (counted separately): gradient reductions, parameters broadcast from
 * their owners (--zero 1), and small control values (losses, flags, norms). */
typedef enum { DIST_GRADS, DIST_PARAMS, DIST_CONTROL, DIST_NCHAN } dist_channel;

typedef struct {
    void *data;
    size_t n; /* elements */
} dist_seg;

enum { DIST_PIECE_BYTES = 4 << 20 };

/* Starts MPI when this is an MPI build launched by mpirun (else a single process).  0, or -1 with
 * an error.  Allocates the staging buffers when there is more than one rank. */
int dist_init(int *argc, char ***argv);
/* MPI_Finalize after a barrier (normal end only: a failed run exits without it). */
void dist_finalize(void);
int dist_rank(void);
int dist_size(void);
/* 1 in an MPI build (whether or not this run has several ranks). */
int dist_compiled(void);

/* A wait for another rank longer than this fails with an error naming the rank (default 300 s;
 * a checkpoint of a large model keeps the other ranks waiting for its writer). */
void dist_set_timeout(double seconds);

/* Sum over ranks, in place, of the float vector made of the pieces (every rank the same
 * lengths).  0, or -1 with an error (a rank that does not answer within the timeout). */
int dist_allreduce_f32(const dist_seg *segs, int nseg, dist_channel ch);
/* Sum over ranks into the root's pieces (the others' are left partly summed). */
int dist_reduce_f32(const dist_seg *segs, int nseg, int root, dist_channel ch);
/* The root's pieces into every rank's. */
int dist_bcast_f32(const dist_seg *segs, int nseg, int root, dist_channel ch);
/* Sum over ranks of a few doubles (control values), in place. */
int dist_allreduce_f64(double *x, int n, dist_channel ch);
/* Bytes broadcast from root into every rank's buf (control: file names, flags). */
int dist_bcast_bytes(void *buf, size_t n, int root);
int dist_barrier(void);

/* Bytes this rank has sent so far on a channel. */
uint64_t dist_bytes_sent(dist_channel ch);
/* Wall seconds this rank has spent in transfers so far, waiting for slower ranks included: what
 * overlapping the reductions with backward could hide at most. */
double dist_comm_seconds(void);
/* The planner's twin of dist_init's staging buffers (bytes, MEM_SCRATCH), for `ranks` ranks. */
size_t dist_staging_bytes(int ranks);

#endif
