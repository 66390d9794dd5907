"""Stateful metrics against textbook NumPy references written from Keras's documented formulas.

Each reference below is written from the formula (loops over thresholds and
samples, float64), not from symgrad's code. The metrics must equal them at rtol
1e-12: as plain functions, accumulated over uneven batches with
``update_state``, and through ``fit`` / ``evaluate`` on both backends (the
LLVM one as a whole-epoch native call, its statistics summed in native code).
"""

from __future__ import annotations

import numpy as np
import pytest

from symgrad import metrics as M
from symgrad.layers import Dense
from symgrad.models import Sequential

RTOL = 1e-12
EPS = 1e-7  # Keras's backend epsilon


# --------------------------------------------------------------------------
# References


def confusion(y, p, thresholds):
    """tp, fp, fn, tn per threshold, every entry a prediction: positive when p > t."""
    y, p = np.ravel(y) != 0, np.ravel(p)
    rows = []
    for t in thresholds:
        hit = p > t
        rows.append([np.sum(hit & y), np.sum(hit & ~y), np.sum(~hit & y), np.sum(~hit & ~y)])
    return np.array(rows, dtype=np.float64).T


def ratio(a, b):
    return np.array([x / z if z else 0.0 for x, z in zip(a, b)])


def ref_precision(y, p, t=0.5):
    tp, fp, _, _ = confusion(y, p, [t])
    return ratio(tp, tp + fp)[0]


def ref_recall(y, p, t=0.5):
    tp, _, fn, _ = confusion(y, p, [t])
    return ratio(tp, tp + fn)[0]


def auc_thresholds(num):
    return [-EPS] + [(i + 1) / (num - 1) for i in range(num - 2)] + [1 + EPS]


def ref_auc(y, p, num=200, curve="ROC", method="interpolation"):
    """Keras's Riemann sum: heights by the summation method, widths x[i] - x[i + 1]."""
    tp, fp, fn, tn = confusion(y, p, auc_thresholds(num))
    if curve == "PR" and method == "interpolation":
        return ref_pr_interpolated(tp, fp, fn)
    recall = ratio(tp, tp + fn)
    x, h = (ratio(fp, fp + tn), recall) if curve == "ROC" else (recall, ratio(tp, tp + fp))
    area = 0.0
    for i in range(num - 1):
        height = {"interpolation": (h[i] + h[i + 1]) / 2, "minoring": min(h[i], h[i + 1])}.get(
            method, max(h[i], h[i + 1])
        )
        area += (x[i] - x[i + 1]) * height
    return area


def ref_pr_interpolated(tp, fp, fn):
    """Davis & Goadrich: tp and p = tp + fp linear between thresholds A, B; the area of a
    bucket is slope * (dtp + intercept * log(p_A / p_B)) / positives, 0 where undefined."""
    area = 0.0
    for a in range(len(tp) - 1):
        b = a + 1
        pa, pb = tp[a] + fp[a], tp[b] + fp[b]
        dtp, dp = tp[a] - tp[b], pa - pb
        slope = dtp / dp if dp > 0 else 0.0
        intercept = tp[b] - slope * pb
        log_ratio = np.log(pa / pb) if pa > 0 and pb > 0 else 0.0
        positives = tp[b] + fn[b]
        if positives > 0:
            area += slope * (dtp + intercept * log_ratio) / positives
    return area


def ref_f1(y, p, average=None, threshold=None):
    """Per class: precision and recall with eps in the denominators, f1 = 2pr / (p + r + eps)."""
    if threshold is None:
        predicted = np.array([[1.0 if v == max(row) else 0.0 for v in row] for row in p])
    else:
        predicted = (p > threshold).astype(float)
    tp = (y * predicted).sum(axis=0)
    fp = ((1 - y) * predicted).sum(axis=0)
    fn = (y * (1 - predicted)).sum(axis=0)
    if average == "micro":
        tp, fp, fn = tp.sum(), fp.sum(), fn.sum()
    prec, rec = tp / (tp + fp + EPS), tp / (tp + fn + EPS)
    f1 = 2 * prec * rec / (prec + rec + EPS)
    if average == "weighted":
        return np.sum(f1 * y.sum(axis=0)) / y.sum()
    return f1 if average is None else np.mean(f1)


