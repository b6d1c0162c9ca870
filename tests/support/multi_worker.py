"""One training worker of a localhost cluster, run as a process.

`python -m tests.support.multi_worker OUT --index I --ports P0,P1` sets
TF_CONFIG for worker I of workers on localhost:P0, localhost:P1, trains a
tiny model under `train.strategy=multi_worker` and saves its weights to
OUT/weights<I>.npz. Without --ports it trains in this one process under
`--strategy` instead. One intra-op thread per process: the test machines
have few cores.

For the kill/restart test: `--shared` makes every worker write to one
output_dir, OUT/run (as a real job's gs:// folder), `--epochs N` trains N
epochs, and `--exit-after-epoch E` makes this process die
(`os._exit(EXIT_CODE)`, no clean-up, like a killed pod) right after epoch E
(0-based) ends.
"""

import argparse
import json
import os
import socket

# The exit status of a worker that `--exit-after-epoch` killed.
EXIT_CODE = 17


def free_ports(count):
    """`count` ports that were free a moment ago."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("localhost", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def tiny_overrides(output_dir, strategy, epochs=1):
    return {
        "model.encoder": "cifar_resnet:8:4",
        "model.code_bits": 8,
        "train.epochs": epochs,
        "train.per_replica_batch_size": 16,
        "train.steps_per_epoch": 2,
        "train.eval_every": 0,
        "train.jit_compile": "false",
        "train.strategy": strategy,
        "train.output_dir": output_dir,
    }


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--ports", default="")
    parser.add_argument("--strategy", default="multi_worker")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--shared", action="store_true")
    parser.add_argument("--exit-after-epoch", type=int, default=-1)
    args = parser.parse_args(argv)
    if args.ports:
        workers = [f"localhost:{port}" for port in args.ports.split(",")]
        os.environ["TF_CONFIG"] = json.dumps({
            "cluster": {"worker": workers},
            "task": {"type": "worker", "index": args.index},
        })
    import numpy as np  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from shrewd_tf import config as config_lib  # pylint: disable=import-outside-toplevel
    from shrewd_tf.training import trainer  # pylint: disable=import-outside-toplevel
    from tests.support import sources  # pylint: disable=import-outside-toplevel

    output_dir = os.path.join(
        args.out, "run" if args.shared else f"run{args.index}"
    )
    cfg = config_lib.ExperimentConfig(name="multi_worker").with_overrides(
        tiny_overrides(output_dir, args.strategy, args.epochs)
    )
    callbacks = []
    if args.exit_after_epoch >= 0:
        callbacks.append(ExitAfterEpoch(args.exit_after_epoch))
    result = trainer.train(
        cfg, data=sources.make_data(train=128, test=32),
        extra_callbacks=callbacks, verbose=0,
    )
    np.savez(
        os.path.join(args.out, f"weights{args.index}.npz"),
        *result.model.get_weights(),
    )
    with open(os.path.join(args.out, f"metrics{args.index}.json"), "w") as f:
        json.dump({
            "replicas": result.metrics["replicas"],
            "epochs_run": len(result.history["loss"]),
            "loss": result.history["loss"],
        }, f)
    return 0


def ExitAfterEpoch(epoch):  # pylint: disable=invalid-name
    """A Keras callback that kills this process when `epoch` ends."""
    import keras  # pylint: disable=import-outside-toplevel

    class _ExitAfterEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, index, logs=None):
            if index == epoch:
                os._exit(EXIT_CODE)  # pylint: disable=protected-access

    return _ExitAfterEpoch()


if __name__ == "__main__":
    raise SystemExit(main())
