"""What the Beam jobs share: runner options and their typed interface.

`pipeline_options(beam_args)` turns a job's leftover flags into
`PipelineOptions`, with the in-process `FnApiRunner` when no `--runner` is
given: Beam 2.77's DirectRunner first tries PrismRunner, which downloads a
binary from GitHub (impossible offline) and ignores `--direct_running_mode`;
FnApiRunner is the local runner DirectRunner falls back to, and it honours
`--direct_num_workers=N --direct_running_mode=multi_processing`.

`new_pipeline(beam_args)` is the `beam.Pipeline` every job runs: with the
default runner it hands FnApiRunner the options as the workers'
provisioning info, which FnApiRunner leaves empty otherwise, so
multi-process workers honour `--default_sdk_harness_log_level` and the
other SDK options as a real runner's workers do.

Every job has a typed entry point `run(options: <Job>Options) ->
<Job>Result` (frozen dataclasses; the pipeline's stages call it) and a
`main(argv)` that parses the command line into the options and calls it.
`options_from_argv` is that parsing for parsers whose destinations are
the options' field names.
"""


from apache_beam.options.pipeline_options import PipelineOptions

from shrewd_tf import verbosity

DEFAULT_RUNNER = "FnApiRunner"


def _given(beam_args, flag):
    return any(a == flag or a.startswith(f"{flag}=") for a in beam_args)


def pipeline_options(beam_args):
    """`PipelineOptions` of `beam_args`, runner FnApiRunner by default.

    While a command runs quiet (`shrewd_tf.verbosity`), the SDK workers
    log at ERROR only (`--default_sdk_harness_log_level`), unless the
    flags say otherwise: the multi-process runner's workers otherwise print
    their state cache, data plane and bundle chatter at INFO.
    """
    beam_args = list(beam_args)
    if not _given(beam_args, "--runner"):
        beam_args.append(f"--runner={DEFAULT_RUNNER}")
    if verbosity.quiet() and not _given(
            beam_args, "--default_sdk_harness_log_level"):
        beam_args.append("--default_sdk_harness_log_level=ERROR")
    return PipelineOptions(beam_args)


def new_pipeline(beam_args):
    """`beam.Pipeline` of `pipeline_options(beam_args)`.

    With the default runner (no `--runner` in `beam_args`), the pipeline
    gets an FnApiRunner whose provisioning info carries the options, so
    `--direct_running_mode=multi_processing` workers read them (their log
    level included) instead of `{}`.
    """
    import apache_beam as beam

    options = pipeline_options(beam_args)
    if _given(list(beam_args), "--runner"):
        return beam.Pipeline(options=options)
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from google.protobuf import json_format
    from google.protobuf import struct_pb2

    forwarded = {}
    for key, value in options.get_all_options(
        drop_default=True, retain_unknown_options=True
    ).items():
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # A JSON number reads back as "2.0".
        try:
            forwarded[f"beam:option:{key}:v1"] = json_format.ParseDict(
                value, struct_pb2.Value()
            )
        except (TypeError, json_format.ParseError):
            continue  # Not JSON: the workers do not need it.
    info = beam_provision_api_pb2.ProvisionInfo(
        retrieval_token="unused-retrieval-token",
        pipeline_options=struct_pb2.Struct(fields=forwarded),
    )
    runner = fn_runner.FnApiRunner(
        provision_info=fn_runner.ExtendedProvisionInfo(info)
    )
    return beam.Pipeline(runner=runner, options=options)


def options_from_argv(parse_args, options_type, argv):
    """`options_type` of a command line.

    Args:
        parse_args: `argv -> (argparse.Namespace, Beam args)`, the job's
            `parse_known_args`; each destination is a field of
            `options_type`.
        options_type: the job's frozen options dataclass, with a
            `beam_args` field for the flags the job does not know.
        argv: the command line (None: `sys.argv[1:]`).
    """
    args, beam_args = parse_args(argv)
    return options_type(**vars(args), beam_args=tuple(beam_args))
