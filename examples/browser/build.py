"""Build the browser page: the digits model as WebAssembly, its data, weights and formulas.

Run from the repository root:

    python examples/browser/build.py [--out examples/browser/site]
    python -m http.server -d examples/browser/site 8000    # then open http://127.0.0.1:8000

Writes into the output folder: digits.wasm and digits.js (symgrad.emit, target="wasm"),
data.json (sklearn's 8x8 digits as integers 0..16 and their labels, in a seeded random
order whose last 360 rows are the test set), weights.json (the model's initial weights), formulas.json (the derived
gradient formulas as MathML, which browsers render natively) and the page itself
(index.html, page.js, worker.js, copied from this folder).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np

import symgrad

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "c_train"))
from digits_model import build_model  # noqa: E402  (the model of examples/c_train)

PAGE = ("index.html", "page.js", "worker.js")
TEST_ROWS = 360  # the last rows are the test set


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(HERE / "site"), help="output folder")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = build_model()
    for path in symgrad.emit(model, out / "digits.wasm", target="wasm"):
        print(f"wrote {path}")
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.target))  # writers mixed in both sets
    data = {
        "pixels": digits.data[order].astype(np.int64).ravel().tolist(),  # 0..16, 64 per image
        "labels": digits.target[order].tolist(),
        "testRows": TEST_ROWS,
    }
    weights = {w.path: v.ravel().tolist() for w, v in zip(model.weights, model.get_weights())}
    formulas = [  # the LaTeX a notebook shows, weights named by their Keras paths
        {"weight": path, "mathml": to_mathml(tex)}
        for path, tex in model.gradient_formulas().latex().items()
    ]
    for name, value in (
        ("data.json", data),
        ("weights.json", weights),
        ("formulas.json", formulas),
    ):
        (out / name).write_text(json.dumps(value), encoding="utf-8")
    for name in PAGE:
        shutil.copyfile(HERE / name, out / name)
    print(f"wrote {out}/data.json, weights.json, formulas.json and the page ({', '.join(PAGE)})")
    return 0


# --------------------------------------------------------------------------
# The LaTeX that SymPy prints for the formulas, as MathML (a small subset of TeX)

SYMBOLS = {
    "circ": "\u2218",
    "cdot": "\u22c5",
    "odot": "\u2299",
    "partial": "\u2202",
    "times": "\u00d7",
    "sigma": "\u03c3",
    "alpha": "\u03b1",
    "beta": "\u03b2",
    "epsilon": "\u03b5",
    "eta": "\u03b7",
    "lambda": "\u03bb",
    "mu": "\u03bc",
    "theta": "\u03b8",
    "tau": "\u03c4",
    "infty": "\u221e",
    "sum": "\u2211",
    "log": "log",
    "exp": "exp",
    "tanh": "tanh",
    "max": "max",
    "min": "min",
    "left": "",
    "right": "",
    ",": "\u2009",
    ";": " ",
    "quad": " ",
    " ": " ",
    "_": "_",
}
TOKEN = re.compile(r"\\[A-Za-z]+|\\.|[A-Za-z]+|[0-9.]+|\S")


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_mathml(tex: str) -> str:
    """``tex`` (fractions, sub/superscripts, \\left( \\right), \\operatorname) as MathML."""
    tokens = TOKEN.findall(tex)
    body, _ = _row(tokens, 0, closing=None)
    return f'<math display="block">{body}</math>'


def _row(tokens, i, closing):
    items = []
    while i < len(tokens) and tokens[i] != closing:
        node, i = _atom(tokens, i)
        while i < len(tokens) and tokens[i] in ("^", "_"):
            op = tokens[i]
            script, i = _atom(tokens, i + 1)
            node = f"<{'msup' if op == '^' else 'msub'}>{node}{script}</{'msup' if op == '^' else 'msub'}>"
        items.append(node)
    return "<mrow>" + "".join(items) + "</mrow>", i + 1


def _group(tokens, i):
    if tokens[i] == "{":
        return _row(tokens, i + 1, "}")
    return _atom(tokens, i)


def _atom(tokens, i):
    t = tokens[i]
    if t == "{":
        return _row(tokens, i + 1, "}")
    if t == r"\frac":
        top, i = _group(tokens, i + 1)
        bottom, i = _group(tokens, i)
        return f"<mfrac>{top}{bottom}</mfrac>", i
    if t in (r"\operatorname", r"\mathrm", r"\text"):
        j = tokens.index("}", i + 2)
        name = "".join(tokens[i + 2 : j]).replace("\\_", "_")
        return f'<mi mathvariant="normal">{_escape(name)}</mi>', j + 1
    if t in (r"\left", r"\right"):
        delim = tokens[i + 1].lstrip("\\") if i + 1 < len(tokens) else ""
        return (f"<mo>{_escape(delim)}</mo>" if delim != "." else ""), i + 2
    if t.startswith("\\"):
        name = t[1:]
        text = SYMBOLS.get(name, name)
        tag = (
            "mi"
            if name.isalpha() and len(text) > 1
            else "mo"
            if not name.isalpha() or name in ("circ", "cdot", "odot", "times", "sum")
            else "mi"
        )
        return f"<{tag}>{_escape(text)}</{tag}>", i + 1
    if t[0].isdigit():
        return f"<mn>{t}</mn>", i + 1
    if t.isalpha():
        return f"<mi>{t}</mi>", i + 1
    return f"<mo>{_escape(t)}</mo>", i + 1


if __name__ == "__main__":
    raise SystemExit(main())
