/* The kernel set OpenBLAS runs (its OPENBLAS_CORETYPE variable), chosen for this CPU.
 *
 * Debian's OpenBLAS 0.3.21 does not recognise recent AMD cores and falls back to its AVX2
 * ("Haswell") kernels, and some machine images pin OPENBLAS_CORETYPE=Haswell; on a CPU with
 * AVX-512 its "SkylakeX" kernels are about twice as fast for our shapes.  OpenBLAS reads the
 * variable once, when it loads, so a program that wants other kernels sets it and re-executes
 * itself.  Only programs that run their GEMMs through OpenBLAS need this: loqt built with
 * BLAS=openblas, the GEMM microbenchmark, and (through bench/run_bench.sh) the PyTorch baseline,
 * whose fp32 GEMMs are OpenBLAS's too.  oneDNN (BLAS=dnnl) picks its kernels by itself.
 *
 * LOQT_BLAS_CORETYPE=keep leaves OPENBLAS_CORETYPE as it is; LOQT_BLAS_CORETYPE=NAME forces NAME. */
#ifndef LOQT_OPENBLAS_KERNELS_H
#define LOQT_OPENBLAS_KERNELS_H

/* The OPENBLAS_CORETYPE to run with: "SkylakeX" on a CPU with AVX-512 when the variable is unset
 * or names an AVX2 or older set, LOQT_BLAS_CORETYPE's NAME when given, else NULL (leave it). */
const char *openblas_coretype_choice(void);

/* Call first in main(): when the choice differs from the environment, sets OPENBLAS_CORETYPE and
 * re-executes the program once (the environment marks the second run); returns if exec fails. */
void openblas_choose_kernels(char **argv);

#endif
