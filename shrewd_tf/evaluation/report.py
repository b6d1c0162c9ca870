"""The evaluation report: a markdown page with matplotlib plots.

`write_report(output_dir, runs)` writes `report.md` and, next to it:

* `hp_curves.png`: mean hierarchical precision HP@k for k = 1..250 per
  configuration, float codes (solid, Manhattan ranking) against binarised
  codes (dashed, Hamming ranking, tie-aware): the paper's Fig. 2.
* `code_histogram.png`: the distribution of code values per configuration
  (log-scale counts, so piles at 0 and 1 and a thin middle both show), with
  lines at 0, 0.5 (the binarisation threshold) and 1, the near-binary bands
  within 0.1 of 0 and 1 shaded, and the near-binary percentage in each
  title; codes that the binarisation will hurt sit near 0.5.
* a code statistics table (`metrics.code_statistics` of each run's codes):
  near-binary fraction, bit balance deviation, distinct binary codes.
* `retrieval_<run>.png`: a grid of query images (first column) and their
  top results by Hamming distance, titled with label and distance; a
  result of the query's class has a green title (the paper's Fig. 3).
* the metrics table (`evaluation.markdown_table`).

Query protocol as everywhere: the evaluation images are queries and
database, each query left out of its own database.
"""

import dataclasses
import os

import numpy as np

from shrewd_tf import contract
from shrewd_tf.evaluation import metrics
from shrewd_tf.io import atomic_path
from shrewd_tf.io import write_text_atomically
from shrewd_tf.ops.bits import binarise

CURVE_KS = np.unique(np.geomspace(1, 250, 40).round().astype(int))
NEAR_BINARY_TOLERANCE = 0.1  # a code value within this of 0 or 1
GRID_QUERIES = 6
GRID_RESULTS = 8


@dataclasses.dataclass
class RunOutputs:
    """What the report needs from one trained configuration.

    Attributes:
        codes: float [N, d] codes of the evaluation images.
        labels: int [N] class ids (for caption data: `arange(N)`).
        similarity: float [C, C] similarity between labels
            (`semantics.class_similarity` of the class distances; for
            captions an [N, N] embedding similarity).
        metrics: the row of the metrics table.
        images: optional, for the retrieval grid: uint8 [N, H, W, C], or a
            function `images(indices) -> uint8 [K, H, W, C]` that decodes
            only the images the grid draws
            (`ExperimentData.test_images_at`).
        label_names: optional names of the labels for titles.
    """

    codes: np.ndarray
    labels: np.ndarray
    similarity: np.ndarray
    metrics: dict
    images: object = None
    label_names: list | None = None


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path):
    """Saves a figure atomically (`shrewd_tf.io.atomic_path`)."""
    with atomic_path(path) as temp:
        figure.savefig(temp, dpi=100, bbox_inches="tight")