def ref_r2(y, p):
    """Mean over columns of 1 - sum (y - p)^2 / sum (y - mean y)^2."""
    scores = []
    for c in range(y.shape[1]):
        ss_res = np.sum((y[:, c] - p[:, c]) ** 2)
        ss_tot = np.sum((y[:, c] - np.mean(y[:, c])) ** 2)
        scores.append(1 - ss_res / ss_tot)
    return np.mean(scores)


def ref_rmse(y, p):
    return np.sqrt(np.mean(np.mean((y - p) ** 2, axis=1)))


def ref_top_k(y, p, k):
    """Hit: fewer than k classes score strictly above the label's (ties at the k-th are in)."""
    labels = np.argmax(y, axis=1)
    return np.mean([np.sum(row > row[c]) < k for row, c in zip(p, labels)])


# --------------------------------------------------------------------------
# Data


def binary_data(rng, n=53, cols=1):
    y = (rng.random((n, cols)) > 0.4).astype(float)
    p = np.clip(0.35 * y + 0.65 * rng.random((n, cols)), 0, 1)
    return y, p


def class_data(rng, n=53, k=4):
    labels = rng.integers(0, k, n)
    logits = rng.standard_normal((n, k)) + 1.5 * np.eye(k)[labels]
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return np.eye(k)[labels], p


def regression_data(rng, n=53, k=2):
    y = rng.standard_normal((n, k)) * [1.0, 3.0][:k] + 0.5
    return y, y + 0.7 * rng.standard_normal((n, k))


def uneven(n):
    """Batch boundaries of sizes 7, 1, 20, 5, ... (the rest)."""
    cuts, at = [], 0
    for size in (7, 1, 20, 5):
        at += size
        if at < n:
            cuts.append(at)
    return np.split(np.arange(n), cuts)


CASES = {  # name -> (metric factory, data, reference)
    "precision": (M.Precision, binary_data, ref_precision),
    "precision-0.7": (lambda: M.Precision(0.7), binary_data, lambda y, p: ref_precision(y, p, 0.7)),
    "recall": (M.Recall, binary_data, ref_recall),
    "recall-two-columns": (M.Recall, lambda r: binary_data(r, cols=2), ref_recall),
    "auc-roc": (M.AUC, binary_data, ref_auc),
    "auc-roc-11-minoring": (
        lambda: M.AUC(11, summation_method="minoring"),
        binary_data,
        lambda y, p: ref_auc(y, p, 11, method="minoring"),
    ),
    "auc-roc-majoring": (
        lambda: M.AUC(summation_method="majoring"),
        binary_data,
        lambda y, p: ref_auc(y, p, method="majoring"),
    ),
    "auc-pr": (lambda: M.AUC(curve="PR"), binary_data, lambda y, p: ref_auc(y, p, curve="PR")),
    "auc-pr-minoring": (
        lambda: M.AUC(curve="PR", summation_method="minoring"),
        binary_data,
        lambda y, p: ref_auc(y, p, curve="PR", method="minoring"),
    ),
    "f1": (M.F1Score, class_data, ref_f1),
    "f1-macro": (lambda: M.F1Score("macro"), class_data, lambda y, p: ref_f1(y, p, "macro")),
    "f1-micro-0.3": (
        lambda: M.F1Score("micro", 0.3),
        class_data,
        lambda y, p: ref_f1(y, p, "micro", 0.3),
    ),
    "f1-weighted": (
        lambda: M.F1Score("weighted"),
        class_data,
        lambda y, p: ref_f1(y, p, "weighted"),
    ),
    "top-2": (lambda: M.TopKCategoricalAccuracy(2), class_data, lambda y, p: ref_top_k(y, p, 2)),
    "rmse": (M.RootMeanSquaredError, regression_data, ref_rmse),
    "r2": (M.R2Score, regression_data, ref_r2),
}


