"""One training worker of a localhost cluster, run as a process.

`python -m tests.support.multi_worker OUT --index I --ports P0,P1` sets
TF_CONFIG for worker I of workers on localhost:P0, localhost:P1, trains a
tiny model under `train.strategy=multi_worker` and saves its weights to
OUT/weights<I>.npz. Without --ports it trains in this one process under
`--strategy` instead. One intra-op thread per process: the test machines
have few cores.
"""

import argparse
import json
import os
import socket


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


def tiny_overrides(output_dir, strategy):
    return {
        "model.encoder": "cifar_resnet:8:4",
        "model.code_bits": 8,
        "train.epochs": 1,
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

    cfg = config_lib.ExperimentConfig(name="multi_worker").with_overrides(
        tiny_overrides(
            os.path.join(args.out, f"run{args.index}"), args.strategy
        )
    )
    result = trainer.train(
        cfg, data=sources.make_data(train=128, test=32), verbose=0
    )
    np.savez(
        os.path.join(args.out, f"weights{args.index}.npz"),
        *result.model.get_weights(),
    )
    with open(os.path.join(args.out, f"metrics{args.index}.json"), "w") as f:
        json.dump({"replicas": result.metrics["replicas"]}, f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
