"""`shrewd pipeline run`: the TFX-style chain, from images to a served index.

    ExampleGen -> Semantics -> Trainer -> Evaluator -> Exporter -> IndexBuilder

Each stage is a function with declared inputs and outputs (see
`pipeline.stages`), writes under `runs/<name>/<stage>/` with a manifest,
and is skipped when its configuration, its inputs, the shrewd-tf version
and the source of the code it runs are unchanged. The Beam stages call
each job's typed `run(<Job>Options(...))`:

* example_gen: `pipeline.make_tfrecords` (Beam) -> `tfrecords/`.
* semantics: class distances (`pipeline.label_distances`, Beam) for
  "wup" / "lcs" / "bert", or caption embeddings (`pipeline.embed_captions`,
  Beam) for "captions" -> `class_distances.npy` or `tfrecords/`.
* trainer: one `shrewd train` run per configuration (loss set) -> a run
  directory each (model.keras, preprocessing.json, metrics).
* evaluator: metrics of every configuration on the test split and
  `report.md` with plots (`shrewd_tf.evaluation.report`).
* exporter: the first configuration as a TF-Serving SavedModel plus
  `models.config` (`shrewd_tf.export.saved_model`, `export.tf_serving`).
* index_builder: the database split bulk-encoded with the exported model
  (`pipeline.build_index`, Beam) into ScaNN and binary Hamming indexes.

Beam stages get `pipeline.beam_options`, so the same config runs on
Dataflow/Flink/Spark by changing that list.
"""

import logging
import os

import numpy as np

from pipeline import pipeline_config
from pipeline.stages import Stage
from pipeline.stages import StageCache
from pipeline.stages import StageResult
from shrewd_tf import contract

log = logging.getLogger(__name__)

DEFAULT_CONFIG = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "configs", "fashion_mnist.yaml",
)
EMBEDDING_SEMANTICS = "captions"


# === Stages ===


def example_gen(context):
    """Source images -> TFRecords (Beam)."""
    from pipeline import make_tfrecords

    cfg = context.config
    image_size = cfg.get("image_size")
    result = make_tfrecords.run(make_tfrecords.MakeTFRecordsOptions(
        source=cfg["source"],
        output_dir=os.path.join(context.directory, "tfrecords"),
        data_dir=cfg.get("data_dir") or None,
        image_size=tuple(image_size) if image_size else None,
        records_per_shard=cfg["records_per_shard"],
        limit=cfg.get("limit") or None,
        beam_args=tuple(cfg["beam_options"]),
    ))
    return StageResult(
        outputs={"tfrecord_dir": result.output_dir,
                 "dead_letter_files": list(result.dead_letter_files)},
        metrics={"records": result.splits, "dead_letters": result.dead_letters},
    )


def semantics(context):
    """Class distances (wup/lcs/bert) or caption embeddings (captions)."""
    cfg = context.config
    tfrecord_dir = context.inputs["example_gen"].outputs["tfrecord_dir"]
    beam_args = tuple(cfg["beam_options"])
    text_encoder = cfg.get("text_encoder") or None
    if cfg["kind"] == EMBEDDING_SEMANTICS:
        from pipeline import embed_captions

        result = embed_captions.run(embed_captions.EmbedCaptionsOptions(
            input_dir=tfrecord_dir,
            output_dir=os.path.join(context.directory, "tfrecords"),
            text_encoder=text_encoder,
            beam_args=beam_args,
        ))
        return StageResult(
            outputs={"tfrecord_dir": result.output_dir,
                     "class_distances": None},
            metrics={"records": result.splits,
                     "dead_letters": result.dead_letters,
                     "embedding_dim": result.embedding_dim},
        )
    from pipeline import label_distances

    result = label_distances.run(label_distances.LabelDistancesOptions(
        kind=cfg["kind"],
        output=os.path.join(context.directory, "class_distances"),
        tfrecord_dir=tfrecord_dir,
        hierarchy_file=cfg.get("hierarchy_file") or None,
        class_ids_file=cfg.get("class_names_file") or None,
        text_encoder=text_encoder,
        beam_args=beam_args,
    ))
    matrix = np.load(result.matrix_path)
    return StageResult(
        outputs={"tfrecord_dir": tfrecord_dir,
                 "class_distances": result.matrix_path},
        metrics={"num_classes": int(result.num_classes),
                 "mean_distance": float(matrix[np.triu_indices(len(matrix), 1)].mean())
                 if len(matrix) > 1 else 0.0},
    )


