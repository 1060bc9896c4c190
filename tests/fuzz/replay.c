/*
 * libibvi fuzz replay - runs files through a fuzz target's
 * LLVMFuzzerTestOneInput() without libFuzzer, so the normal (and the
 * sanitizer and valgrind) builds replay the seed corpus and every input a
 * fuzzer ever crashed on.
 *
 * usage: replay PATH...   each PATH a file or a directory (its regular
 *                         files, not recursive; a missing directory is an
 *                         error, an empty one is fine)
 * Exit status 0 when every input ran; a violated invariant aborts.
 *
 * SPDX-License-Identifier: MIT
 */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "replay: cannot open %s\n", path);
        return -1;
    }
    size_t cap = 4096, len = 0;
    uint8_t *buf = malloc(cap);
    for (;;) {
        if (!buf) {
            fclose(f);
            fprintf(stderr, "replay: out of memory\n");
            return -1;
        }
        len += fread(buf + len, 1, cap - len, f);
        if (len < cap)
            break;
        uint8_t *grown = realloc(buf, cap * 2);
        if (!grown)
            free(buf);
        buf = grown;
        cap *= 2;
    }
    fclose(f);
    /* An exact-size copy, so a read past the input is caught by ASan and
     * valgrind as it would be under libFuzzer. */
    uint8_t *exact = malloc(len ? len : 1);
    if (!exact) {
        free(buf);
        return -1;
    }
    memcpy(exact, buf, len);
    free(buf);
    LLVMFuzzerTestOneInput(exact, len);
    free(exact);
    return 0;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(int argc, char **argv)
{
    long files = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            fprintf(stderr, "replay: %s does not exist\n", argv[i]);
            return 1;
        }
        if (!S_ISDIR(st.st_mode)) {
            if (run_file(argv[i]) != 0)
                return 1;
            files++;
            continue;
        }
        DIR *d = opendir(argv[i]);
        if (!d) {
            fprintf(stderr, "replay: cannot read %s\n", argv[i]);
            return 1;
        }
        char **names = NULL;
        size_t count = 0, cap = 0;
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.')
                continue;
            if (count == cap) {
                cap = cap ? 2 * cap : 64;
                char **grown = realloc(names, cap * sizeof *names);
                if (!grown)
                    return 1;
                names = grown;
            }
            names[count++] = strdup(e->d_name);
        }
        closedir(d);
        if (count > 0) /* qsort's pointer must not be NULL */
            qsort(names, count, sizeof *names, cmp_names);
        for (size_t k = 0; k < count; k++) {
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", argv[i], names[k]);
            if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
                printf("%s\n", path);
                fflush(stdout);
                if (run_file(path) != 0)
                    return 1;
                files++;
            }
            free(names[k]);
        }
        free(names);
    }
    printf("replayed %ld inputs\n", files);
    return 0;
}
