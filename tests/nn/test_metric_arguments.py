"""Keras's further confusion-metric arguments against NumPy references written from their
definitions: AUC's ``multi_label``, ``label_weights`` and ``from_logits``; ``top_k`` and
``class_id`` of Precision and Recall.

Keras's definitions: ``from_logits`` applies the sigmoid to the predictions first;
``top_k`` keeps each row's k largest predictions (ties: the lower column first) and sets
the others to -1e10, and the default threshold becomes -1e10 (the kept entries are the
predicted positives); ``class_id`` then takes one column. ``multi_label=True`` computes
one area per column and returns their mean, weighted by ``label_weights`` when given;
with ``multi_label=False`` ``label_weights`` weighs every entry of a column in the counts.
"""

from __future__ import annotations

import numpy as np
import pytest

from symgrad import metrics as M
from symgrad.layers import Dense
from symgrad.models import Sequential
from tests.nn.test_metrics import RTOL, auc_thresholds, binary_data, class_data, uneven

NEG_INF = -1e10


# --------------------------------------------------------------------------
# References: loops over samples, columns and thresholds


def counts(y, p, t, w):
    """Weighted tp, fp, fn, tn of the entries of y, p at threshold t (w: entry weights)."""
    tp = fp = fn = tn = 0.0
    for yi, pi, wi in zip(np.ravel(y), np.ravel(p), np.ravel(w)):
        positive, predicted = yi != 0, pi > t
        tp += wi * (positive and predicted)
        fp += wi * (not positive and predicted)
        fn += wi * (positive and not predicted)
        tn += wi * (not positive and not predicted)
    return tp, fp, fn, tn


def safe(a, b):
    return a / b if b else 0.0


def roc_area(y, p, w, num=200):
    """Trapezoids of the recall over the false-positive rate, threshold by threshold."""
    points = []
    for t in auc_thresholds(num):
        tp, fp, fn, tn = counts(y, p, t, w)
        points.append((safe(fp, fp + tn), safe(tp, tp + fn)))
    return sum((x0 - x1) * (h0 + h1) / 2 for (x0, h0), (x1, h1) in zip(points, points[1:]))


def ref_auc(y, p, num=200, multi_label=False, label_weights=None, from_logits=False):
    if from_logits:
        p = 1 / (1 + np.exp(-p))
    cols = y.shape[1]
    if multi_label:
        areas = [roc_area(y[:, c], p[:, c], np.ones(len(y)), num) for c in range(cols)]
        weights = np.ones(cols) if label_weights is None else np.asarray(label_weights)
        return sum(a * w for a, w in zip(areas, weights)) / sum(weights)
    weights = np.ones(cols) if label_weights is None else np.asarray(label_weights)
    return roc_area(y, p, np.tile(weights, (len(y), 1)), num)


def top_k_filtered(p, k):
    out = np.full(p.shape, NEG_INF)
    for i, row in enumerate(p):
        for j, value in enumerate(row):
            rank = sum(row[a] > value for a in range(len(row))) + sum(
                row[a] == value for a in range(j)
            )
            if rank < k:
                out[i, j] = value
    return out


def ref_precision_recall(y, p, top_k=None, class_id=None, threshold=None):
    if top_k is not None:
        p = top_k_filtered(p, top_k)
    if class_id is not None:
        y, p = y[:, class_id], p[:, class_id]
    t = threshold if threshold is not None else (0.5 if top_k is None else NEG_INF)
    tp, fp, fn, _ = counts(y, p, t, np.ones(np.size(y)))
    return safe(tp, tp + fp), safe(tp, tp + fn)


def tied_class_data(rng, n=53, k=4):
    """class_data with some rows rounded to ties, so top_k's tie rule matters."""
    y, p = class_data(rng, n, k)
    p[::3] = np.round(p[::3], 1)
    return y, p


def logit_data(rng, n=53, cols=2):
    y, p = binary_data(rng, n, cols)
    return y, 4.0 * (p - 0.5) + rng.standard_normal((n, cols))


