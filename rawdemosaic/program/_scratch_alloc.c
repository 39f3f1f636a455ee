/* halide_malloc / halide_free for rawdemosaic kernels: a per-thread cache of scratch blocks.
 *
 * Every output tile allocates its intermediate buffers and frees them when done. With glibc's
 * defaults, blocks above the (dynamic) mmap threshold are mapped and unmapped, or the heap top is
 * trimmed, once per tile, and every tile then pays page faults on fresh memory: a kernel ran at half
 * speed or worse depending on its tile size. Here each thread keeps the blocks it freed (best fit on
 * reuse), so tiles after the first run on warm memory. Blocks are released when the thread exits.
 * Linked into every kernel; these strong definitions replace the runtime's weak ones.
 */
#include <pthread.h>
#include <stdlib.h>

#define SLOTS 64  /* cached blocks per thread: more than the buffers one tile holds at once */
#define ALIGN 128 /* alignment (Halide needs 64 on x86) and the header before each block */

typedef struct {
    int n;
    char *blocks[SLOTS];
} cache_t;

static pthread_key_t key;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static size_t cap_of(char *p) { return *(size_t *)(p - ALIGN); }
static void release(char *p) { free(p - ALIGN); }

static void drop(void *arg) {
    cache_t *c = (cache_t *)arg;
    for (int i = 0; i < c->n; i++) release(c->blocks[i]);
    free(c);
}

static void make_key(void) { pthread_key_create(&key, drop); }

static cache_t *cache(void) {
    pthread_once(&once, make_key);
    cache_t *c = (cache_t *)pthread_getspecific(key);
    if (!c && (c = (cache_t *)calloc(1, sizeof(cache_t)))) pthread_setspecific(key, c);
    return c;
}

void *halide_malloc(void *user_context, size_t size) {
    (void)user_context;
    size_t need = (size + ALIGN - 1) & ~(size_t)(ALIGN - 1);
    cache_t *c = cache();
    if (c) {
        int best = -1;
        for (int i = 0; i < c->n; i++)
            if (cap_of(c->blocks[i]) >= need && (best < 0 || cap_of(c->blocks[i]) < cap_of(c->blocks[best]))) best = i;
        if (best >= 0) {
            char *p = c->blocks[best];
            c->blocks[best] = c->blocks[--c->n];
            return p;
        }
    }
    void *raw = NULL;
    /* header before, slack after: Halide may read a few bytes beyond either end */
    if (posix_memalign(&raw, ALIGN, need + 2 * ALIGN) != 0) return NULL;
    *(size_t *)raw = need;
    return (char *)raw + ALIGN;
}

void halide_free(void *user_context, void *ptr) {
    (void)user_context;
    if (!ptr) return;
    char *p = (char *)ptr;
    cache_t *c = cache();
    if (!c) {
        release(p);
        return;
    }
    if (c->n < SLOTS) {
        c->blocks[c->n++] = p;
        return;
    }
    int small = 0; /* full: keep the larger of this block and the smallest cached one */
    for (int i = 1; i < c->n; i++)
        if (cap_of(c->blocks[i]) < cap_of(c->blocks[small])) small = i;
    if (cap_of(c->blocks[small]) < cap_of(p)) {
        release(c->blocks[small]);
        c->blocks[small] = p;
    } else {
        release(p);
    }
}
