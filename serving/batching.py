"""Server-side batching of concurrent signature runs, as TF Serving's.

With `--enable-batching`, every `Signature.run` (REST and gRPC `:predict`,
the warmup replay, image-search encodes) whose inputs all have a batch
dimension becomes a *task* of `n` rows submitted to one `BatchScheduler`;
the calling request thread blocks until its rows come back. Like TF
Serving's SharedBatchScheduler (`serving.batching_parameters` has the
knobs and their defaults):

* Tasks queue by signature, output filter and the inputs' dtypes and
  non-batch shapes (tasks in one queue concatenate along dimension 0).
* A queue fills its open batch up to `max_batch_size` rows; a task that
  does not fit closes it and opens the next. More than
  `max_enqueued_batches` waiting batches: UNAVAILABLE. A task over
  `max_batch_size` rows: INVALID_ARGUMENT.
* `num_batch_threads` threads run batches: each takes the oldest batch
  that is closed, full, or whose first task has waited
  `batch_timeout_micros` (0: any non-empty batch, so batches form from the
  requests that arrive while the threads are busy).
* A batch runs as one call of the signature function on the concatenated
  inputs (padded to the next `allowed_batch_sizes` entry by repeating the
  first row); each output is split back by rows.

One difference from TF Serving, on purpose: when a batch of several tasks
fails (one request's undecodable image fails the whole graph call, or the
batch is too big for memory), each task is run again alone, so only the
request at fault gets an error, and the one it gets when batching is off.
"""

import collections
import threading
import time

import grpc
import tensorflow as tf

from serving.errors import ServingError
from serving.errors import from_tensorflow_error
from serving.errors import invalid_argument


class _Task:
    """One request's rows, waiting for its outputs."""

    __slots__ = ("feeds", "size", "done", "outputs", "error", "enqueued")

    def __init__(self, feeds, size):
        self.feeds, self.size = feeds, size
        self.done = threading.Event()
        self.outputs = self.error = None
        self.enqueued = time.monotonic()


class _Batch:
    __slots__ = ("tasks", "size", "closed", "created")

    def __init__(self):
        self.tasks, self.size, self.closed = [], 0, False
        self.created = None


class _Queue:
    """Batches of one (signature, output filter, input shapes) key."""

    __slots__ = ("run", "output_filter", "batches")

    def __init__(self, run, output_filter):
        self.run, self.output_filter = run, output_filter
        self.batches = collections.deque()