def plot_hp_curves(runs, path, ks=CURVE_KS):
    """HP@k for float (solid) and binary (dashed) codes of every run."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7, 4.5))
    ks = np.asarray([k for k in ks if k <= min(len(r.labels) for r in runs.values()) - 1])
    for index, (name, run) in enumerate(runs.items()):
        color = f"C{index % 10}"
        for binary, style in ((False, "-"), (True, "--")):
            curve = metrics.hierarchical_precision_curve(
                run.codes, run.labels, run.codes, run.labels, run.similarity,
                binary=binary, exclude_self=True, ks=ks,
            )
            axes.plot(ks, curve, style, color=color,
                      label=f"{name} ({'binary' if binary else 'float'})")
    axes.set_xscale("log")
    axes.set_xlabel("k (retrieved images)")
    axes.set_ylabel("hierarchical precision HP@k")
    axes.set_title("Hierarchical precision: float (solid) vs binary (dashed)")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=7)
    _save(figure, path)
    plt.close(figure)


def plot_code_histograms(runs, path, bins=50, tolerance=NEAR_BINARY_TOLERANCE):
    """Histogram of code values per run that shows how binary they are.

    Counts are on a log axis, so the piles at 0 and 1 and the few values in
    between are all visible. Solid lines mark 0 and 1, a dotted line the
    binarisation threshold 0.5; the bands within `tolerance` of 0 and 1 are
    shaded, and each title gives the near-binary percentage (values in
    those bands, `metrics.code_statistics`).

    Returns:
        {run name: `metrics.code_statistics` of its codes}.
    """
    plt = _pyplot()
    count = len(runs)
    figure, axes = plt.subplots(1, count, figsize=(3.2 * count, 2.8), squeeze=False)
    statistics = {}
    for axis, (name, run) in zip(axes[0], runs.items()):
        values = np.asarray(run.codes, np.float32).ravel()
        statistics[name] = metrics.code_statistics(run.codes, tolerance)
        for centre in (0.0, 1.0):
            axis.axvspan(centre - tolerance, centre + tolerance, color="C2",
                         alpha=0.2, linewidth=0)
            axis.axvline(centre, color="C2", linewidth=1)
        axis.axvline(contract.BIT_THRESHOLD, color="C3", linestyle=":")
        low = min(-tolerance, float(values.min()))
        high = max(1.0 + tolerance, float(values.max()))
        axis.hist(values, bins=bins, range=(low, high), color="C0")
        axis.set_xlim(low, high)
        near = 100 * statistics[name]["near_binary"]
        axis.set_title(f"{name}\nnear-binary (±{tolerance:g}): {near:.1f} %",
                       fontsize=8)
        axis.set_xlabel("code value")
        axis.set_yscale("log")
        axis.set_ylim(bottom=0.8)  # a single value still shows; from 1 up
    axes[0][0].set_ylabel("count (log)")
    _save(figure, path)
    plt.close(figure)
    return statistics


def code_statistics_table(statistics):
    """Markdown table of `metrics.code_statistics` per run."""
    lines = ["| model | near-binary | bit balance dev. | distinct codes |",
             "|---|---|---|---|"]
    for name, values in statistics.items():
        lines.append(
            f"| {name} | {100 * values['near_binary']:.1f} % | "
            f"{values['bit_balance_deviation']:.4f} | "
            f"{values['distinct_codes']:.0f} "
            f"({100 * values['distinct_fraction']:.1f} %) |"
        )
    return "\n".join(lines) + "\n"


def hamming_neighbours(codes, queries, count):
    """Indices [len(queries), count] and Hamming distances of the nearest
    database items (query itself excluded, ties by database order)."""
    bits = binarise(codes)
    rows, distances = [], []
    for query in queries:
        distance = np.count_nonzero(bits != bits[query], axis=1)
        distance[query] = bits.shape[1] + 1
        order = np.argsort(distance, kind="stable")[:count]
        rows.append(order)
        distances.append(distance[order])
    return np.asarray(rows), np.asarray(distances)


def plot_retrieval_grid(run, path, queries=None, results=GRID_RESULTS, seed=0):
    """Query images and their top Hamming results, titled label / distance."""
    if run.images is None:
        raise ValueError("plot_retrieval_grid needs run.images")
    plt = _pyplot()
    n = len(run.labels)
    if queries is None:
        rng = np.random.default_rng(seed)
        queries = np.sort(rng.choice(n, size=min(GRID_QUERIES, n), replace=False))
    rows, distances = hamming_neighbours(run.codes, queries, results)
    drawn = np.unique(np.concatenate([np.asarray(queries), rows.ravel()]))
    fetched = (run.images(drawn) if callable(run.images)
               else np.asarray(run.images)[drawn])
    image_of = dict(zip(drawn.tolist(), fetched))
    figure, axes = plt.subplots(
        len(queries), results + 1, figsize=(1.3 * (results + 1), 1.45 * len(queries)),
        squeeze=False,
    )

    def name_of(label):
        names = run.label_names
        return str(names[label]) if names is not None and 0 <= label < len(names) else str(label)

    for row, query in enumerate(queries):
        cells = [(query, None)] + list(zip(rows[row], distances[row]))
        for column, (item, distance) in enumerate(cells):
            axis = axes[row][column]
            image = image_of[int(item)]
            if image.shape[-1] == 1:  # fixed range: no per-image stretch
                axis.imshow(image[:, :, 0], cmap="gray", vmin=0, vmax=255)
            else:
                axis.imshow(image)
            axis.set_xticks([])
            axis.set_yticks([])
            if distance is None:
                axis.set_title(f"query\n{name_of(run.labels[item])}", fontsize=6,
                               fontweight="bold")
            else:
                same = run.labels[item] == run.labels[query]
                axis.set_title(f"{name_of(run.labels[item])}\nd={int(distance)}",
                               fontsize=6, color="green" if same else "darkorange")
    _save(figure, path)
    plt.close(figure)


def _slug(name):
    return "".join(c if c.isalnum() else "_" for c in name).strip("_") or "run"


def write_report(output_dir, runs, title="SHREWD evaluation report", notes=()):
    """Writes report.md and its PNG plots into `output_dir`.

    Args:
        output_dir: created if needed.
        runs: {configuration name: RunOutputs}.
        title: first heading.
        notes: extra markdown lines (protocol, data, commands).

    Returns:
        The path of report.md.
    """
    from shrewd_tf.evaluation import evaluate as evaluation

    if not runs:
        raise ValueError("write_report needs at least one run. Received: {}")
    os.makedirs(output_dir, exist_ok=True)
    plot_hp_curves(runs, os.path.join(output_dir, "hp_curves.png"))
    statistics = plot_code_histograms(
        runs, os.path.join(output_dir, "code_histogram.png")
    )
    grids = {}
    for name, run in runs.items():
        if run.images is not None:
            grids[name] = f"retrieval_{_slug(name)}.png"
            plot_retrieval_grid(run, os.path.join(output_dir, grids[name]))
    lines = [f"# {title}", ""]
    lines += list(notes) + ([""] if notes else [])
    lines += [evaluation.markdown_table({n: r.metrics for n, r in runs.items()}, title="Metrics"), ""]
    lines += ["## Hierarchical precision@k", "",
              "![HP@k curves, float vs binary](hp_curves.png)", ""]
    lines += ["## Code values", "",
              f"Near-binary: values within {NEAR_BINARY_TOLERANCE:g} of 0 or "
              "1 (shaded). Bit balance deviation: mean over bits of "
              "|P(bit on) - 0.5| (0 is balanced, 0.5 a constant bit). "
              "Distinct codes: distinct binarised codes "
              f"(code > {contract.BIT_THRESHOLD:g}).", "",
              code_statistics_table(statistics),
              "![histogram of code values](code_histogram.png)", ""]
    if grids:
        lines += ["## Retrieval examples (Hamming ranking)", "",
                  "Green: same class as the query; orange: another class.", ""]
        for name, file_name in grids.items():
            lines += [f"### {name}", "", f"![retrieval grid of {name}]({file_name})", ""]
    path = os.path.join(output_dir, contract.REPORT_FILE)
    write_text_atomically(path, "\n".join(lines))
    return path
