"""Configs, copies and whole-model files: get_config / from_config, to_json, clone_model,
pickle and copy.deepcopy, save / load_model of functional models."""

from __future__ import annotations

import copy
import importlib
import inspect
import json
import pickle
import pkgutil

import numpy as np
import pytest
import sympy as sp

import symgrad.nn
from symgrad import expr as E
from symgrad.compiler import BACKENDS
from symgrad.core import scalar
from symgrad.layers import Activation, Dense, Input
from symgrad.models import (
    Model,
    Sequential,
    clone_model,
    load_model,
    model_from_config,
    model_from_json,
)
from symgrad.nn import initializers, regularizers
from symgrad.nn.layers import Layer
from symgrad.nn.merge import Merge
from tests.nn.test_functional import (
    GRAPHS,
    compile_two,
    data,
    multi_data,
    nested_two_inputs,
    two_in_two_out,
)
from tests.nn.test_functional_weights import with_sequential

# --------------------------------------------------------------------------
# Every layer class, found by introspection

EXAMPLE_ARGUMENTS = {
    "units": 3,
    "activation": "tanh",
    "shape": (4,),
    "rate": 0.25,
    "filters": 2,
    "kernel_size": 3,
    "pool_size": 2,
    "input_dim": 10,
    "output_dim": 3,
    "target_shape": (2, 2),
}
"""A value for each required constructor argument, by parameter name: a new layer with a
required argument not listed here fails the test below, naming it."""


def layer_classes() -> list[type]:
    for module in pkgutil.walk_packages(symgrad.nn.__path__, "symgrad.nn."):
        importlib.import_module(module.name)
    found, todo = [], [Layer]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        private = cls.__name__.startswith("_")  # a base of public layers (_Normalization)
        if cls.__module__.startswith("symgrad.") and not private and cls not in found:
            found.append(cls)
    return sorted(found, key=lambda c: c.__name__)


def example(cls):
    arguments = {}
    for p in inspect.signature(cls.__init__).parameters.values():
        if p.name == "self" or p.default is not inspect.Parameter.empty:
            continue
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        assert p.name in EXAMPLE_ARGUMENTS, (
            f"{cls.__name__} takes a required argument {p.name!r}: add an example value to "
            "EXAMPLE_ARGUMENTS"
        )
        arguments[p.name] = EXAMPLE_ARGUMENTS[p.name]
    return cls(**arguments)


def called(layer):
    """The layer's output expression on a (None, 4) input (two of them for a merge), or
    None when it takes other inputs."""
    x = Input(shape=(4,), name="x")
    inputs = [x, Dense(4, name="other")(x)] if isinstance(layer, Merge) else x
    try:
        return str(layer(inputs).expr)
    except NotImplementedError:
        assert type(layer).__subclasses__(), f"{type(layer).__name__} is abstract but no base"
        return None
    except ValueError:
        return None  # e.g. images only


def test_every_layer_class_round_trips_its_config():
    compared = []
    for cls in layer_classes():
        layer = example(cls)
        config = layer.get_config()
        text = json.dumps(config)  # JSON data, nothing else
        again = cls.from_config(json.loads(text))
        assert type(again) is cls
        assert again.get_config() == config, cls.__name__
        formula = called(layer)
        if formula is not None:
            assert called(again) == formula, cls.__name__
            compared.append(cls.__name__)
    assert {"Dense", "Activation", "Add", "Concatenate", "Maximum"} <= set(compared)


def test_layer_configs_keep_every_argument():
    x = sp.Symbol("x")
    layer = Dense(
        5,
        activation=x / (1 + sp.Abs(x)),
        use_bias=False,
        kernel_initializer=initializers.RandomNormal(stddev=0.3, seed=4),
        kernel_regularizer=regularizers.L1L2(0.1, 0.2),
        input_shape=(3,),
        name="soft",
    )
    layer.trainable = False
    config = layer.get_config()
    assert config["activation"]["config"]["text"] == "x/(Abs(x) + 1)"
    assert config["kernel_initializer"] == {
        "module": "symgrad.initializers",
        "class_name": "RandomNormal",
        "config": {"mean": 0.0, "stddev": 0.3, "seed": 4},
    }
    assert config["input_shape"] == [3] and config["trainable"] is False
    again = Dense.from_config(json.loads(json.dumps(config)))
    assert again.get_config() == config
    assert again.activation_fn == layer.activation_fn and not again.trainable
    again.build(3)
    np.testing.assert_array_equal(
        again.kernel_initializer((3, 5)), layer.kernel_initializer((3, 5))
    )
    assert again.kernel_regularizer == regularizers.L1L2(0.1, 0.2)