@pytest.mark.parametrize("case", list(CASES))
def test_accumulated_over_uneven_batches_equals_the_reference(case, rng):
    make, data, reference = CASES[case]
    y, p = data(rng)
    expected = reference(y, p)
    whole = make()
    np.testing.assert_allclose(whole(y, p), expected, rtol=RTOL, atol=1e-15)
    metric = make()
    for rows in uneven(len(y)):
        metric.update_state(y[rows], p[rows])
    np.testing.assert_allclose(metric.result(), expected, rtol=RTOL, atol=1e-15)
    metric.reset_state()
    metric.update_state(y[:9], p[:9])  # reset: only what comes after counts
    np.testing.assert_allclose(metric.result(), reference(y[:9], p[:9]), rtol=RTOL, atol=1e-15)


def test_a_mean_of_batch_precisions_is_not_the_precision(rng):
    """The state is the counts: batches of uneven size weigh by their predictions."""
    y = np.array([1, 0, 0, 0, 1, 1, 1, 1, 1, 0], dtype=float)
    p = np.array([0.9, 0.8, 0.7, 0.6, 0.9, 0.9, 0.9, 0.9, 0.9, 0.1])
    metric = M.Precision()
    for rows in (slice(0, 4), slice(4, 10)):
        metric.update_state(y[rows], p[rows])
    assert metric.result() == pytest.approx(6 / 9, rel=RTOL)  # not (1/4 + 5/5) / 2
    assert metric.true_positives[0] == 6 and metric.false_positives[0] == 3


def test_keras_documented_examples():
    m = M.AUC(num_thresholds=3)
    m.update_state([0, 0, 1, 1], [0, 0.5, 0.3, 0.9])
    assert m.result() == 0.75
    np.testing.assert_array_equal(m.true_positives, [2, 1, 0])
    np.testing.assert_array_equal(m.false_positives, [2, 0, 0])
    np.testing.assert_array_equal(m.false_negatives, [0, 1, 2])
    np.testing.assert_array_equal(m.true_negatives, [0, 2, 2])
    m.reset_state()
    m.update_state([0, 0, 1, 1], [0, 0.5, 0.3, 0.9], sample_weight=[1, 0, 0, 1])
    assert m.result() == 1.0
    assert M.precision([0, 1, 1, 1], [1, 0, 1, 1]) == pytest.approx(2 / 3, rel=RTOL)
    assert M.recall([0, 1, 1, 1], [1, 0, 1, 1]) == pytest.approx(2 / 3, rel=RTOL)
    np.testing.assert_array_equal(
        M.top_k_categorical_accuracy(
            [[0, 0, 1], [0, 1, 0]], [[0.1, 0.9, 0.8], [0.05, 0.95, 0]], k=1
        ),
        [0, 1],
    )
    np.testing.assert_array_equal(
        M.sparse_top_k_categorical_accuracy([2, 1], [[0.1, 0.9, 0.8], [0.05, 0.95, 0]], k=1),
        [0, 1],
    )


def test_sample_weights_count_each_sample_as_often(rng):
    """A weight of 2 counts like the sample twice; 0 drops it."""
    y, p = binary_data(rng, n=20)
    w = rng.integers(0, 3, 20)
    repeated = np.repeat(np.arange(20), w)
    for make in (M.Precision, M.Recall, M.AUC, M.RootMeanSquaredError, M.R2Score):
        weighted = make()(y, p, sample_weight=w)
        assert weighted == pytest.approx(make()(y[repeated], p[repeated]), rel=RTOL)
    with pytest.raises(ValueError, match=r"sample_weight must hold one finite weight >= 0"):
        M.Precision()(y, p, sample_weight=-w)


