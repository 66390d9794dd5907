"""History.plot: the curves of fit as matplotlib axes and an image file; a clear error without
matplotlib; examples/digits.py --plot."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from examples import digits
from symgrad.callbacks import History

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")


def recorded() -> History:
    h = History()
    for epoch, (loss, acc) in enumerate([(1.5, 0.5), (0.7, 0.8), (0.4, 0.9)]):
        h.on_epoch_end(epoch, {"loss": loss, "accuracy": acc, "val_loss": loss + 0.1})
    return h


def test_each_curve_is_a_panel_with_its_validation_curve(tmp_path):
    path = tmp_path / "curves.png"
    axes = recorded().plot(path=path)
    assert [ax.get_title() for ax in axes] == ["loss", "accuracy"]
    loss, val_loss = axes[0].lines
    np.testing.assert_array_equal(loss.get_xdata(), [1, 2, 3])
    np.testing.assert_array_equal(loss.get_ydata(), [1.5, 0.7, 0.4])
    np.testing.assert_array_equal(val_loss.get_ydata(), [1.5 + 0.1, 0.7 + 0.1, 0.4 + 0.1])
    assert [line.get_label() for line in axes[1].lines] == ["accuracy"]  # no val_accuracy
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob("*.tmp*"))  # written atomically: nothing left beside it
    svg = tmp_path / "loss.svg"
    recorded().plot(["loss"], path=svg)
    assert svg.read_text().lstrip().startswith("<?xml")


def test_unknown_curves_are_refused_with_the_recorded_ones():
    with pytest.raises(ValueError, match=r"no such curve 'acc'\. Recorded: loss, accuracy"):
        recorded().plot(["acc"])
    with pytest.raises(ValueError, match="fit ran no epoch"):
        History().plot()


def test_without_matplotlib_the_error_says_how_to_install_it(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib fails
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r"History.plot needs matplotlib.*symgrad\[examples\]"):
        recorded().plot()
    assert digits.save_curve(recorded(), str(tmp_path / "c.png")) is False
    err = capsys.readouterr().err
    assert "matplotlib is not installed, so no loss curve was written" in err
    assert not (tmp_path / "c.png").exists()


def test_digits_plot_flag_writes_the_curves(tmp_path, capsys):
    path = tmp_path / "digits_loss.png"
    digits.main(["--epochs", "1", "--verbose", "0", "--plot", str(path)])  # one epoch: below 97%
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert f"loss curve saved to {path}" in capsys.readouterr().out