class Holder(Layer):
    """A user's layer whose argument has no JSON form."""

    def __init__(self, thing, name=None):
        super().__init__(name)
        self.thing = thing


def test_an_argument_without_a_config_is_named():
    with pytest.raises(
        TypeError, match=r"Holder\(thing=...\): no config for a value of type object"
    ):
        Holder(object()).get_config()


def test_a_formula_in_a_config_is_decoded_not_evaluated(tmp_path):
    config = Activation(sp.Symbol("x") ** 2).get_config()
    graph = config["activation"]["config"]["graph"]
    graph["nodes"][-1][1] = "os:system"  # a class outside SymPy and symgrad's scalars
    with pytest.raises(ValueError, match=r"class 'os:system' is not in"):
        Activation.from_config(config)
    # a file of an older symgrad kept formulas as text: it is refused, never evaluated
    marker = tmp_path / "ran"
    old = {
        "class_name": "Sequential",
        "name": "old",
        "input_dim": 2,
        "layers": [
            {
                "class_name": "Activation",
                "config": {"name": "a", "activation": f"__import__('os').mkdir('{marker}')"},
            }
        ],
    }
    np.savez(tmp_path / "old.npz", __config__=np.array(json.dumps(old)))
    with pytest.raises(ValueError, match=r"unknown activation"):
        load_model(tmp_path / "old.npz")
    assert not marker.exists()


# --------------------------------------------------------------------------
# Model configs, JSON, clones


def sequential():
    return Sequential(
        [Dense(6, activation="relu", input_dim=4), Dense(3, activation="softmax")], name="stack"
    )


ALL_GRAPHS = {
    "sequential": sequential,
    **GRAPHS,
    "two_in_two_out": two_in_two_out,
    "nested_two_inputs": nested_two_inputs,
    "with_sequential": lambda: with_sequential()[0],
}


def as_list(predictions) -> list[np.ndarray]:
    return predictions if isinstance(predictions, list) else [predictions]


def weights_like(model, rng):
    return [rng.standard_normal(w.shape) for w in model.weights]


@pytest.mark.parametrize("graph", list(ALL_GRAPHS))
def test_model_configs_round_trip_through_json(graph, rng):
    model = ALL_GRAPHS[graph]()
    if not model.built:
        model.build(input_dim=4)
    config = model.get_config()
    again = model_from_json(model.to_json())
    assert again.get_config() == config == model_from_config(config).get_config()
    assert [w.path for w in again.weights] == [w.path for w in model.weights]
    assert all(a is not b for a, b in zip(again.weights, model.weights))
    arrays = weights_like(model, rng)
    model.set_weights(arrays)
    again.set_weights(arrays)
    x = {t.name: rng.standard_normal((5, t.dim)) for t in getattr(model, "inputs", [])}
    x = x or rng.standard_normal((5, 4))
    for a, b in zip(as_list(model.predict(x)), as_list(again.predict(x)), strict=True):
        np.testing.assert_array_equal(a, b)


def test_clone_model_has_new_weights_of_the_same_graph(rng):
    model = GRAPHS["nested"]()
    clone = clone_model(model)
    assert clone.get_config() == model.get_config()
    assert [layer.name for layer in clone.layers] == [layer.name for layer in model.layers]
    assert not {id(w) for w in clone.weights} & {id(w) for w in model.weights}
    model.get_layer("block").trainable = False
    assert clone_model(model).get_layer("block").get_layer("inner_dense").trainable is False


def test_unknown_classes_in_a_config_are_named():
    config = sequential().get_config()
    config["layers"][0]["class_name"] = "Dense3D"
    with pytest.raises(ValueError, match=r"Unknown layer class 'Dense3D' in a config"):
        model_from_config(config)

    class Dense3D(Dense):  # a user's layer: passed by name
        pass

    model = model_from_config(config, custom_objects={"Dense3D": Dense3D})
    assert type(model.layers[0]) is Dense3D
    with pytest.raises(ValueError, match=r"Unknown model class in a config: 'Graph'"):
        model_from_config({"class_name": "Graph"})


# --------------------------------------------------------------------------
# pickle and copy.deepcopy of compiled models


