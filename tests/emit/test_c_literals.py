"""Numbers written into C headers read back as the same doubles; nan and infinities are refused."""

from __future__ import annotations

import math
import struct
import subprocess

import numpy as np
import pytest

from codegen.llvm.emit import c_compiler
from codegen.names import c_double


def sample_doubles() -> list[float]:
    rng = np.random.default_rng(7)
    bits = rng.integers(0, 2**63 - 1, size=200, dtype=np.int64)
    values = [v for v in bits.view(np.float64).tolist() if math.isfinite(v)]
    return values + [
        0.0,
        -0.0,
        1.0,
        3.0,
        1e-7,
        0.9,
        0.999,
        5e-324,
        2.2250738585072014e-308,
        1.7976931348623157e308,
    ]


def test_literals_read_back_bit_for_bit_in_python_and_c(tmp_path):
    values = sample_doubles()
    literals = [c_double(v, "value") for v in values]
    assert all(
        struct.pack("<d", float(t)) == struct.pack("<d", v) for t, v in zip(literals, values)
    )
    assert all(any(c in t for c in ".e") for t in literals)  # a double, never an int literal
    expected = ", ".join(
        f"0x{struct.unpack('<Q', struct.pack('<d', v))[0]:016x}ULL" for v in values
    )
    source = tmp_path / "literals.c"
    source.write_text(
        "#include <stdint.h>\n#include <string.h>\n"
        f"static const double values[] = {{{', '.join(literals)}}};\n"
        f"static const uint64_t bits[] = {{{expected}}};\n"
        "int main(void) {\n"
        "    for (unsigned i = 0; i < sizeof values / sizeof values[0]; ++i)\n"
        "        if (memcmp(&values[i], &bits[i], sizeof(double)) != 0) return 1;\n"
        "    return 0;\n}\n"
    )
    compiler = c_compiler()
    if compiler is None:
        pytest.skip("no C compiler on this machine")
    exe = tmp_path / "literals"
    subprocess.run([compiler, "-std=c99", "-o", str(exe), str(source)], check=True)
    assert subprocess.run([str(exe)]).returncode == 0


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_values_are_refused_by_name(value):
    with pytest.raises(
        ValueError, match=rf"hyperparameter momentum must be a finite number.*{value!r}"
    ):
        c_double(value, "hyperparameter momentum")