def _experiment_for(experiment, configuration, semantics_outputs, run_dir):
    """The ExperimentConfig of one configuration, reading the TFRecords."""
    overrides = {
        "name": f"{experiment.name} {configuration}",
        "data.dataset": "tfrecords",
        "data.data_dir": semantics_outputs["tfrecord_dir"],
        "loss.losses": configuration,
        "train.output_dir": run_dir,
    }
    if semantics_outputs.get("class_distances"):
        overrides["data.class_distances_file"] = semantics_outputs["class_distances"]
    return experiment.with_overrides(overrides)


def trainer(context):
    """Trains every configuration (`shrewd train` on the TFRecords)."""
    from shrewd_tf import config as config_lib
    from shrewd_tf.training import trainer as trainer_lib

    experiment = config_lib.ExperimentConfig.from_dict(context.config["experiment"])
    runs, metrics = {}, {}
    for configuration in context.config["configurations"]:
        run_dir = os.path.join(context.directory, _slug(configuration))
        cfg = _experiment_for(
            experiment, configuration, context.inputs["semantics"].outputs, run_dir
        )
        print(f"   -- training {configuration} -> {run_dir}", flush=True)
        result = trainer_lib.train(cfg)
        runs[configuration] = run_dir
        metrics[configuration] = _floats(result.metrics)
    return StageResult(outputs={"runs": runs}, metrics=metrics)


def evaluator(context):
    """Metrics of every trained configuration and report.md with plots."""
    from shrewd_tf.evaluation import evaluate as evaluation
    from shrewd_tf.evaluation import report

    runs = context.inputs["trainer"].outputs["runs"]
    k = context.config["k"]
    outputs, rows = {}, {}
    for configuration, run_dir in runs.items():
        evaluated = evaluation.evaluate_run_outputs(run_dir, k=k)
        rows[configuration] = _floats(evaluated.metrics)
        outputs[configuration] = report.RunOutputs(
            codes=evaluated.codes,
            labels=evaluated.labels,
            similarity=evaluated.similarity,
            metrics=evaluated.metrics,
            images=evaluated.images,
            label_names=evaluated.label_names,
        )
    path = report.write_report(
        context.directory, outputs,
        title=f"SHREWD evaluation: {context.config['name']}",
        notes=[
            "Protocol: the test split is both queries and database; each "
            "query is left out of its own database. Float codes are ranked "
            "by Manhattan distance, binarised codes "
            f"(code > {contract.BIT_THRESHOLD:g}) by Hamming "
            f"distance, ties in expectation. k = {k}.",
        ],
    )
    evaluation.write_metrics(rows, context.directory)
    return StageResult(outputs={"report": path}, metrics=rows)


def exporter(context):
    """The first configuration as a TF-Serving SavedModel."""
    from shrewd_tf.export import saved_model as export
    from shrewd_tf.export import tf_serving

    runs = context.inputs["trainer"].outputs["runs"]
    configuration = context.config["configurations"][0]
    export_root = os.path.join(context.directory, "exports")
    name = context.config["model_name"]
    path = export.export_saved_model(runs[configuration], export_root, name, version=1)
    command = tf_serving.write_model_server_config(
        export_root, [name],
        os.path.join(export_root, contract.MODELS_CONFIG_FILE),
    )
    return StageResult(
        outputs={"export_root": export_root, "saved_model": path,
                 "model_name": name, "configuration": configuration,
                 "model_server_command": command},
    )


def index_builder(context):
    """The database split encoded with the export, indexed (Beam)."""
    from pipeline import build_index
    from shrewd_tf.data import image_files
    from shrewd_tf.retrieval import builder as retrieval_builder

    cfg = context.config
    tfrecord_dir = context.inputs["semantics"].outputs["tfrecord_dir"]
    # The database images as files, for the web page (--image-root).
    image_root = os.path.join(context.directory, "images")
    image_files.write_image_files(tfrecord_dir, cfg["database_split"], image_root)
    result = build_index.run(build_index.BuildIndexOptions(
        tfrecord_dir=tfrecord_dir,
        saved_model=context.inputs["exporter"].outputs["saved_model"],
        output_dir=context.directory,
        split=cfg["database_split"],
        kinds=tuple(cfg["index_kinds"]),
        binary_method=cfg["binary_method"],
        image_uri_prefix="{id}.png",
        beam_args=tuple(cfg["beam_options"]),
    ))
    outputs = dict(result.index_dirs)
    outputs["codes"] = os.path.join(
        context.directory, retrieval_builder.CODES_DIR
    )
    outputs["image_root"] = image_root
    return StageResult(
        outputs=outputs,
        metrics={"num_codes": result.num_codes, "code_dim": result.code_dim,
                 "dead_letters": result.dead_letters},
    )