class BatchScheduler:
    """Batches concurrent runs; `start()`, `run(...)`, `stop()`.

    Args:
        parameters: `serving.batching_parameters.BatchingParameters`.

    Attributes:
        batches_run: batches executed (int).
        rows_run: rows they held, padding excluded (int).
        batch_sizes: {rows: batches} of the batches executed.
    """

    def __init__(self, parameters):
        self.parameters = parameters
        self.batches_run = 0
        self.rows_run = 0
        self.batch_sizes = collections.Counter()
        self._queues = {}  # key -> _Queue
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._threads = []
        self._stopping = False
        self._next_queue = 0  # round robin over queues

    # === Lifecycle ===

    def start(self):
        p = self.parameters
        self._stopping = False
        self._threads = [
            threading.Thread(
                target=self._loop,
                name=f"{p.thread_pool_name}-{i}",
                daemon=True,
            )
            for i in range(p.num_batch_threads)
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self):
        """Runs what is queued, then ends the batch threads."""
        with self._lock:
            self._stopping = True
            self._ready.notify_all()
        for thread in self._threads:
            thread.join()
        self._threads = []

    def batch_size_counts(self):
        """{rows: batches executed with that many rows} (a copy)."""
        with self._lock:
            return dict(self.batch_sizes)

    def queued_rows(self):
        """Rows waiting in batches not yet taken by a batch thread."""
        with self._lock:
            return sum(
                batch.size
                for queue in self._queues.values()
                for batch in queue.batches
            )

    # === Submitting ===

    def run(self, run, feeds, size, output_filter=(), key=None):
        """Runs `size` rows through a batch; blocks until they are done.

        Args:
            run: callable({input: tf.Tensor}, output_filter) ->
                {output: np.ndarray}, the unbatched signature call.
            feeds: {input name: tf.Tensor} with first dimension `size`.
            size: rows in this request.
            output_filter: output names to return (all: empty).
            key: what tasks must share to be batched together (default:
                `run`, the output filter and the inputs' dtypes and
                non-batch shapes).

        Returns:
            {output name: np.ndarray} of this request's rows.

        Raises:
            ServingError: INVALID_ARGUMENT over max_batch_size, UNAVAILABLE
                when the queue is full or the scheduler stopped, or the
                run's own error.
        """
        p = self.parameters
        if size > p.max_batch_size:
            raise invalid_argument(
                f"Task size {size} is larger than maximum input batch size "
                f"{p.max_batch_size} (batching parameters' max_batch_size)."
            )
        output_filter = tuple(output_filter)
        if key is None:
            key = (run, output_filter) + tuple(
                (name, t.dtype, tuple(t.shape[1:]))
                for name, t in sorted(feeds.items())
            )
        task = _Task(feeds, size)
        with self._lock:
            if self._stopping or not self._threads:
                raise ServingError(
                    grpc.StatusCode.UNAVAILABLE,
                    "The batch scheduler is not running (the server is "
                    "stopping); retry later.",
                )
            queue = self._queues.get(key)
            if queue is None:
                queue = self._queues[key] = _Queue(run, output_filter)
            batch = queue.batches[-1] if queue.batches else None
            if (
                batch is None
                or batch.closed
                or batch.size + size > p.max_batch_size
            ):
                waiting = sum(1 for b in queue.batches if b.tasks)
                if waiting >= p.max_enqueued_batches:
                    raise ServingError(
                        grpc.StatusCode.UNAVAILABLE,
                        "The batch scheduling queue to which this task was "
                        f"submitted is full (max_enqueued_batches="
                        f"{p.max_enqueued_batches}); retry later.",
                    )
                if batch is not None:
                    batch.closed = True
                batch = _Batch()
                queue.batches.append(batch)
            if not batch.tasks:
                batch.created = task.enqueued
            batch.tasks.append(task)
            batch.size += size
            if batch.size >= p.max_batch_size:
                batch.closed = True
            self._ready.notify()
        task.done.wait()
        if task.error is not None:
            raise task.error
        return task.outputs

    # === Batch threads ===

    def _take(self, now):
        """(queue, batch) ready to run, or (None, seconds to wait)."""
        timeout = self.parameters.batch_timeout_micros / 1e6
        keys = list(self._queues)
        wait = None
        for i in range(len(keys)):
            key = keys[(self._next_queue + i) % len(keys)]
            queue = self._queues[key]
            if not queue.batches or not queue.batches[0].tasks:
                if not queue.batches:
                    del self._queues[key]
                continue
            batch = queue.batches[0]
            due = batch.created + timeout
            if batch.closed or due <= now or self._stopping:
                queue.batches.popleft()
                self._next_queue = (self._next_queue + i + 1) % max(
                    len(keys), 1
                )
                return queue, batch
            wait = due - now if wait is None else min(wait, due - now)
        return None, wait

    def _loop(self):
        while True:
            with self._lock:
                while True:
                    queue, batch = self._take(time.monotonic())
                    if queue is not None:
                        break
                    if self._stopping:
                        return
                    self._ready.wait(batch)
            self._execute(queue, batch)

    def _execute(self, queue, batch):
        tasks = batch.tasks
        padded = self.parameters.padded_size(batch.size)
        try:
            if len(tasks) == 1 and padded == batch.size:
                self._run_alone(queue, tasks[0])
            else:
                try:
                    self._run_batch(queue, tasks, batch.size, padded)
                except Exception:  # noqa: BLE001 (each request alone)
                    # One request's bad input fails the whole call, as may
                    # the batch's own size (memory): each runs alone, so
                    # only the request at fault gets an error, and its own.
                    for task in tasks:
                        self._run_alone(queue, task)
        except Exception as e:  # noqa: BLE001 (never leave a task waiting)
            for task in tasks:
                if task.outputs is None and task.error is None:
                    task.error = ServingError(
                        grpc.StatusCode.INTERNAL,
                        f"Batch failed: {type(e).__name__}: {e}",
                    )
        finally:
            with self._lock:
                self.batches_run += 1
                self.rows_run += batch.size
                self.batch_sizes[batch.size] += 1
            for task in tasks:
                task.done.set()

    def _run_batch(self, queue, tasks, rows, padded):
        feeds = {}
        for name in tasks[0].feeds:
            parts = [task.feeds[name] for task in tasks]
            if padded > rows:
                first = parts[0][:1]
                parts.append(tf.repeat(first, padded - rows, axis=0))
            feeds[name] = tf.concat(parts, axis=0)
        outputs = queue.run(feeds, queue.output_filter)
        for name, array in outputs.items():
            if array.ndim == 0 or array.shape[0] != padded:
                raise ServingError(  # Not split by rows: run one by one.
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"Output {name!r} has no batch dimension of {padded}.",
                )
        start = 0
        for task in tasks:
            _finish(
                task,
                {
                    name: array[start : start + task.size]
                    for name, array in outputs.items()
                },
            )
            start += task.size

    def _run_alone(self, queue, task):
        try:
            _finish(task, queue.run(task.feeds, queue.output_filter))
        except ServingError as e:
            task.outputs, task.error = None, e
        except tf.errors.OpError as e:
            task.outputs, task.error = None, from_tensorflow_error(e)


def _finish(task, outputs):
    task.outputs, task.error = outputs, None