def trained(graph, backend):
    model = ALL_GRAPHS[graph]()
    model.compile(
        optimizer="adam",
        loss="categorical_crossentropy",
        metrics=["accuracy"],
        backend=backend,
        dtype="float64",
        seed=5,
    )
    return model


def same_state(a, b):
    for x, y in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(x, y)
    assert a.optimizer.iterations == b.optimizer.iterations
    slots_a = {v.path: v.value for v in a.optimizer.variables}
    slots_b = {v.path: v.value for v in b.optimizer.variables}
    assert slots_a.keys() == slots_b.keys()
    for k in slots_a:
        np.testing.assert_array_equal(slots_a[k], slots_b[k])


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("graph", ["sequential", "nested"])
@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
def test_a_compiled_model_copies_and_trains_on_bit_for_bit(graph, backend, how, rng):
    model = trained(graph, backend)
    x, y = data(rng, n=24)
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    if how == "pickle":
        blob = pickle.dumps(model)
        assert b"codegen" not in blob and b"CompiledFunction" not in blob
        other = pickle.loads(blob)
    else:
        other = copy.deepcopy(model)
    assert other is not model and other.compiled and other.backend == backend
    same_state(model, other)
    np.testing.assert_array_equal(other(x), model(x))
    # the same shuffles, slots and steps from here on
    for m in (model, other):
        m.fit(x, y, epochs=2, batch_size=8, verbose=0)
    same_state(model, other)
    assert other.history.history == model.history.history
    other.get_weights()  # independent copies: training one leaves the other
    other.fit(x, y, epochs=1, verbose=0)
    assert not np.array_equal(other.get_weights()[0], model.get_weights()[0])


def test_pickle_of_uncompiled_and_unbuilt_models(rng):
    lazy = Sequential([Dense(3), Dense(2)], name="lazy")
    again = pickle.loads(pickle.dumps(lazy))
    assert not again.built and not again.compiled and again.get_config() == lazy.get_config()
    graph = GRAPHS["shared"]()
    copied = copy.deepcopy(graph)
    x, _ = data(rng)
    np.testing.assert_array_equal(copied.predict(x), graph.predict(x))


def test_pickle_keeps_per_output_compile_arguments(rng):
    model = compile_two(two_in_two_out(), metrics={"cls": ["accuracy"]})
    x, y = multi_data(rng)
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    other = pickle.loads(pickle.dumps(model))
    assert other.get_config() == model.get_config()
    assert other.get_config()["compile"]["loss"] == {
        "cls": "sparse_categorical_crossentropy",
        "reg": "mse",
    }
    assert other.evaluate(x, y, return_dict=True) == model.evaluate(x, y, return_dict=True)


# --------------------------------------------------------------------------
# save / load_model of functional models


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_a_functional_model_saves_and_loads_whole(backend, rng, tmp_path):
    model = compile_two(two_in_two_out(), backend, metrics={"cls": ["accuracy"]}, optimizer="adam")
    x, y = multi_data(rng)
    model.fit(x, y, epochs=2, batch_size=4, verbose=0)
    model.save(tmp_path / "two.npz")
    loaded = load_model(tmp_path / "two.npz")
    assert isinstance(loaded, Model) and loaded.name == "two" and loaded.backend == backend
    same_state(model, loaded)
    assert loaded.evaluate(x, y, return_dict=True) == model.evaluate(x, y, return_dict=True)
    for m in (model, loaded):
        m.fit(x, y, epochs=1, batch_size=4, shuffle=False, verbose=0)
    same_state(model, loaded)
    bare = load_model(tmp_path / "two.npz", compile=False)
    assert not bare.compiled
    for a, b in zip(bare.predict(x), loaded.predict(x)):
        assert a.shape == b.shape


def test_a_saved_custom_activation_loads_without_eval(tmp_path, rng):
    x = sp.Symbol("x")
    inputs = Input(shape=(3,), name="x")
    h = Dense(4, activation=x * scalar.sigmoid(x) + sp.log(1 + x**2), name="h")(inputs)
    model = Model(inputs, Dense(2, name="out")(h), name="custom")
    model.compile(optimizer="sgd", loss="mse", dtype="float64", seed=1)
    model.save(tmp_path / "c.npz")
    loaded = load_model(tmp_path / "c.npz")
    data_x = rng.standard_normal((6, 3))
    np.testing.assert_array_equal(loaded.predict(data_x), model.predict(data_x))
    assert loaded.get_layer("h").activation_fn == model.get_layer("h").activation_fn


# --------------------------------------------------------------------------
# Metric objects in compile settings


