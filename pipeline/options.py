"""Beam pipeline options shared by the jobs.

`pipeline_options(beam_args)` turns a job's leftover flags into
`PipelineOptions`, with the in-process `FnApiRunner` when no `--runner` is
given: Beam 2.77's DirectRunner first tries PrismRunner, which downloads a
binary from GitHub (impossible offline) and ignores `--direct_running_mode`;
FnApiRunner is the local runner DirectRunner falls back to, and it honours
`--direct_num_workers=N --direct_running_mode=multi_processing`.
"""

from apache_beam.options.pipeline_options import PipelineOptions

DEFAULT_RUNNER = "FnApiRunner"


def pipeline_options(beam_args):
    """`PipelineOptions` of `beam_args`, runner FnApiRunner by default."""
    beam_args = list(beam_args)
    if not any(a == "--runner" or a.startswith("--runner=")
               for a in beam_args):
        beam_args.append(f"--runner={DEFAULT_RUNNER}")
    return PipelineOptions(beam_args)
