/* train.c -- train the digits model from C with the library symgrad emitted.
 *
 *   build/train build/digits_data.bin build/digits_weights.bin [EPOCHS [BATCH_SIZE [MODE]]]
 *
 * Reads the images and labels that make_data_and_library.py wrote, and the initial
 * weights; runs EPOCHS passes (default 10) over the rows in order, in batches of
 * BATCH_SIZE rows (default 32; the last batch may be smaller), calling
 * digits_train_step once per batch (MODE "step", the default) or digits_train_epoch
 * once per epoch (MODE "epoch"); prints the mean loss of each epoch -- the same
 * numbers as model.fit(x, y, epochs, batch_size, shuffle=False) in Python.
 * No Python, NumPy or BLAS at run time: only libdigits.so (and libc).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "digits.h"

_Static_assert(DIGITS_N_WEIGHTS == 4 && DIGITS_N_SLOTS == 8,
               "train.c calls digits_train_step for two Dense layers and Adam: adapt the call");

static void fail(const char *what, const char *path) {
    fprintf(stderr, "train: %s %s\n", what, path);
    exit(1);
}

static void *read_exactly(FILE *f, size_t bytes, const char *path) {
    void *data = malloc(bytes ? bytes : 1);
    if (!data) fail("out of memory reading", path);
    if (fread(data, 1, bytes, f) != bytes) fail("truncated file", path);
    return data;
}

/* MODE step: one digits_train_step call per batch of consecutive rows. */
static int train_steps(int64_t rows, const double *x, const double *y, double **w, double **s,
                       int epochs, int64_t batch, void *workspace) {
    int64_t step = 0;
    for (int epoch = 1; epoch <= epochs; epoch++) {
        double total = 0.0;
        for (int64_t start = 0; start < rows; start += batch) {
            int64_t n = rows - start < batch ? rows - start : batch;
            double loss;
            step++;
            int32_t status = digits_train_step(
                n, x + start * DIGITS_INPUT_DIM, y + start * DIGITS_OUTPUT_DIM,
                w[0], w[1], w[2], w[3], s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7],
                DIGITS_BETA_1, DIGITS_BETA_2, DIGITS_EPSILON, DIGITS_LEARNING_RATE, (double)step,
                &loss, workspace);
            if (status != 0) {
                fprintf(stderr, "train: epoch %d, step %lld: status %d (see digits.h)\n", epoch,
                        (long long)step, (int)status);
                return 1;
            }
            total += loss * (double)n;
        }
        printf("epoch %d loss %.17g\n", epoch, total / (double)rows);
    }
    return 0;
}

/* MODE epoch: one digits_train_epoch call per epoch, the rows in order (the library
 * gathers the batches); t goes on from epoch to epoch through steps_before. */
static int train_epochs(int64_t rows, const double *x, const double *y, double **w, double **s,
                        int epochs, int64_t batch, void *workspace) {
    int64_t *order = malloc((size_t)rows * sizeof(int64_t));
    if (!order) fail("out of memory for", "the order");
    for (int64_t r = 0; r < rows; r++) order[r] = r;
    int64_t step = 0;
    for (int epoch = 1; epoch <= epochs; epoch++) {
        double loss;
        int64_t steps;
        int32_t status = digits_train_epoch(
            rows, batch, x, y, order, w[0], w[1], w[2], w[3], s[0], s[1], s[2], s[3], s[4],
            s[5], s[6], s[7], DIGITS_BETA_1, DIGITS_BETA_2, DIGITS_EPSILON, DIGITS_LEARNING_RATE,
            step, &loss, &steps, workspace);
        step += steps;
        if (status != 0) {
            fprintf(stderr, "train: epoch %d, step %lld: status %d\n", epoch,
                    (long long)step + 1, (int)status);
            free(order);
            return 1;
        }
        printf("epoch %d loss %.17g\n", epoch, loss);
    }
    free(order);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s DATA WEIGHTS [EPOCHS [BATCH_SIZE [step|epoch]]]\n", argv[0]);
        return 2;
    }
    int epochs = argc > 3 ? atoi(argv[3]) : 10;
    int64_t batch = argc > 4 ? atoll(argv[4]) : 32;
    const char *mode = argc > 5 ? argv[5] : "step";
    if (epochs < 0 || batch < 1 || (strcmp(mode, "step") != 0 && strcmp(mode, "epoch") != 0)) {
        fprintf(stderr, "train: EPOCHS must be >= 0, BATCH_SIZE >= 1, MODE step or epoch\n");
        return 2;
    }

    /* the data: rows, columns, X (rows x columns), labels (rows) */
    FILE *f = fopen(argv[1], "rb");
    if (!f) fail("cannot open", argv[1]);
    int64_t *dims = read_exactly(f, 2 * sizeof(int64_t), argv[1]);
    int64_t rows = dims[0], cols = dims[1];
    if (cols != DIGITS_INPUT_DIM || rows < 1) fail("unexpected shape in", argv[1]);
    double *x = read_exactly(f, (size_t)(rows * cols) * sizeof(double), argv[1]);
    int64_t *labels = read_exactly(f, (size_t)rows * sizeof(int64_t), argv[1]);
    fclose(f);

    /* the targets as the training step takes them: one-hot rows */
    double *y = calloc((size_t)(rows * DIGITS_OUTPUT_DIM), sizeof(double));
    if (!y) fail("out of memory for", "targets");
    for (int64_t r = 0; r < rows; r++) {
        if (labels[r] < 0 || labels[r] >= DIGITS_OUTPUT_DIM) fail("label out of range in", argv[1]);
        y[r * DIGITS_OUTPUT_DIM + labels[r]] = 1.0;
    }

    /* weights from the file; optimizer slots at their initial values */
    const int64_t weight_sizes[] = DIGITS_WEIGHT_SIZES;
    const int64_t slot_sizes[] = DIGITS_SLOT_SIZES;
    const double slot_initial[] = DIGITS_SLOT_INITIAL_VALUES;
    double *w[DIGITS_N_WEIGHTS], *s[DIGITS_N_SLOTS];
    f = fopen(argv[2], "rb");
    if (!f) fail("cannot open", argv[2]);
    for (int k = 0; k < DIGITS_N_WEIGHTS; k++)
        w[k] = read_exactly(f, (size_t)weight_sizes[k] * sizeof(double), argv[2]);
    fclose(f);
    for (int k = 0; k < DIGITS_N_SLOTS; k++) {
        s[k] = malloc((size_t)slot_sizes[k] * sizeof(double));
        if (!s[k]) fail("out of memory for", "optimizer slots");
        for (int64_t i = 0; i < slot_sizes[k]; i++) s[k][i] = slot_initial[k];
    }

    /* one workspace for the largest batch serves every batch */
    void *workspace = malloc(mode[0] == 'e' ? digits_train_epoch_workspace_size(batch)
                                            : digits_train_step_workspace_size(batch));
    if (!workspace) fail("out of memory for", "the workspace");

    int status = mode[0] == 'e' ? train_epochs(rows, x, y, w, s, epochs, batch, workspace)
                                : train_steps(rows, x, y, w, s, epochs, batch, workspace);

    free(workspace);
    for (int k = 0; k < DIGITS_N_WEIGHTS; k++) free(w[k]);
    for (int k = 0; k < DIGITS_N_SLOTS; k++) free(s[k]);
    free(x), free(y), free(labels), free(dims);
    return status;
}