CASES = {  # name -> (metric, data, reference)
    "auc-multi-label": (
        lambda: M.AUC(multi_label=True),
        lambda r: binary_data(r, cols=3),
        lambda y, p: ref_auc(y, p, multi_label=True),
    ),
    "auc-multi-label-weighted": (
        lambda: M.AUC(50, multi_label=True, label_weights=[0.5, 2.0, 1.0]),
        lambda r: binary_data(r, cols=3),
        lambda y, p: ref_auc(y, p, 50, multi_label=True, label_weights=[0.5, 2.0, 1.0]),
    ),
    "auc-label-weights": (
        lambda: M.AUC(50, label_weights=[3.0, 0.25, 1.0]),
        lambda r: binary_data(r, cols=3),
        lambda y, p: ref_auc(y, p, 50, label_weights=[3.0, 0.25, 1.0]),
    ),
    "auc-from-logits": (
        lambda: M.AUC(from_logits=True),
        logit_data,
        lambda y, p: ref_auc(y, p, from_logits=True),
    ),
    "auc-from-logits-multi-label": (
        lambda: M.AUC(40, from_logits=True, multi_label=True, num_labels=2),
        logit_data,
        lambda y, p: ref_auc(y, p, 40, multi_label=True, from_logits=True),
    ),
    "precision-top-1": (
        lambda: M.Precision(top_k=1),
        tied_class_data,
        lambda y, p: ref_precision_recall(y, p, top_k=1)[0],
    ),
    "recall-top-2": (
        lambda: M.Recall(top_k=2),
        tied_class_data,
        lambda y, p: ref_precision_recall(y, p, top_k=2)[1],
    ),
    "precision-top-2-class-1": (
        lambda: M.Precision(top_k=2, class_id=1),
        tied_class_data,
        lambda y, p: ref_precision_recall(y, p, top_k=2, class_id=1)[0],
    ),
    "recall-top-3-class-2-at-0.2": (
        lambda: M.Recall(thresholds=0.2, top_k=3, class_id=2),
        tied_class_data,
        lambda y, p: ref_precision_recall(y, p, top_k=3, class_id=2, threshold=0.2)[1],
    ),
    "recall-class-3": (
        lambda: M.Recall(class_id=3),
        tied_class_data,
        lambda y, p: ref_precision_recall(y, p, class_id=3)[1],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_accumulated_over_uneven_batches_equals_the_reference(case, rng):
    make, data, reference = CASES[case]
    y, p = data(rng)
    expected = reference(y, p)
    np.testing.assert_allclose(make()(y, p), expected, rtol=RTOL, atol=1e-15)
    metric = make()
    for rows in uneven(len(y)):
        metric.update_state(y[rows], p[rows])
    np.testing.assert_allclose(metric.result(), expected, rtol=RTOL, atol=1e-15)


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
@pytest.mark.parametrize("case", list(CASES))
def test_the_compiled_formulas_count_as_numpy_does(case, backend, rng):
    """``batch_means`` compiled (the step's statistics) equals ``batch_sums / rows`` on data
    with tied predictions, where top_k's tie rule decides."""
    from symgrad import compiler
    from symgrad import expr as E

    make, data, _ = CASES[case]
    y, p = data(rng)
    metric = make()
    n = E.batch()
    targets, predictions = E.matrix("Y", n, y.shape[1]), E.matrix("P", n, p.shape[1])
    means = metric.batch_means(targets, predictions)
    fn = compiler.compile([targets, predictions], means, backend=backend, dtype="float64")
    sums = metric.batch_sums(y, p)
    for key, value in zip(means, fn(y, p)):
        np.testing.assert_allclose(np.ravel(value) * len(y), sums[key], rtol=RTOL, atol=1e-12)


def test_the_arguments_change_the_values(rng):
    """Each argument is used: without it the value is another."""
    y, p = binary_data(rng, cols=3)
    assert M.AUC(multi_label=True)(y, p) != pytest.approx(M.AUC()(y, p), rel=1e-9)
    weighted = M.AUC(multi_label=True, label_weights=[0.5, 2.0, 1.0])(y, p)
    assert weighted != pytest.approx(M.AUC(multi_label=True)(y, p), rel=1e-9)
    assert M.AUC(label_weights=[3, 0.25, 1])(y, p) != pytest.approx(M.AUC()(y, p), rel=1e-9)
    y, z = logit_data(rng)
    assert M.AUC(from_logits=True)(y, z) != pytest.approx(M.AUC()(y, z), rel=1e-9)
    y, p = tied_class_data(rng)
    assert M.Precision(top_k=2)(y, p) != pytest.approx(M.Precision()(y, p), rel=1e-9)
    assert M.Precision(top_k=1)(y, p) != pytest.approx(M.Precision(top_k=2)(y, p), rel=1e-9)


def test_against_scikit_learn(rng):
    sk = pytest.importorskip("sklearn.metrics")
    y, p = binary_data(rng, n=300, cols=3)
    grid = (np.floor(p * 10) + 0.5) / 10  # between the thresholds: the exact curve
    macro = M.auc(y, grid, num_thresholds=11, multi_label=True)
    assert macro == pytest.approx(sk.roc_auc_score(y, grid, average="macro"), rel=RTOL)
    support = y.sum(axis=0)  # scikit-learn's "weighted": by each label's positives
    weighted = M.auc(y, grid, num_thresholds=11, multi_label=True, label_weights=support)
    assert weighted == pytest.approx(sk.roc_auc_score(y, grid, average="weighted"), rel=RTOL)
    logits = np.log(grid) - np.log1p(-grid)
    from_logits = M.auc(y, logits, num_thresholds=11, multi_label=True, from_logits=True)
    assert from_logits == pytest.approx(macro, rel=RTOL)
    y, p = class_data(rng, n=300)
    labels, best = np.argmax(y, axis=1), np.argmax(p, axis=1)
    assert M.precision(y, p, top_k=1) == pytest.approx(sk.accuracy_score(labels, best), rel=RTOL)
    per_class = sk.precision_score(labels, best, average=None)
    recalls = sk.recall_score(labels, best, average=None)
    for c in range(4):
        assert M.precision(y, p, top_k=1, class_id=c) == pytest.approx(per_class[c], rel=RTOL)
        assert M.recall(y, p, top_k=1, class_id=c) == pytest.approx(recalls[c], rel=RTOL)


# --------------------------------------------------------------------------
# In fit and evaluate, on both backends (LLVM: the statistics summed in the native epoch)

FIT_CASES = {  # output activation, width, data, metrics -> references
    "multi-label": (
        "sigmoid",
        3,
        lambda r, n: binary_data(r, n, cols=3),
        [
            (M.AUC(50, multi_label=True, name="ml"), lambda y, p: ref_auc(y, p, 50, True)),
            (
                M.AUC(50, multi_label=True, label_weights=[1, 3, 0.5], name="mlw"),
                lambda y, p: ref_auc(y, p, 50, True, [1, 3, 0.5]),
            ),
            (
                M.AUC(50, label_weights=[2, 1, 0.5], name="lw"),
                lambda y, p: ref_auc(y, p, 50, label_weights=[2, 1, 0.5]),
            ),
        ],
    ),
    "logits": (
        None,
        2,
        lambda r, n: (binary_data(r, n, cols=2)[0], None),
        [(M.AUC(30, from_logits=True), lambda y, p: ref_auc(y, p, 30, from_logits=True))],
    ),
    "top-k": (
        "softmax",
        4,
        lambda r, n: class_data(r, n),
        [
            (M.Precision(top_k=2), lambda y, p: ref_precision_recall(y, p, 2)[0]),
            (
                M.Recall(top_k=2, class_id=1, name="r1"),
                lambda y, p: ref_precision_recall(y, p, 2, 1)[1],
            ),
            (
                M.Precision(thresholds=[0.2, 0.4], top_k=1, name="p1"),
                lambda y, p: [ref_precision_recall(y, p, 1, None, t)[0] for t in (0.2, 0.4)],
            ),
        ],
    ),
}


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
@pytest.mark.parametrize("case", list(FIT_CASES))
def test_fit_and_evaluate_equal_the_reference(case, backend, rng):
    activation, width, data, metrics = FIT_CASES[case]
    y, _ = data(rng, 47)  # batches of 8: the last one has 7 rows
    x = rng.standard_normal((47, 3))
    model = Sequential(
        [Dense(5, activation="tanh", input_dim=3), Dense(width, activation=activation)]
    )
    for layer in model.layers:
        layer.trainable = False  # the same predictions before and after every step
    model.compile(
        optimizer="sgd",
        loss="binary_crossentropy" if activation == "sigmoid" else "mse",
        metrics=[m for m, _ in metrics],
        backend=backend,
        dtype="float64",
        seed=4,
    )
    history = model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    assert history.params["native_epochs"] == (backend == "llvm")
    p = model.predict(x)
    logs = model.evaluate(x, y, batch_size=5, return_dict=True, verbose=0)
    for metric, reference in metrics:
        expected = reference(y, p)
        for value in (*history.history[metric.name], logs[metric.name]):
            np.testing.assert_allclose(value, expected, rtol=RTOL, atol=1e-15)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"Received: top_k=0"):
        M.Precision(top_k=0)
    with pytest.raises(
        ValueError, match=r"multi_label must be True or False. Received: multi_label='yes'"
    ):
        M.AUC(multi_label="yes")
    with pytest.raises(
        ValueError, match=r"label_weights must be .* Received: label_weights=\[1, -1\]"
    ):
        M.AUC(label_weights=[1, -1])
    with pytest.raises(ValueError, match=r"label_weights has 2 weights for num_labels=3"):
        M.AUC(num_labels=3, label_weights=[1, 2])
    with pytest.raises(
        ValueError, match=r"label_weights has 2 weights for a prediction of 3 column"
    ):
        M.AUC(label_weights=[1, 2])(np.eye(3), np.eye(3))
    with pytest.raises(ValueError, match=r"num_labels=2, but the prediction has 3 column"):
        M.AUC(num_labels=2, multi_label=True)(np.eye(3), np.eye(3))


# --------------------------------------------------------------------------
# AUC's evenly spaced thresholds in the compiled step: one formula of the column number


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
@pytest.mark.parametrize("count", [4, 50, 200, 257])
def test_the_compiled_threshold_row_is_kerass_thresholds(count, backend):
    """Within one unit in the last place (the formula multiplies by 1/(T-1))."""
    from symgrad import compiler
    from symgrad import expr as E
    from symgrad.nn.metrics import _threshold_row

    metric = M.AUC(num_thresholds=count)
    p = E.matrix("P", E.batch(), 1)
    row = E.broadcast_rows(_threshold_row(metric.thresholds), E.batch())
    fn = compiler.compile([p], {"row": E.add(row, E.broadcast_cols(p, count))}, backend=backend)
    (got,) = np.atleast_1d(fn(np.zeros((1, 1))))
    expected = np.array([-1e-7] + [(i + 1) / (count - 1) for i in range(count - 2)] + [1 + 1e-7])
    np.testing.assert_array_max_ulp(np.ravel(got), expected, maxulp=1)
    assert np.array_equal(metric.thresholds, expected)  # NumPy counts at Keras's own


def test_the_threshold_row_grows_with_log_t_not_t():
    """T constants would be T nodes (each a loop of its own in the generated code)."""
    import sympy as sp

    from symgrad.nn.metrics import _threshold_row

    sizes = {}
    for count in (200, 1000):
        row = _threshold_row(M.AUC(num_thresholds=count).thresholds)
        nodes = {node for node in sp.preorder_traversal(row) if isinstance(node, sp.MatrixExpr)}
        sizes[count] = len(nodes)  # distinct: each is computed once
    assert sizes[1000] <= sizes[200] + 10 < 60
    given = _threshold_row(M.AUC(thresholds=[0.2, 0.4, 0.6]).thresholds)  # not evenly spaced
    assert given.shape == (1, 5)