class HitRate(symgrad.nn.metrics.Metric):
    """A user's metric class: the fraction of entries above ``level``."""

    def __init__(self, level: float = 0.5, name: str | None = None):
        self.level = level
        super().__init__(name or "hit_rate")

    def values(self, y_true, y_pred):
        return np.mean(y_pred > self.level, axis=-1)


def metric_objects():
    from symgrad.metrics import AUC, Precision, Recall

    return [
        "accuracy",
        Precision(thresholds=0.3),
        Recall(thresholds=[0.2, 0.7], name="recall_at"),
        AUC(num_thresholds=50, curve="PR"),
    ]


def binary_model(backend: str, metrics) -> Sequential:
    model = Sequential([Dense(5, activation="tanh", input_dim=3), Dense(1, activation="sigmoid")])
    model.compile(
        optimizer="adam", loss="binary_crossentropy", metrics=metrics, backend=backend, seed=0
    )
    return model


def binary_data(rng=None):
    rng = np.random.default_rng(7)  # fixed: the defaults' values differ on these data
    x = rng.standard_normal((64, 3))
    return x, (x[:, 0] + 0.5 * rng.standard_normal(64) > 0).astype(float)


def with_weights_of(model: Model, original: Model) -> Model:
    model.set_weights(original.get_weights())
    return model


ROUND_TRIPS = {
    "config": lambda m, tmp: with_weights_of(_compiled_as(model_from_config(m.get_config()), m), m),
    "json": lambda m, tmp: with_weights_of(_compiled_as(model_from_json(m.to_json()), m), m),
    "clone_model": lambda m, tmp: with_weights_of(_compiled_as(clone_model(m), m), m),
    "save": lambda m, tmp: (m.save(tmp / "m.npz"), load_model(tmp / "m.npz"))[1],
    "pickle": lambda m, tmp: pickle.loads(pickle.dumps(m)),
    "deepcopy": lambda m, tmp: copy.deepcopy(m),
}


def _compiled_as(model: Model, original: Model) -> Model:
    model.compile_from_config(json.loads(json.dumps(original.get_compile_config())))
    return model


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("how", list(ROUND_TRIPS))
def test_metric_objects_keep_their_arguments_through_every_copy(how, backend, rng, tmp_path):
    x, y = binary_data(rng)
    model = binary_model(backend, metric_objects())
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    expected = model.evaluate(x, y, return_dict=True, verbose=0)
    other = ROUND_TRIPS[how](model, tmp_path)
    assert other.get_compile_config()["metrics"] == model.get_compile_config()["metrics"]
    got = other.evaluate(x, y, return_dict=True, verbose=0)
    assert got.keys() == expected.keys() == {"loss", "accuracy", "precision", "recall_at", "auc"}
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key])
    # the arguments matter here: the defaults give other values on this data
    defaults = binary_model(backend, ["accuracy", "precision", "recall", "auc"])
    plain = with_weights_of(defaults, model).evaluate(x, y, return_dict=True, verbose=0)
    for key, default_key in [("precision", "precision"), ("auc", "auc")]:
        assert plain[default_key] != expected[key]
    assert np.shape(expected["recall_at"]) == (2,)


def test_the_compile_config_writes_metric_objects_as_class_and_arguments():
    model = binary_model("numpy", metric_objects())
    assert model.get_compile_config()["metrics"] == [
        "accuracy",
        {
            "class_name": "Precision",
            "config": {"thresholds": 0.3, "top_k": None, "class_id": None, "name": "precision"},
        },
        {
            "class_name": "Recall",
            "config": {
                "thresholds": [0.2, 0.7],
                "top_k": None,
                "class_id": None,
                "name": "recall_at",
            },
        },
        {
            "class_name": "AUC",
            "config": {
                "num_thresholds": 50,
                "curve": "PR",
                "summation_method": "interpolation",
                "name": "auc",
                "thresholds": None,
                "multi_label": False,
                "num_labels": None,
                "label_weights": None,
                "from_logits": False,
            },
        },
    ]


