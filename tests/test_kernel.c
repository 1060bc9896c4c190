/*
 * Kernel selection (include/ibvi/kernel.h, lib/cpu.c, lib/kernels.c).
 *
 *   - the choice table of lib/cpu.c for the CPUs it names (including ones
 *     this machine is not, such as AMD Zen 5);
 *   - lib/cpu.c's detection against the compiler's own (__builtin_cpu_*);
 *   - the library in processes started with each environment: default,
 *     IBVI_BLIS_ARCH=off/auto, the user's BLIS_ARCH_TYPE, and a host that
 *     initialised BLIS first. The selection runs once per process, so each
 *     case re-runs this program (`test_kernel --report MODE`) in a child.
 *
 * This suite compiles lib/cpu.c in, to know what the library should choose
 * on the machine it runs on.
 *
 * SPDX-License-Identifier: MIT
 */
#define _POSIX_C_SOURCE 200809L
#include <blis.h>
#include <check.h>
#include <ibvi/ibvi.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cpu.h"

static const char *expected_choice(void)
{
    ibvi__cpu_features f;
    ibvi__cpu_detect(&f);
    return ibvi__cpu_blis_arch(&f);
}

/* ---- the choice table ---------------------------------------------------- */

START_TEST(choice_table)
{
    const struct {
        ibvi__cpu_features f;
        const char *want;
    } cases[] = {
        /* x86_64 amd avx2_fma avx512 */
        {{1, 0, 1, 1}, "skx"},     /* Intel AVX-512 (Skylake-X .. Sapphire Rapids) */
        {{1, 0, 1, 0}, "haswell"}, /* Intel AVX2 (Haswell .. Alder Lake)  */
        {{1, 1, 1, 1}, "zen3"},    /* AMD Zen 4 / Zen 5 (AVX-512)         */
        {{1, 1, 1, 0}, "zen3"},    /* AMD Zen 2 / Zen 3                    */
        {{1, 0, 0, 0}, NULL},      /* SSE only: leave it to BLIS          */
        {{1, 1, 0, 0}, NULL},
        {{0, 0, 0, 0}, NULL},      /* not x86-64                          */
        {{0, 0, 1, 1}, NULL},      /* flags without x86_64 mean nothing   */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *got = ibvi__cpu_blis_arch(&cases[i].f);
        if (cases[i].want == NULL)
            ck_assert_msg(got == NULL, "case %zu: got %s", i, got);
        else
            ck_assert_msg(got && strcmp(got, cases[i].want) == 0,
                          "case %zu: got %s, want %s", i, got ? got : "NULL",
                          cases[i].want);
    }
}
END_TEST

/* ---- detection against the compiler's ------------------------------------ */

START_TEST(detection_matches_compiler)
{
    ibvi__cpu_features f;
    ibvi__cpu_detect(&f);
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    ck_assert_int_eq(f.x86_64, 1);
    ck_assert_int_eq(f.amd, __builtin_cpu_is("amd") ? 1 : 0);
    const int avx2_fma = __builtin_cpu_supports("avx") &&
                         __builtin_cpu_supports("avx2") &&
                         __builtin_cpu_supports("fma");
    ck_assert_int_eq(f.avx2_fma, avx2_fma);
    const int avx512 = avx2_fma && __builtin_cpu_supports("avx512f") &&
                       __builtin_cpu_supports("avx512dq") &&
                       __builtin_cpu_supports("avx512cd") &&
                       __builtin_cpu_supports("avx512bw") &&
                       __builtin_cpu_supports("avx512vl");
    ck_assert_int_eq(f.avx512, avx512);
#else
    ck_assert_int_eq(f.x86_64, 0);
#endif
}
END_TEST

/* ---- the library, one child process per environment ----------------------- */

static char self_path[4096];

/* Runs `self --report mode` with the environment changes `env` (NAME=VALUE
 * to set, NAME alone to unset) and reads its "name origin host" line. */
static void run_child(const char *mode, const char *const *env, char *name,
                      int *origin, char *host)
{
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        close(fds[1]);
        unsetenv("BLIS_ARCH_TYPE");
        unsetenv("IBVI_BLIS_ARCH");
        for (int i = 0; env[i]; i++) {
            char buf[128];
            snprintf(buf, sizeof buf, "%s", env[i]);
            char *eq = strchr(buf, '=');
            if (eq) {
                *eq = '\0';
                setenv(buf, eq + 1, 1);
            } else {
                unsetenv(buf);
            }
        }
        execl(self_path, self_path, "--report", mode, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    FILE *f = fdopen(fds[0], "r");
    ck_assert_ptr_nonnull(f);
    char line[256] = "";
    ck_assert_ptr_nonnull(fgets(line, sizeof line, f));
    fclose(f);
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "child --report %s failed: %s", mode, line);
    ck_assert_int_eq(sscanf(line, "%63s %d %63s", name, origin, host), 3);
}