def test_against_scikit_learn(rng):
    sk = pytest.importorskip("sklearn.metrics")
    y, p = binary_data(rng, n=200)
    assert M.precision(y, p) == pytest.approx(sk.precision_score(y, p > 0.5), rel=RTOL)
    assert M.recall(y, p) == pytest.approx(sk.recall_score(y, p > 0.5), rel=RTOL)
    # scores on a grid between the thresholds: the thresholded curve is the exact one
    grid = (np.floor(p * 10) + 0.5) / 10
    assert M.auc(y, grid, num_thresholds=11) == pytest.approx(sk.roc_auc_score(y, grid), rel=RTOL)
    y, p = class_data(rng, n=200)
    labels = np.argmax(y, axis=1)
    np.testing.assert_allclose(
        M.f1_score(y, p), sk.f1_score(labels, np.argmax(p, axis=1), average=None), rtol=1e-6
    )
    assert M.top_k_categorical_accuracy(y, p, k=2).mean() == pytest.approx(
        sk.top_k_accuracy_score(labels, p, k=2), rel=RTOL
    )
    y, p = regression_data(rng, n=200)
    assert M.r2_score(y, p) == pytest.approx(sk.r2_score(y, p), rel=1e-10)
    assert M.r2_score(y, p, "variance_weighted_average") == pytest.approx(
        sk.r2_score(y, p, multioutput="variance_weighted"), rel=1e-10
    )
    assert M.root_mean_squared_error(y, p) == pytest.approx(
        np.sqrt(sk.mean_squared_error(y, p)), rel=RTOL
    )


# --------------------------------------------------------------------------
# In fit and evaluate: a frozen model predicts the same before and after every step, so
# the epoch's training metrics are those of predict's output over all the samples.

FIT_CASES = {  # loss, output activation, width, data, metrics by name -> references
    "binary": (
        "binary_crossentropy",
        "sigmoid",
        1,
        binary_data,
        {
            "precision": ref_precision,
            "recall": ref_recall,
            "auc": ref_auc,
            "root_mean_squared_error": ref_rmse,
        },
    ),
    "categorical": (
        "categorical_crossentropy",
        "softmax",
        4,
        class_data,
        {
            "top_k_categorical_accuracy": lambda y, p: ref_top_k(y, p, 5),
            "precision": ref_precision,
            "auc": ref_auc,
        },
    ),
    "regression": ("mse", None, 2, regression_data, {"r2_score": ref_r2}),
}


def frozen_model(loss, activation, width, metrics, backend):
    model = Sequential(
        [Dense(5, activation="tanh", input_dim=3), Dense(width, activation=activation)], name="m"
    )
    for layer in model.layers:
        layer.trainable = False
    model.compile(
        optimizer="sgd", loss=loss, metrics=metrics, backend=backend, dtype="float64", seed=4
    )
    return model


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
@pytest.mark.parametrize("case", list(FIT_CASES))
def test_fit_and_evaluate_accumulate_over_batches(case, backend, rng):
    loss, activation, width, data, references = FIT_CASES[case]
    y, _ = data(rng, n=47)  # batches of 8: the last one has 7 rows
    x = rng.standard_normal((47, 3))
    model = frozen_model(loss, activation, width, list(references), backend)
    history = model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    assert history.params["native_epochs"] == (backend == "llvm")
    p = model.predict(x)
    logs = model.evaluate(x, y, batch_size=5, return_dict=True)
    for name, reference in references.items():
        expected = reference(y, p)
        for value in (*history.history[name], logs[name]):
            assert value == pytest.approx(expected, rel=RTOL, abs=1e-15), name


def test_native_epoch_equals_step_by_step_with_stateful_metrics(rng):
    """Training (not frozen): the statistics summed natively equal those of each step."""
    from symgrad.callbacks import LambdaCallback

    y, _ = binary_data(rng, n=47)
    x = rng.standard_normal((47, 3))
    names = ["precision", "auc", M.AUC(curve="PR", name="pr"), "r2_score"]
    runs = []
    for callbacks in ([], [LambdaCallback(on_batch_end=lambda batch, logs: None)]):
        model = Sequential([Dense(4, activation="tanh", input_dim=3), Dense(1, "sigmoid")])
        model.compile("adam", "binary_crossentropy", metrics=names, backend="llvm", seed=2)
        runs.append(model.fit(x, y, epochs=3, batch_size=8, verbose=0, callbacks=callbacks))
    native, stepwise = runs
    assert native.params["native_epochs"] and not stepwise.params["native_epochs"]
    assert native.history == stepwise.history
    assert set(native.history) == {"loss", "precision", "auc", "pr", "r2_score"}


