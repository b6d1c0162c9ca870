"""Tests for the loss layers: the same values and gradients as the `Loss`
classes and the pure functions (eagerly and inside a functional model),
serialisation, `fit`, two replicas against one device, mixed precision."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from shrewd_tf.losses import layers as loss_layers
from shrewd_tf import losses
from shrewd_tf.training import distribution
from shrewd_tf.losses.layers import EmpiricalKLLayer
from shrewd_tf.losses.layers import SimilarityMatchingLayer
from tests.support import sources as helpers

_RNG = np.random.default_rng(11)
_CODES = _RNG.random((12, 8)).astype("float32")
_LABELS = _RNG.integers(0, 4, 12)
_EMBEDDINGS = _RNG.normal(size=(12, 5)).astype("float32")
_DISTANCES = helpers.CLASS_DISTANCES
# Keys of keras.losses.Loss.get_config() that stay out of the layer config.
_LOSS_BASE_KEYS = ("name", "reduction", "dtype")


@pytest.fixture
def float32_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")


def _sim_targets(kind):
    """(layer kwargs, targets, target distances) for labels or embeddings."""
    if kind == "labels":
        distances = _DISTANCES[_LABELS][:, _LABELS]
        return {"class_distances": _DISTANCES}, _LABELS, distances
    distances = helpers.numpy_target_distances(_EMBEDDINGS, "euclidean")
    return {"target_metric": "euclidean"}, _EMBEDDINGS, distances


def _kl_sample(seed, shape):
    """The first target sample a loss (or layer) seeded with `seed` draws."""
    return losses.EmpiricalKLLoss(seed=seed).sample_target(shape)


# === Same values as the Loss classes and the pure functions ===


@pytest.mark.parametrize("kind", ["labels", "embeddings"])
def test_similarity_layer_adds_the_loss_value_and_passes_codes(kind):
    kwargs, targets, distances = _sim_targets(kind)
    expected = losses.similarity_matching_loss(_CODES, distances, 0.2, 1.5)
    loss = losses.SimilarityMatchingLoss(gamma=0.2, rho=1.5, **kwargs)
    np.testing.assert_allclose(loss(targets, _CODES), expected, rtol=1e-6)
    for call_style in ("args", "list"):
        layer = SimilarityMatchingLayer(weight=0.5, gamma=0.2, rho=1.5, **kwargs)
        if call_style == "args":
            out = layer(_CODES, targets)
        else:
            out = layer([_CODES, targets])
        np.testing.assert_array_equal(out, _CODES)
        assert len(layer.losses) == 1
        assert layer.losses[0].dtype == "float32"
        np.testing.assert_allclose(layer.losses[0], 0.5 * expected, rtol=1e-6)


def test_kl_layer_adds_the_loss_value_of_the_same_seed():
    layer = EmpiricalKLLayer(weight=2.0, k=2, seed=5)
    out = layer(_CODES)
    np.testing.assert_array_equal(out, _CODES)
    loss = losses.EmpiricalKLLoss(k=2, seed=5)
    expected = losses.empirical_kl_loss(_CODES, _kl_sample(5, _CODES.shape), k=2)
    np.testing.assert_allclose(loss(_CODES, _CODES), expected, rtol=1e-6)
    np.testing.assert_allclose(layer.losses[0], 2.0 * expected, rtol=1e-6)
    # A second call draws a fresh sample, like the loss, and replaces the
    # added loss instead of accumulating.
    layer(_CODES)
    assert len(layer.losses) == 1
    np.testing.assert_allclose(
        layer.losses[0], 2.0 * loss(_CODES, _CODES), rtol=1e-6
    )
    # The loss's random state is the layer's (like keras.layers.Dropout's).
    assert any(v is layer.loss.seed_generator.state for v in layer.variables)


def _codes_gradient(value_fn):
    codes = tf.constant(_CODES)
    with tf.GradientTape() as tape:
        tape.watch(codes)
        value = value_fn(codes)
    return value, tape.gradient(value, codes)


def _functional(layer, with_targets):
    codes = keras.Input((8,))
    if with_targets:
        targets = keras.Input((), dtype="int32")
        return keras.Model([codes, targets], layer(codes, targets))
    return keras.Model(codes, layer(codes))


@pytest.mark.parametrize("in_model", [False, True])
def test_similarity_layer_gradients_match_the_loss(in_model):
    layer = SimilarityMatchingLayer(weight=3.0, class_distances=_DISTANCES)
    loss = losses.SimilarityMatchingLoss(class_distances=_DISTANCES)
    labels = tf.constant(_LABELS, tf.int32)
    if in_model:
        model = _functional(layer, with_targets=True)
        assert model.losses == []  # building it added nothing

        def through_layer(codes):
            model([codes, labels])
            (value,) = model.losses
            return value

    else:

        def through_layer(codes):
            layer(codes, labels)
            return layer.losses[0]

    value, gradient = _codes_gradient(through_layer)
    expected, expected_gradient = _codes_gradient(
        lambda codes: 3.0 * loss(labels, codes)
    )
    np.testing.assert_allclose(value, expected, rtol=1e-6)
    assert np.abs(gradient).max() > 0
    np.testing.assert_allclose(gradient, expected_gradient, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("in_model", [False, True])
def test_kl_layer_gradients_match_the_function(in_model):
    layer = EmpiricalKLLayer(weight=0.5, seed=9)
    target_sample = _kl_sample(9, _CODES.shape)
    if in_model:
        model = _functional(layer, with_targets=False)

        def through_layer(codes):
            model(codes)
            (value,) = model.losses
            return value

    else:

        def through_layer(codes):
            layer(codes)
            return layer.losses[0]

    value, gradient = _codes_gradient(through_layer)
    expected, expected_gradient = _codes_gradient(
        lambda codes: 0.5 * losses.empirical_kl_loss(codes, target_sample)
    )
    np.testing.assert_allclose(value, expected, rtol=1e-6)
    assert np.abs(gradient).max() > 0
    np.testing.assert_allclose(gradient, expected_gradient, rtol=1e-5, atol=1e-7)


def test_layer_argument_errors():
    with pytest.raises(ValueError, match="targets"):
        SimilarityMatchingLayer(class_distances=_DISTANCES)(_CODES)
    with pytest.raises(ValueError, match="weight"):
        EmpiricalKLLayer(weight=-1.0)
    with pytest.raises(ValueError, match="autocast"):
        EmpiricalKLLayer(autocast=True)
    # The Loss classes validate their own options.
    with pytest.raises(ValueError, match="gamma"):
        SimilarityMatchingLayer(gamma=0.0)
    with pytest.raises(ValueError, match="alpha"):
        EmpiricalKLLayer(alpha=-1.0)
    # The layer always takes the batch mean: no `reduction`.
    with pytest.raises(ValueError, match="reduction"):
        EmpiricalKLLayer(reduction="sum")


# === Serialisation ===


_LAYER_CASES = [
    (
        SimilarityMatchingLayer,
        dict(
            weight=0.25,
            gamma=0.3,
            rho=1.0,
            class_distances=_DISTANCES.tolist(),
            target_metric="euclidean",
            cross_replica=True,
        ),
    ),
    (
        EmpiricalKLLayer,
        dict(
            weight=0.01,
            k=2,
            target="uniform",
            alpha=0.2,
            noise_std=0.1,
            min_distance=1e-4,
            seed=4,
            cross_replica=True,
        ),
    ),
]


@pytest.mark.parametrize("layer_class, kwargs", _LAYER_CASES)
def test_config_round_trip_carries_every_loss_option(layer_class, kwargs):
    layer = layer_class(name="objective", **kwargs)
    config = layer.get_config()
    assert config["name"] == "objective"
    assert config["weight"] == kwargs["weight"]
    # Every option of the Loss class, also ones added after the layers were
    # written, appears in the layer's config.
    loss_config = layer.loss.get_config()
    for key, value in loss_config.items():
        if key not in _LOSS_BASE_KEYS:
            assert config[key] == value, key
    assert set(config) >= set(loss_config) - set(_LOSS_BASE_KEYS)
    restored = layer_class.from_config(config)
    assert restored.get_config() == config
    assert type(restored.loss) is layer_class.loss_class
    assert restored.loss.get_config() == loss_config
    serialized = keras.saving.serialize_keras_object(layer)
    assert serialized["registered_name"] == f"shrewd_tf>{layer_class.__name__}"
    again = keras.saving.deserialize_keras_object(serialized)
    assert again.get_config() == config


def _two_layer_model(seed=3):
    """Dense codes -> similarity layer -> KL layer, no other output."""
    images = keras.Input((5,), name="x")
    labels = keras.Input((), dtype="int32", name="labels")
    codes = keras.layers.Dense(
        8,
        activation="sigmoid",
        kernel_initializer=keras.initializers.GlorotUniform(seed=0),
        name="dense",
    )(images)
    codes = SimilarityMatchingLayer(class_distances=_DISTANCES, name="sim")(
        codes, labels
    )
    codes = EmpiricalKLLayer(weight=0.01, seed=seed, name="kl")(codes)
    return keras.Model([images, labels], codes)


_X = _RNG.normal(size=(12, 5)).astype("float32")


def test_saved_model_file_round_trip_gives_the_same_loss(tmp_path):
    model = _two_layer_model()
    path = tmp_path / "model.keras"
    # Saved before any call: both models' KL samplers start at seed 3.
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.get_layer("kl"), EmpiricalKLLayer)
    assert loaded.get_layer("sim").get_config() == model.get_layer(
        "sim"
    ).get_config()
    codes = model([_X, _LABELS])
    np.testing.assert_array_equal(loaded([_X, _LABELS]), codes)
    assert len(loaded.losses) == 2
    np.testing.assert_allclose(loaded.losses, model.losses, rtol=1e-6)
    # ... and the losses are those of the classes on the codes.
    sim = losses.SimilarityMatchingLoss(class_distances=_DISTANCES)
    kl = losses.EmpiricalKLLoss(seed=3)
    np.testing.assert_allclose(
        loaded.losses,
        [sim(_LABELS, codes), 0.01 * kl(codes, codes)],
        rtol=1e-6,
    )


# === fit ===


def test_fit_with_loss_none_optimises_the_layer_losses(float32_policy):
    """The logged loss of a 1-step epoch is the sum of the layers' losses
    at the weights before the step (checked on a twin model), and it
    decreases over the steps."""
    twin = _two_layer_model()
    twin([_X, _LABELS])
    before = float(np.sum(twin.losses))
    model = _two_layer_model()
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss=None)
    data = tf.data.Dataset.from_tensor_slices(((_X, _LABELS),)).batch(12)
    history = model.fit(data.repeat(), epochs=15, steps_per_epoch=1, verbose=0)
    logged = history.history["loss"]
    assert np.all(np.isfinite(logged))
    assert logged[0] == pytest.approx(before, rel=1e-5)
    assert logged[-1] < logged[0]


def test_fit_with_a_cross_entropy_adds_the_layer_losses(float32_policy):
    def build():
        model = _two_layer_model()
        logits = keras.layers.Dense(
            4,
            kernel_initializer=keras.initializers.GlorotUniform(seed=1),
            name="logits",
        )(model.output)
        return keras.Model(model.inputs, {"code": model.output, "logits": logits})

    twin = build()
    outputs = twin([_X, _LABELS])
    cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    before = float(cross_entropy(_LABELS, outputs["logits"]) + np.sum(twin.losses))
    model = build()
    model.compile(optimizer="adam", loss={"logits": cross_entropy})
    data = tf.data.Dataset.from_tensor_slices(
        ((_X, _LABELS), {"logits": _LABELS})
    ).batch(12)
    history = model.fit(data.repeat(), epochs=3, steps_per_epoch=1, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert history.history["loss"][0] == pytest.approx(before, rel=1e-5)


# === One device vs MirroredStrategy over two virtual CPUs ===

_XM = _RNG.normal(size=(16, 5)).astype("float32")
_LABELS_M = _RNG.integers(0, 4, 16)
_W = _RNG.normal(size=(5, 6)).astype("float32") * 0.5


def _fit_sim_layer(strategy, cross_replica, steps):
    """A linear code model with the similarity layer, a few SGD steps."""
    with strategy.scope():
        images = keras.Input((5,))
        labels = keras.Input((), dtype="int32")
        codes = keras.layers.Dense(6, use_bias=False)(images)
        codes = SimilarityMatchingLayer(
            class_distances=_DISTANCES, cross_replica=cross_replica
        )(codes, labels)
        model = keras.Model([images, labels], codes)
        model.set_weights([_W])
        model.compile(optimizer=keras.optimizers.SGD(0.5), loss=None)
    data = tf.data.Dataset.from_tensor_slices(((_XM, _LABELS_M),))
    data = data.batch(16).repeat()
    history = model.fit(data, epochs=1, steps_per_epoch=steps, verbose=0)
    return model.get_weights()[0], history.history["loss"][0]


def test_cross_replica_layer_mirrored_equals_one_device():
    """Keras scales add_loss values by 1/replicas, so with cross_replica=True
    two replicas take exactly the steps one device takes on the batch."""
    single, single_loss = _fit_sim_layer(tf.distribute.get_strategy(), False, 3)
    mirrored = distribution.make_strategy("virtual_cpus:2")
    gathered, gathered_loss = _fit_sim_layer(mirrored, True, 3)
    np.testing.assert_allclose(gathered, single, rtol=1e-4, atol=1e-5)
    assert gathered_loss == pytest.approx(single_loss, rel=1e-4)
    assert not np.allclose(gathered, _W)  # it did train


def test_per_replica_layer_mirrored_optimises_mean_of_replica_losses():
    """cross_replica=False: each replica's pairs are its own 8 examples;
    one step is plain SGD on the MEAN of the two halves' losses, like the
    Loss class (not their sum: Keras scaled the added losses by 1/2)."""
    mirrored = distribution.make_strategy("virtual_cpus:2")
    weights, first_loss = _fit_sim_layer(mirrored, False, steps=1)
    kernel = tf.Variable(_W)
    targets = _DISTANCES[_LABELS_M][:, _LABELS_M]
    halves = (slice(0, 8), slice(8, 16))
    with tf.GradientTape() as tape:
        codes = _XM @ kernel
        mean_of_halves = tf.reduce_mean(
            [
                losses.similarity_matching_loss(codes[h], targets[h][:, h])
                for h in halves
            ]
        )
    expected = _W - 0.5 * tape.gradient(mean_of_halves, kernel).numpy()
    assert first_loss == pytest.approx(float(mean_of_halves), rel=1e-4)
    np.testing.assert_allclose(weights, expected, rtol=1e-4, atol=1e-5)


def test_kl_layer_runs_under_mirrored_strategy():
    """Each replica draws its own target sample from the tracked seed."""
    mirrored = distribution.make_strategy("virtual_cpus:2")
    with mirrored.scope():
        images = keras.Input((5,))
        codes = keras.layers.Dense(6, activation="sigmoid")(images)
        codes = EmpiricalKLLayer(seed=2, cross_replica=True)(codes)
        model = keras.Model(images, codes)
        model.compile(optimizer="sgd", loss=None)
    data = tf.data.Dataset.from_tensor_slices((_XM,)).batch(16).repeat()
    history = model.fit(data, epochs=2, steps_per_epoch=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))


# === Mixed precision ===

# Unit roundoff of the codes' dtype: the relative error of rounding a
# float32 code into it.
_ROUNDOFF = {"mixed_float16": 2.0**-11, "mixed_bfloat16": 2.0**-8}


@pytest.mark.parametrize("policy", sorted(_ROUNDOFF))
def test_layers_compute_float32_and_keep_the_codes_dtype(policy, float32_policy):
    keras.mixed_precision.set_global_policy("float32")
    sim32 = SimilarityMatchingLayer(class_distances=_DISTANCES)
    kl32 = EmpiricalKLLayer(seed=6)
    sim32(_CODES, _LABELS)
    kl32(_CODES)
    keras.mixed_precision.set_global_policy(policy)
    sim = SimilarityMatchingLayer(class_distances=_DISTANCES)
    kl = EmpiricalKLLayer(seed=6)
    assert sim.dtype_policy.name == policy
    compute_dtype = keras.mixed_precision.global_policy().compute_dtype
    codes = tf.cast(_CODES, compute_dtype)
    out = kl(sim(codes, _LABELS))
    assert out.dtype == compute_dtype
    np.testing.assert_array_equal(out, codes)
    # Float32 codes are not autocast either.
    assert sim(_CODES, _LABELS).dtype == "float32"
    sim(codes, _LABELS)
    assert sim.losses[0].dtype == "float32" and kl.losses[0].dtype == "float32"
    # Exactly the float32 maths on the rounded codes...
    rounded = tf.cast(codes, "float32")
    distances = _DISTANCES[_LABELS][:, _LABELS]
    np.testing.assert_allclose(
        sim.losses[0],
        losses.similarity_matching_loss(rounded, distances),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        kl.losses[0],
        losses.empirical_kl_loss(rounded, _kl_sample(6, _CODES.shape)),
        rtol=1e-6,
    )
    # ... so the only difference from float32 codes is the input rounding
    # (relative u per code, u the unit roundoff). L_sim is a ratio of sums
    # of |z - z'| and moves by a few u relative; the KL terms are logs of
    # distances (~0.3 between neighbours of 12 random 8-bit codes) each
    # moved by <= sqrt(d) u |z| / distance, ~10 u in absolute value.
    u = _ROUNDOFF[policy]
    np.testing.assert_allclose(sim.losses[0], sim32.losses[0], rtol=10 * u)
    np.testing.assert_allclose(kl.losses[0], kl32.losses[0], atol=20 * u)


def test_the_losses_package_exposes_the_layers():
    from shrewd_tf import losses

    assert losses.SimilarityMatchingLayer is SimilarityMatchingLayer
    assert losses.EmpiricalKLLayer is EmpiricalKLLayer
    assert loss_layers.SimilarityMatchingLayer is SimilarityMatchingLayer
    assert keras.saving.get_registered_object(
        "shrewd_tf>EmpiricalKLLayer"
    ) is EmpiricalKLLayer