START_TEST(default_selects_for_this_cpu)
{
    char name[64], host[64];
    int origin;
    const char *none[] = {NULL};
    run_child("library", none, name, &origin, host);
    const char *want = expected_choice();
    if (want) {
        ck_assert_int_eq(origin, IBVI_KERNEL_SELECTED);
        ck_assert_str_eq(name, want);
    } else {
        ck_assert_int_eq(origin, IBVI_KERNEL_BLIS);
    }
    /* "auto" and an empty value mean the same as unset. */
    char name2[64];
    int origin2;
    const char *auto_env[] = {"IBVI_BLIS_ARCH=auto", NULL};
    run_child("library", auto_env, name2, &origin2, host);
    ck_assert_str_eq(name2, name);
    ck_assert_int_eq(origin2, origin);
    const char *empty_env[] = {"IBVI_BLIS_ARCH=", NULL};
    run_child("library", empty_env, name2, &origin2, host);
    ck_assert_int_eq(origin2, origin);
}
END_TEST

START_TEST(switch_turns_selection_off)
{
    char name[64], host[64];
    int origin;
    const char *off[] = {"IBVI_BLIS_ARCH=off", NULL};
    run_child("library", off, name, &origin, host);
    ck_assert_int_eq(origin, IBVI_KERNEL_DISABLED);
    /* BLIS's own choice: what a plain BLIS program gets. */
    char plain[64], plain_host[64];
    int plain_origin;
    run_child("blis-only", off, plain, &plain_origin, plain_host);
    ck_assert_str_eq(name, plain_host);
}
END_TEST

START_TEST(user_blis_arch_type_respected)
{
    /* Ask for the kernel set this CPU supports (or generic without AVX2),
     * by BLIS's id. */
    const char *want = expected_choice();
    if (!want)
        want = "generic";
    int id = -1;
    for (int i = 0; i < BLIS_NUM_ARCHS; i++)
        if (strcmp(bli_arch_string((arch_t)i), want) == 0)
            id = i;
    ck_assert_int_ge(id, 0);
    char env0[64];
    snprintf(env0, sizeof env0, "BLIS_ARCH_TYPE=%d", id);
    const char *env[] = {env0, NULL};
    char name[64], host[64];
    int origin;
    run_child("library", env, name, &origin, host);
    ck_assert_int_eq(origin, IBVI_KERNEL_USER);
    ck_assert_str_eq(name, want);
    /* The user's switch wins over libibvi's own. */
    const char *both[] = {env0, "IBVI_BLIS_ARCH=off", NULL};
    run_child("library", both, name, &origin, host);
    ck_assert_int_eq(origin, IBVI_KERNEL_USER);
}
END_TEST

START_TEST(host_initialised_blis_first)
{
    char name[64], host[64];
    int origin;
    const char *none[] = {NULL};
    run_child("host-first", none, name, &origin, host);
    /* BLIS's choice stands; libibvi says so (or, where BLIS chose what
     * libibvi would have, reports its own choice). */
    ck_assert_str_eq(name, host);
    const char *want = expected_choice();
    if (want && strcmp(want, host) != 0)
        ck_assert_int_eq(origin, IBVI_KERNEL_PREINITIALIZED);
    else
        ck_assert(origin == IBVI_KERNEL_SELECTED || origin == IBVI_KERNEL_BLIS);
}
END_TEST

/* The child side: prints "name origin host-arch" and checks that the
 * selection left the environment as it found it. */
static int report(const char *mode)
{
    const char *host = "-";
    if (strcmp(mode, "host-first") == 0 || strcmp(mode, "blis-only") == 0) {
        bli_init();
        host = bli_arch_string(bli_arch_query_id());
        if (strcmp(mode, "blis-only") == 0) {
            printf("%s %d %s\n", host, -1, host);
            return 0;
        }
    }
    const int user_set = getenv("BLIS_ARCH_TYPE") != NULL;
    const char *name = ibvi_kernel_name();
    const int origin = ibvi_kernel_get_origin();
    const char *desc = ibvi_kernel_description();
    if (!user_set && getenv("BLIS_ARCH_TYPE") != NULL) {
        printf("BLIS_ARCH_TYPE-left-set 0 -\n");
        return 1;
    }
    if (strncmp(desc, name, strlen(name)) != 0) {
        printf("description-mismatch 0 -\n");
        return 1;
    }
    /* The kernels really run: a forward pass after the choice. */
    ibvi_net *net;
    float x[4] = {1, 2, 3, 4}, y[2];
    if (ibvi_net_create(&net, 4, NULL) < 0 || ibvi_net_add_dense(net, 2, 1) < 0 ||
        ibvi_net_init(net, IBVI_PARAM_SP, 1) < 0 ||
        ibvi_net_forward_mean(net, x, 1, y) < 0) {
        printf("forward-failed 0 -\n");
        return 1;
    }
    ibvi_net_free(net);
    printf("%s %d %s\n", name, origin,
           strcmp(host, "-") == 0 ? name : host);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--report") == 0)
        return report(argv[2]);
    ssize_t len = readlink("/proc/self/exe", self_path, sizeof self_path - 1);
    if (len <= 0) {
        fprintf(stderr, "test_kernel: cannot find its own executable\n");
        return 1;
    }
    self_path[len] = '\0';

    Suite *s = suite_create("kernel");
    TCase *tc = tcase_create("selection");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, choice_table);
    tcase_add_test(tc, detection_matches_compiler);
    tcase_add_test(tc, default_selects_for_this_cpu);
    tcase_add_test(tc, switch_turns_selection_off);
    tcase_add_test(tc, user_blis_arch_type_respected);
    tcase_add_test(tc, host_initialised_blis_first);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    const int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