def test_metric_names_in_compile():
    model = Sequential([Dense(3, activation="softmax", input_dim=2)])
    names = [
        "precision",
        "recall",
        "auc",
        "top_k_categorical_accuracy",
        "sparse_top_k_categorical_accuracy",
        "f1_score",
        "root_mean_squared_error",
        "r2_score",
    ]
    for name in names:
        assert type(M.get(name)).__name__.lower().replace("_", "") == name.replace("_", "")
    model.compile(loss="categorical_crossentropy", metrics=["precision", "AUC"])
    with pytest.raises(ValueError, match=r"Unknown metric: 'presicion'. Known metrics: .*auc.*"):
        model.compile(loss="categorical_crossentropy", metrics=["presicion"])


def test_bad_arguments_are_refused_with_the_value():
    with pytest.raises(
        ValueError, match=r"num_thresholds: expected an integer > 1. Received: num_thresholds=1"
    ):
        M.AUC(num_thresholds=1)
    with pytest.raises(ValueError, match=r"Received: curve='XY'"):
        M.AUC(curve="XY")
    with pytest.raises(ValueError, match=r"Received: summation_method='mid'"):
        M.AUC(summation_method="mid")
    with pytest.raises(ValueError, match=r"Received: average='mean'"):
        M.F1Score(average="mean")
    with pytest.raises(ValueError, match=r"Received: k=0"):
        M.TopKCategoricalAccuracy(k=0)
    with pytest.raises(ValueError, match=r"Received: thresholds=nan"):
        M.Precision(thresholds=float("nan"))
    with pytest.raises(ValueError, match=r"class_id=3 names no column"):
        M.Precision(class_id=3)(np.eye(3), np.eye(3))
    with pytest.raises(ValueError, match=r"same shape. Received: y_true with shape \(2, 1\)"):
        M.recall([0, 1], [[0.1, 0.2]])
    with pytest.raises(ValueError, match=r"labels must be integers in \[0, 3\). Received: label=3"):
        M.sparse_top_k_categorical_accuracy([0, 3], np.eye(2, 3))


def test_the_native_epoch_sums_row_outputs(rng):
    """A (1, k) output is summed entry by entry (rows x value), also resumed from sums_start."""
    from symgrad import compiler
    from symgrad import expr as E

    n = E.batch()
    x, y = E.matrix("X", n, 3), E.matrix("Y", n, 1)
    outputs = {"loss": E.mean(y), "cols": E.scale(1 / n, E.col_sum(x))}
    epoch = {"x_input": "X", "y_input": "Y", "sums": ("loss", "cols"), "counter": None}
    fn = compiler.compile([x, y], outputs, backend="llvm", dtype="float64", epoch=epoch)
    xs, ys = rng.standard_normal((23, 3)), rng.standard_normal((23, 1))
    order = rng.permutation(23)
    whole = fn.epoch(xs, ys, batch_size=5, order=order)
    np.testing.assert_allclose(whole.sums["cols"], xs.sum(axis=0), rtol=RTOL)
    assert whole.sums["loss"] == pytest.approx(ys.sum(), rel=RTOL)
    first = fn.epoch(xs, ys, batch_size=5, order=order[:10])
    rest = fn.epoch(xs, ys, batch_size=5, order=order[10:], sums_start=first.sums)
    np.testing.assert_array_equal(rest.sums["cols"], whole.sums["cols"])


def test_a_per_class_result_shows_in_the_logs(rng, capsys):
    """F1Score(average=None) logs one value per class: the bar and evaluate print them all."""
    x, labels = rng.standard_normal((30, 3)), rng.integers(0, 3, 30)
    model = Sequential([Dense(3, activation="softmax", input_dim=3)])
    model.compile("sgd", "sparse_categorical_crossentropy", metrics=["f1_score"], seed=0)
    history = model.fit(x, labels, epochs=1, verbose=2)
    assert history.history["f1_score"][0].shape == (3,)
    loss, f1 = model.evaluate(x, labels, verbose=1)
    np.testing.assert_allclose(f1, ref_f1(np.eye(3)[labels], model.predict(x)), rtol=RTOL)
    printed = capsys.readouterr().out
    assert printed.count("f1_score: [") == 2