# === The chain ===


def make_stages(experiment, pipeline):
    """The six stages with their configuration slices.

    Each stage's `code` names the modules its function imports; their
    source (and what they import) is part of its cache fingerprint.
    """
    data = experiment.data
    beam = list(pipeline.beam_options)
    source = {
        "source": pipeline.source,
        "data_dir": data.data_dir,
        "image_size": list(pipeline.image_size) if pipeline.image_size else None,
        "records_per_shard": pipeline.records_per_shard,
        "limit": pipeline.limit,
        "beam_options": beam,
    }
    semantics_cfg = {
        "kind": data.semantics,
        "text_encoder": pipeline.text_encoder,
        "hierarchy_file": data.hierarchy_file,
        "class_names_file": data.class_names_file,
        "beam_options": beam,
    }
    experiment_dict = experiment.to_dict()
    trainer_cfg = {"experiment": experiment_dict,
                   "configurations": list(pipeline.configurations)}
    return [
        Stage("example_gen", example_gen, config=source,
              code=("pipeline.make_tfrecords",)),
        Stage("semantics", semantics, inputs=("example_gen",),
              config=semantics_cfg,
              code=("pipeline.embed_captions", "pipeline.label_distances")),
        Stage("trainer", trainer, inputs=("semantics",), config=trainer_cfg,
              code=("shrewd_tf.config", "shrewd_tf.training.trainer")),
        Stage("evaluator", evaluator, inputs=("trainer",),
              config={"k": pipeline.k, "name": experiment.name},
              code=("shrewd_tf.evaluation.evaluate",
                    "shrewd_tf.evaluation.report")),
        Stage("exporter", exporter, inputs=("trainer",),
              config={"model_name": pipeline.model_name,
                      "configurations": list(pipeline.configurations)},
              code=("shrewd_tf.export.saved_model",
                    "shrewd_tf.export.tf_serving")),
        Stage("index_builder", index_builder,
              inputs=("semantics", "exporter"),
              config={"database_split": pipeline.database_split,
                      "index_kinds": list(pipeline.index_kinds),
                      "binary_method": pipeline.binary_method,
                      "beam_options": beam},
              code=("pipeline.build_index", "shrewd_tf.data.records",
                    "shrewd_tf.data.image_files")),
    ]


def run(config_path=DEFAULT_CONFIG, overrides=None, force=()):
    """Runs the pipeline of `config_path`; returns {stage: (result, manifest)}.

    Args:
        config_path: pipeline config (an experiment config with a
            `pipeline:` section).
        overrides: dotted keys ({"train.epochs": 1,
            "pipeline.configurations": ["CLASS"]}).
        force: stage names to rerun even when cached ("all" for every one).
    """
    experiment, pipeline = pipeline_config.load(config_path, overrides)
    run_dir = os.path.join(pipeline.runs_dir, _slug(experiment.name))
    print(f"== shrewd pipeline {experiment.name!r} -> {run_dir}", flush=True)
    results = StageCache(run_dir, force=force).run(make_stages(experiment, pipeline))
    report_path = results["evaluator"][0].outputs["report"]
    exporter_out = results["exporter"][0].outputs
    index_out = results["index_builder"][0].outputs
    serve = ["shrewd serve", f"--export-root {exporter_out['export_root']}"]
    for kind in contract.INDEX_KIND_TABLE:  # --binary-index, --float-index
        if kind.name in index_out:
            serve.append(
                f"--{kind.serving_mode}-index {index_out[kind.name]}"
            )
    serve.append(f"--image-root {index_out['image_root']}")
    class_distances = results["semantics"][0].outputs.get("class_distances")
    if class_distances:  # the page colours results by class similarity
        serve.append(f"--class-distances {class_distances}")
    print(f"== report: {report_path}")
    print(f"== serve the index: {' '.join(serve)}")
    print("   then open http://127.0.0.1:8501/")
    return results


def _slug(name):
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name).strip("_")


def _floats(metrics):
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float, np.floating, np.integer))}
