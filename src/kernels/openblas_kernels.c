#include "kernels/openblas_kernels.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

const char *openblas_coretype_choice(void) {
    const char *want = getenv("LOQT_BLAS_CORETYPE"), *have = getenv("OPENBLAS_CORETYPE");
    if (want) return strcmp(want, "keep") && *want ? want : NULL;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw") ||
        !__builtin_cpu_supports("avx512dq") || !__builtin_cpu_supports("avx512vl"))
        return NULL;
    /* the x86 kernel sets older than SkylakeX: a choice of one of these (by the machine image,
     * or by OpenBLAS itself when unset) is replaced; anything newer is the user's to keep */
    static const char *older[] = {"Haswell", "Zen", "Sandybridge", "Nehalem", "Core2",
                                  "Prescott", "Barcelona", "Bulldozer", "Piledriver",
                                  "Steamroller", "Excavator", "Atom"};
    if (!have || !*have) return "SkylakeX";
    for (size_t i = 0; i < sizeof older / sizeof older[0]; i++)
        if (!strcasecmp(have, older[i])) return "SkylakeX";
#endif
    (void)have;
    return NULL;
}

void openblas_choose_kernels(char **argv) {
    /* the second run: the variable is what the first one set */
    if (getenv("LOQT_REEXECED")) return;
    const char *want = openblas_coretype_choice(), *have = getenv("OPENBLAS_CORETYPE");
    if (!want || (have && !strcmp(want, have))) return;
    setenv("OPENBLAS_CORETYPE", want, 1);
    setenv("LOQT_REEXECED", "1", 1);
    execv("/proc/self/exe", argv);
    unsetenv("LOQT_REEXECED"); /* exec failed: carry on with the kernels already loaded */
}
