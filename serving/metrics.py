"""Prometheus metrics at `GET /monitoring/prometheus/metrics` (TF Serving's
path), in the text exposition format (version 0.0.4), hand-written.

* `shrewd_serving_requests_total{endpoint, status}`: requests answered
  (counter): REST (status: the HTTP code) and gRPC (endpoint
  "grpc_<method>", status: the gRPC code's name, e.g. INVALID_ARGUMENT);
* `shrewd_serving_request_latency_seconds{endpoint, status}`: their latency
  from headers read to answer ready (histogram);
* `shrewd_serving_model_versions{model, version, state}`: 1 per version
  known to the repository;
* `shrewd_serving_index_size{mode}`: codes in each loaded index;
* `shrewd_serving_in_flight_requests`, `shrewd_serving_open_connections`;
* with batching on: `shrewd_serving_batch_size` (histogram of the rows per
  executed batch, padding excluded).

Endpoints are a fixed set (`endpoint_of`), so a client cannot grow the
label space with made-up paths.
"""

import bisect
import re
import threading

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PATH = "/monitoring/prometheus/metrics"
# Seconds; the upper bounds of the latency histogram (+Inf implied).
BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
_PREFIX = "shrewd_serving_"


def endpoint_of(method, path):
    """The endpoint label of a request path (one of a fixed set)."""
    if path.startswith("/v1/models/"):
        if path.endswith(":predict"):
            return "predict"
        if re.search(r":(classify|regress)$", path):
            return "classify_regress"
        if path.endswith("/metadata"):
            return "model_metadata"
        return "model_status" if ":" not in path else "other"
    return {
        "/v1/search": "search",
        "/v1/database": "database",
        "/": "page",
        "/index.html": "page",
        PATH: "metrics",
    }.get(
        path,
        "images"
        if path.startswith("/v1/images/")
        else "static" if path.startswith("/static/") else "other",
    )


def _labels(**labels):
    def escape(value):
        return (
            str(value)
            .replace("\\", "\\\\")
            .replace('"', '\\"')
            .replace("\n", "\\n")
        )

    inner = ",".join(f'{k}="{escape(v)}"' for k, v in labels.items())
    return "{" + inner + "}" if inner else ""


def _number(value):
    if value == float("inf"):
        return "+Inf"
    return repr(float(value)) if isinstance(value, float) else str(value)


class Metrics:
    """Thread-safe request counts and latency histograms.

    Args:
        scheduler: `serving.batching.BatchScheduler` whose batch sizes are
            exported, or None.
    """

    def __init__(self, scheduler=None):
        self.scheduler = scheduler
        self._lock = threading.Lock()
        # (endpoint, status) -> [count per bucket..., +Inf count, sum]
        self._requests = {}

    def observe(self, endpoint, status, seconds):
        """Records one answered request."""
        index = bisect.bisect_left(BUCKETS, seconds)
        key = (endpoint, str(status))
        with self._lock:
            row = self._requests.get(key)
            if row is None:
                row = self._requests[key] = [0] * (len(BUCKETS) + 1) + [0.0]
            row[index] += 1
            row[-1] += seconds

    def render(self, repository=None, search=None, rest_server=None):
        """The exposition text.

        Args:
            repository: `ModelRepository` or None (model versions).
            search: `SearchService` or None (index sizes).
            rest_server: `RestServer` or None (in-flight, connections).
        """
        with self._lock:
            requests = {key: list(row) for key, row in self._requests.items()}
        lines = []

        def family(name, kind, help_text):
            lines.append(f"# HELP {_PREFIX}{name} {help_text}")
            lines.append(f"# TYPE {_PREFIX}{name} {kind}")

        family(
            "requests_total", "counter", "Requests by endpoint, status."
        )
        for (endpoint, status), row in sorted(requests.items()):
            labels = _labels(endpoint=endpoint, status=status)
            lines.append(
                f"{_PREFIX}requests_total{labels} {sum(row[:-1])}"
            )
        family(
            "request_latency_seconds",
            "histogram",
            "Request latency (s) by endpoint, status.",
        )
        for (endpoint, status), row in sorted(requests.items()):
            cumulative = 0
            for bound, count in zip(BUCKETS + (float("inf"),), row[:-1]):
                cumulative += count
                labels = _labels(
                    endpoint=endpoint, status=status, le=_number(bound)
                )
                lines.append(
                    f"{_PREFIX}request_latency_seconds_bucket{labels} "
                    f"{cumulative}"
                )
            labels = _labels(endpoint=endpoint, status=status)
            lines.append(
                f"{_PREFIX}request_latency_seconds_sum{labels} "
                f"{_number(row[-1])}"
            )
            lines.append(
                f"{_PREFIX}request_latency_seconds_count{labels} "
                f"{cumulative}"
            )
        family(
            "model_versions",
            "gauge",
            "1 per model version known, by state.",
        )
        if repository is not None:
            for name in repository.model_names_served():
                for status in repository.status(name):
                    row = status.to_json()
                    labels = _labels(
                        model=name, version=row["version"], state=row["state"]
                    )
                    lines.append(f"{_PREFIX}model_versions{labels} 1")
        family("index_size", "gauge", "Codes in each loaded index.")
        if search is not None:
            for mode, index in sorted(search.indexes.items()):
                lines.append(
                    f"{_PREFIX}index_size{_labels(mode=mode)} {len(index)}"
                )
        if rest_server is not None:
            family(
                "in_flight_requests",
                "gauge",
                "REST requests waiting for or running on the workers.",
            )
            lines.append(f"{_PREFIX}in_flight_requests {rest_server.in_flight}")
            family("open_connections", "gauge", "Open REST connections.")
            lines.append(
                f"{_PREFIX}open_connections {rest_server.connections}"
            )
        if self.scheduler is not None:
            family(
                "batch_size",
                "histogram",
                "Rows per executed batch (padding excluded).",
            )
            lines.extend(_batch_size_lines(self.scheduler))
        return "\n".join(lines) + "\n"


def _batch_size_lines(scheduler):
    """Histogram lines of the scheduler's batch sizes (powers of 2)."""
    sizes = scheduler.batch_size_counts()
    largest = scheduler.parameters.max_batch_size
    bounds, bound = [], 1
    while bound < largest:
        bounds.append(bound)
        bound *= 2
    bounds.append(largest)
    name = _PREFIX + "batch_size"
    lines = []
    for bound in bounds + [float("inf")]:
        count = sum(n for size, n in sizes.items() if size <= bound)
        lines.append(f"{name}_bucket{_labels(le=_number(bound))} {count}")
    total = sum(size * n for size, n in sizes.items())
    lines.append(f"{name}_sum {total}")
    lines.append(f"{name}_count {sum(sizes.values())}")
    return lines