def test_a_users_metric_class_copies_and_loads_with_custom_objects(rng, tmp_path):
    x, y = binary_data(rng)
    model = binary_model("numpy", [HitRate(level=0.3)])
    expected = model.evaluate(x, y, return_dict=True, verbose=0)
    default = with_weights_of(binary_model("numpy", [HitRate()]), model)
    assert default.evaluate(x, y, return_dict=True, verbose=0)["hit_rate"] != expected["hit_rate"]
    for other in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
        assert other.evaluate(x, y, return_dict=True, verbose=0) == expected
    model.save(tmp_path / "m.npz")
    loaded = load_model(tmp_path / "m.npz", custom_objects={"HitRate": HitRate})
    assert loaded.evaluate(x, y, return_dict=True, verbose=0) == expected
    with pytest.raises(ValueError, match=r"Unknown metric class 'HitRate'.*custom_objects"):
        load_model(tmp_path / "m.npz")
    assert load_model(tmp_path / "m.npz", compile=False).compiled is False


class ScaledError(symgrad.nn.metrics.Metric):
    """A user's metric taking a function, which has no config of its own."""

    def __init__(self, fn=np.abs, name: str | None = None):
        self.fn = fn
        super().__init__(name or "scaled_error")

    def values(self, y_true, y_pred):
        return np.mean(self.fn(y_true - y_pred), axis=-1)


def test_a_metric_argument_without_json_form_is_named_not_changed(rng, tmp_path):
    """A function given to a user's metric cannot be written as data: every copy says so,
    naming the argument, instead of restoring it as something else (np.abs read back as
    a formula dict once made the copy fail only when it first evaluated)."""
    model = binary_model("numpy", [ScaledError()])
    message = r"ScaledError\(fn=\.\.\.\): a metric's config holds numbers.*ufunc"
    for copy_of in (
        lambda m: pickle.loads(pickle.dumps(m)),
        copy.deepcopy,
        lambda m: m.save(tmp_path / "m.npz"),
        lambda m: m.get_compile_config(),
    ):
        with pytest.raises(symgrad.nn.config.ConfigError, match=message):
            copy_of(model)
    assert not (tmp_path / "m.npz").exists()


def test_a_metric_config_that_does_not_fit_is_named():
    from symgrad.nn.metrics import deserialize

    with pytest.raises(ValueError, match=r"The config of a AUC does not fit its constructor"):
        deserialize({"class_name": "AUC", "config": {"levels": 3}})
    with pytest.raises(ValueError, match=r"Unknown metric class 'os.system'"):
        deserialize({"class_name": "os.system", "config": {}})
    with pytest.raises(ValueError, match=r"Invalid curve.*curve='XY'"):
        deserialize({"class_name": "AUC", "config": {"curve": "XY"}})


@pytest.mark.parametrize("how", list(ROUND_TRIPS))
def test_compile_threads_are_kept_through_every_copy(how, rng, tmp_path):
    """model.compile(threads=3) reaches the compiled LLVM functions (their ``threads``),
    and every copy that compiles again does so with 3."""
    x, y = binary_data(rng)
    model = Sequential([Dense(5, activation="tanh", input_dim=3), Dense(1, activation="sigmoid")])
    model.compile(optimizer="adam", loss="binary_crossentropy", backend="llvm", seed=0, threads=3)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert model.get_compile_config()["threads"] == 3
    other = ROUND_TRIPS[how](model, tmp_path)
    assert other.get_compile_config()["threads"] == 3
    assert other.compiled_step.native.threads == model.compiled_step.native.threads == 3
    np.testing.assert_array_equal(other.predict(x, verbose=0), model.predict(x, verbose=0))


def test_compile_without_threads_keeps_the_config_as_before(monkeypatch):
    monkeypatch.setenv("SYMGRAD_NUM_THREADS", "2")
    model = binary_model("llvm", ["accuracy"])
    assert "threads" not in model.get_compile_config()
    assert model.compiled_step.native.threads == 2  # the environment's, as symgrad.compile's


@pytest.mark.parametrize("threads", [0, -1, 2.0, "2", True])
def test_compile_refuses_a_bad_thread_count_as_symgrad_compile_does(threads):
    n = E.batch()
    X = E.matrix("X", n, 2)
    with pytest.raises(ValueError) as expected:
        symgrad.compile([X], {"s": E.mean(X)}, backend="llvm", threads=threads, cache=False)
    model = binary_model("numpy", ["accuracy"])
    weights = model.get_weights()
    with pytest.raises(ValueError) as got:
        model.compile(optimizer="sgd", loss="mse", threads=threads)
    assert str(got.value) == str(expected.value)
    assert f"received: threads={threads!r}" in str(got.value)
    assert model.loss.name == "binary_crossentropy"  # the model is left as it was
    for a, want in zip(model.get_weights(), weights, strict=True):
        np.testing.assert_array_equal(a, want)
