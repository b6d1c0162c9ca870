"""Devices, distribution strategies and the precision policy.

The order matters (`shrewd_tf.training.objective` has the rest):

1. `set_precision_policy` before any layer is built (mixed_float16 on GPU,
   float32 on CPU by default: on CPUs float16 without XLA is ~38x slower);
2. `make_strategy` for the devices (MirroredStrategy over all GPUs on one
   host, MultiWorkerMirroredStrategy across hosts from TF_CONFIG);
3. build and `objective.compile_shrewd_model` inside `strategy.scope()`;
4. batch with `per_replica_batch_size * strategy.num_replicas_in_sync`.
"""

import functools

import keras
import tensorflow as tf

PRECISION_POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")


# === Devices and strategies ===


def configure_virtual_cpus(count):
    """Splits the physical CPU into `count` logical devices.

    Used to exercise MirroredStrategy without GPUs. Must run before
    TensorFlow initialises its devices.

    Raises:
        RuntimeError: the runtime is already initialised with another count.
    """
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * count
        )
    except RuntimeError:
        existing = len(tf.config.list_logical_devices("CPU"))
        if existing != count:
            raise RuntimeError(
                f"TensorFlow is already initialised with {existing} logical "
                f"CPUs; configure virtual CPUs before any TF op runs. "
                f"Received: count={count}"
            ) from None


def make_strategy(name="auto"):
    """Returns a tf.distribute strategy by name.

    Args:
        name: "auto" (MirroredStrategy when more than one GPU is visible,
            else the default strategy), "default", "mirrored" (all GPUs; the
            CPU when there are none), "multi_worker" (TF_CONFIG cluster),
            or "virtual_cpus:<n>" (MirroredStrategy over n logical CPUs).

    Raises:
        ValueError: an unknown name.
    """
    if name == "auto":
        # Listing devices initialises the runtime: only here, so that
        # "virtual_cpus:<n>" can still configure the CPU in a fresh process.
        if len(tf.config.list_logical_devices("GPU")) > 1:
            return tf.distribute.MirroredStrategy()
        return tf.distribute.get_strategy()
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return _mirrored_strategy(None)
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name.startswith("virtual_cpus:"):
        count = int(name.split(":", 1)[1])
        configure_virtual_cpus(count)
        return _mirrored_strategy(tuple(f"/cpu:{i}" for i in range(count)))
    raise ValueError(
        "Unknown strategy; expected auto, default, mirrored, multi_worker "
        f"or virtual_cpus:<n>. Received: strategy={name!r}"
    )


def is_chief(strategy):
    """Whether this process writes the run's files.

    Under MultiWorkerMirroredStrategy only the chief does (the "chief"
    task, or worker 0 of a cluster without one): every worker computes
    the same weights, and they all share one output_dir. Single-process
    strategies are their own chief.
    """
    return bool(getattr(strategy.extended, "should_checkpoint", True))


@functools.lru_cache(maxsize=None)
def _mirrored_strategy(devices):
    """One MirroredStrategy per device set and process.

    Two strategies over the same devices restart their collective instance
    keys, and TF's cached parameters of the first one's all-gathers then
    clash with the second's (a "Shape mismatch in the collective instance"
    error); reusing the strategy keeps the keys unique.
    """
    return tf.distribute.MirroredStrategy(
        list(devices) if devices is not None else None
    )


def set_precision_policy(name="auto"):
    """Sets Keras' global dtype policy; returns the policy name in force.

    "auto" picks mixed_float16 when a GPU is visible and float32 otherwise.
    """
    if name == "auto":
        gpus = tf.config.list_physical_devices("GPU")
        name = "mixed_float16" if gpus else "float32"
    if name not in PRECISION_POLICIES:
        raise ValueError(
            f"Unknown precision policy; expected auto or one of "
            f"{PRECISION_POLICIES}. Received: precision={name!r}"
        )
    keras.mixed_precision.set_global_policy(name)
    return name
