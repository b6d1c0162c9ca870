"""What a served index says about itself in answers: the distance it ranks
by and the recall its build measured (`/v1/search`, `/v1/database`)."""

from shrewd_tf import contract


def measured_recall(index, k=None):
    """(recall, its k) measured at build for the index's settings, or
    (None, None): exact, or nothing recorded (`shrewd_tf.retrieval.recall`).

    With `k`, the recall of the smallest measured cut-off >= k (the build
    measures k=10 and a wide k, 250 by default), else of the widest one: a
    search's answer reports the recall that applies to it, with its k.
    """
    recall = None if index.is_exact else getattr(
        index, "measured_recall", None
    )
    if recall is None:
        return None, None
    report = index.recall_report
    cutoffs = [(int(report.k), float(recall))]
    if report.wide_k and report.recall_wide is not None:
        cutoffs.append((int(report.wide_k), float(report.recall_wide)))
    cutoffs.sort()
    if k is not None:
        for cutoff, value in cutoffs:
            if cutoff >= k:
                return value, cutoff
        cutoff, value = cutoffs[-1]
        return value, cutoff
    cutoff, value = cutoffs[0]
    return value, cutoff


def distance_name(index):
    """The distance an index ranks by, as answers name it."""
    if getattr(index, "kind", None) == contract.BINARY_INDEX:
        return "l1" if index.rerank else "hamming"
    if getattr(index, "distance", None) == "dot_product":
        return "negative_dot_product"
    return "squared_l2"
