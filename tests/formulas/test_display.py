"""Rich displays for Jupyter: models as HTML summaries with LaTeX formulas, gradient tables
and explanations as LaTeX / HTML, weight names in LaTeX (parsed, no screenshot)."""

from __future__ import annotations

import html
import pickle
from html.parser import HTMLParser

import sympy as sp

from symgrad import expr as E
from symgrad.formulas import Explanation, FormulaTable
from symgrad.layers import Dense, Input
from symgrad.models import Model, Sequential
from symgrad.nn.merge import Add


class Tables(HTMLParser):
    """Every table of an HTML text: its caption and rows of cell texts (entities decoded)."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tables: list[dict] = []
        self._cell: list[str] | None = None
        self._in_caption = False
        self.paragraphs: list[str] = []
        self._para: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append({"caption": "", "rows": []})
        elif tag == "tr":
            self.tables[-1]["rows"].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "caption":
            self._in_caption = True
        elif tag == "br" and self._cell is not None:
            self._cell.append("\n")
        elif tag == "p":
            self._para = []

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1]["rows"][-1].append("".join(self._cell))
            self._cell = None
        elif tag == "caption":
            self._in_caption = False
        elif tag == "p":
            self.paragraphs.append("".join(self._para))
            self._para = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        elif self._in_caption:
            self.tables[-1]["caption"] += data
        elif self._para is not None:
            self._para.append(data)


def mlp() -> Sequential:
    model = Sequential([Dense(4, activation="relu", input_dim=3), Dense(2, activation="softmax")])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", seed=0)
    return model


def test_weight_names_in_latex_read_as_names():
    n = E.batch()
    x, kernel, w1 = E.matrix("X", n, 3), E.matrix("dense_1_kernel", 3, 2), E.matrix("W1", 2, 2)
    product = E.matmul(E.matmul(x, kernel), E.transpose(w1))
    assert E.latex(product) == r"X \mathrm{dense\_1\_kernel} W_{1}^{T}"  # SymPy: dense_{1 kernel}
    assert sp.latex(product) == r"X dense_{1 kernel} W_{1}^{T}"  # SymPy's own printer as it was
    shown = E.latex(E.transpose(kernel), names={"dense_1_kernel": "dense_1/kernel"})
    assert shown == r"\mathrm{dense\_1/kernel}^{T}"
    assert E.latex(x, names={"X": "x#1_{a}"}) == r"\mathrm{x\#1\_\{a\}}"  # text is escaped


def test_a_bare_model_formula_in_jupyter_reads_weight_names_as_written():
    """One formula taken out of a model shows through SymPy's own LaTeX printer (its
    ``_repr_latex_``): the model's weights and slots still print as their names."""
    model = mlp()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", seed=0)
    formula = model.gradient_formulas()["dense/kernel"]
    shown = formula._repr_latex_()
    assert r"\mathrm{dense\_1/kernel}^{T}" in shown and "dense_{" not in shown
    assert shown[len("$\\displaystyle ") : -1] in model.gradient_formulas()._repr_latex_()
    assert sp.latex(model.layers[0].kernel.symbol) == r"\mathrm{dense/kernel}"
    assert pickle.loads(pickle.dumps(formula)) == formula  # the path is part of the symbol
    slots = [slot.symbol for slot in model.optimizer.slots.values()]
    assert len(slots) == 2 * len(model.weights)  # Adam: m and v of each weight
    for symbol in slots:
        assert sp.latex(symbol).startswith(r"\mathrm{") and "_{" not in sp.latex(symbol)
    # the printer's own names win over the symbol's path
    assert E.latex(formula, names={"dense_1_kernel": "K_2"}).count(r"\mathrm{K\_2}") == 1


def test_a_model_renders_as_an_html_summary_with_latex_formulas():
    model = mlp()
    parsed = Tables(model._repr_html_())
    (table,) = parsed.tables
    assert table["caption"] == 'Model: "sequential" (Sequential)'
    header, first, second = table["rows"]
    assert header == ["Layer (type)", "Output Shape", "Param #", "Computes"]
    assert first == [
        "dense (Dense)",
        "(None, 4)",
        "16",
        "$Z_{1} = \\mathrm{dense/bias} + X \\mathrm{dense/kernel}$\n"
        "$A_{1} = \\operatorname{relu}\\left(Z_{1}\\right)$",
    ]
    assert second[:3] == ["dense_1 (Dense)", "(None, 2)", "10"]
    assert second[3].split("\n")[1] == r"$P = \operatorname{softmax}\left(Z_{2}\right)$"
    assert parsed.paragraphs == [
        "Total params: 26 (104 bytes as float32) · Trainable params: 26 · Non-trainable params: 0"
    ]


def test_a_functional_model_lists_inbound_layers_and_escapes_text():
    x = Input(shape=(3,))
    h = Dense(3, activation="tanh", name="h")(x)
    out = Dense(2, name="out")(Add(name="skip")([x, h]))
    model = Model(x, out, name="res")
    table = Tables(model._repr_html_()).tables[0]
    assert table["caption"] == 'Model: "res" (Functional)'
    header, *rows = table["rows"]
    assert header == ["Layer (type)", "Output Shape", "Param #", "Connected to", "Computes"]
    by_label = {row[0]: row for row in rows}
    assert by_label["skip (Add)"][3] == "input_layer[0][0], h[0][0]"
    assert by_label["out (Dense)"][4].startswith(r"$P = \mathrm{out/bias} + ")


def test_text_in_the_html_is_escaped():
    model = Sequential([Dense(2, input_dim=2)], name="a<b>&c")
    text = model._repr_html_()
    assert "&lt;b&gt;&amp;c" in text and "<b>&c" not in text
    assert Tables(text).tables[0]["caption"] == 'Model: "a<b>&c" (Sequential)'


def test_gradient_formulas_are_a_dict_shown_as_latex_and_html():
    model = mlp()
    g = model.gradient_formulas()
    assert isinstance(g, FormulaTable) and isinstance(g, dict)
    assert str(g) == str(dict(g)) and repr(g) == repr(dict(g))  # plain text unchanged
    assert list(g) == ["dense/kernel", "dense/bias", "dense_1/kernel", "dense_1/bias"]
    latex = g._repr_latex_()
    assert latex.startswith(r"$$\begin{aligned} \frac{\partial L}{\partial \mathrm{dense/kernel}}")
    assert (
        r"\frac{\partial L}{\partial \mathrm{dense\_1/kernel}} &= \frac{1}{n} A_{1}^{T} "
        r"\left(P - Y\right)" in latex
    )
    assert latex.count(r" \\ ") == 3 and "dense_{" not in latex
    table = Tables(g._repr_html_()).tables[0]
    assert table["caption"] == "Gradients of sequential"
    assert [row[0] for row in table["rows"]] == ["name", *g]
    assert table["rows"][4][1] == (
        r"$\frac{\partial L}{\partial \mathrm{dense\_1/bias}} = \frac{1}{n} "
        r"\operatorname{colsum}\left(P - Y\right)$"
    )
    copy = pickle.loads(pickle.dumps(g))
    assert copy == g and copy._repr_latex_() == latex


def test_explain_is_the_same_text_and_renders_as_tables():
    model = mlp()
    e = model.explain()
    assert isinstance(e, Explanation) and isinstance(e, str)
    assert e.startswith("Forward definitions:\n  Z1 = dense_bias + X*dense_kernel\n")
    assert "\nGradients:\n  dL/ddense_kernel = " in e  # the text as before
    tables = Tables(e._repr_html_()).tables
    assert [t["caption"] for t in tables] == [
        "Forward definitions",
        "Reverse sweep",
        "Rewrites fired",
        "Gradients",
    ]
    forward, sweep, rewrites, gradients = (t["rows"][1:] for t in tables)
    assert [row[0] for row in forward] == ["Z1", "A1", "Z2", "P", "L"]
    assert len(sweep) == e.count("   rule ") and len(rewrites) == len(e.rewrites) > 0
    assert [row[0] for row in gradients] == [
        rf"$\frac{{\partial L}}{{\partial {html.unescape(t)}}}$"
        for t in (
            r"\mathrm{dense/kernel}",
            r"\mathrm{dense/bias}",
            r"\mathrm{dense\_1/kernel}",
            r"\mathrm{dense\_1/bias}",
        )
    ]
    assert sweep[0][2].startswith("matmul_vjp: ")
    latex = e._repr_latex_()
    assert latex.startswith(
        r"$$\begin{aligned} Z_{1} &= \mathrm{dense/bias} + X \mathrm{dense/kernel}"
    )
    assert "dense_{" not in latex and "dense_{" not in e._repr_html_()


def test_an_unbuilt_model_renders_what_it_knows():
    model = Sequential([Dense(4), Dense(2)])
    header, first, second = Tables(model._repr_html_()).tables[0]["rows"]
    assert first == ["dense (Dense)", "(None, 4)", "? (unbuilt)", ""]
    assert second[2] == "? (unbuilt)"
