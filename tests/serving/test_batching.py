"""BatchScheduler: tasks queued while the batch threads are busy run as one
batch, each gets its own rows back, limits and failures are per request."""

import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf

from serving.batching import BatchScheduler
from serving.batching_parameters import BatchingParameters
from serving.errors import ServingError
from serving.errors import invalid_argument


class GatedModel:
    """A fake signature call: y = 2x, s = row sums; records each call's rows.

    The first call blocks until `gate` is set, so the tasks submitted
    meanwhile pile up in the queue. A row with a negative value fails the
    call (as an undecodable image fails a graph call).
    """

    def __init__(self, hold_first=True, batch_outputs=True):
        self.calls = []
        self.gate = threading.Event()
        self.started = threading.Event()
        if not hold_first:
            self.gate.set()
        self.batch_outputs = batch_outputs

    def __call__(self, feeds, output_filter):
        x = feeds["x"].numpy()
        self.calls.append(x.copy())
        self.started.set()
        self.gate.wait(30)
        if (x < 0).any():
            raise invalid_argument("negative input")
        outputs = {"y": 2 * x, "s": x.sum(axis=1)}
        if not self.batch_outputs:
            outputs["scale"] = np.float32(2.0)
        return {k: v for k, v in outputs.items()
                if not output_filter or k in output_filter}


def _rows(start, size):
    return np.arange(start, start + size * 2, dtype=np.float32).reshape(
        size, 2
    )


def _submit(scheduler, model, rows, results, key):
    def work():
        try:
            results[key] = scheduler.run(
                model, {"x": tf.constant(rows)}, len(rows)
            )
        except ServingError as e:
            results[key] = e

    thread = threading.Thread(target=work)
    thread.start()
    return thread


def _wait_until(condition, timeout=30):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.005)


def _pile_up(scheduler, model, sizes, queued_rows=None):
    """Blocks the batch thread with a first task of 1 row, then queues
    tasks of `sizes` rows; returns (threads, results, inputs)."""
    results, inputs, threads = {}, {}, []
    first = _rows(-100, 1) * 0 + 0.5
    inputs["first"] = first
    threads.append(_submit(scheduler, model, first, results, "first"))
    assert model.started.wait(30)
    start = 0
    for i, size in enumerate(sizes):
        inputs[i] = _rows(start, size)
        start += size * 2
        threads.append(_submit(scheduler, model, inputs[i], results, i))
    wanted = sum(sizes) if queued_rows is None else queued_rows
    _wait_until(lambda: scheduler.queued_rows() == wanted)
    return threads, results, inputs


@pytest.fixture
def make_scheduler():
    schedulers = []

    def make(**kwargs):
        kwargs.setdefault("num_batch_threads", 1)
        scheduler = BatchScheduler(BatchingParameters(**kwargs)).start()
        schedulers.append(scheduler)
        return scheduler

    yield make
    for scheduler in schedulers:
        scheduler.stop()


def test_tasks_queued_while_busy_run_as_one_batch_and_get_their_rows(
    make_scheduler,
):
    scheduler = make_scheduler(max_batch_size=16)
    model = GatedModel()
    sizes = [1, 2, 1, 3]
    threads, results, inputs = _pile_up(scheduler, model, sizes)
    model.gate.set()
    for thread in threads:
        thread.join(30)
    assert [len(c) for c in model.calls] == [1, 7]
    # The batch is the queued tasks' rows in arrival order (any order of
    # arrival is fine; each task must get exactly its rows back).
    batch = model.calls[1]
    for i, size in enumerate(sizes):
        np.testing.assert_array_equal(results[i]["y"], 2 * inputs[i])
        np.testing.assert_array_equal(results[i]["s"], inputs[i].sum(1))
        assert any(
            np.array_equal(batch[j : j + size], inputs[i])
            for j in range(len(batch) - size + 1)
        )
    assert scheduler.batch_size_counts() == {1: 1, 7: 1}
    assert scheduler.rows_run == 8


def test_a_task_that_does_not_fit_closes_the_batch(make_scheduler):
    scheduler = make_scheduler(max_batch_size=8)
    model = GatedModel()
    threads, results, inputs = _pile_up(scheduler, model, [3])
    for i, size in ((1, 3), (2, 3)):  # 3 + 3 fit; the third opens batch 2
        inputs[i] = _rows(100 * i, size)
        threads.append(_submit(scheduler, model, inputs[i], results, i))
        _wait_until(lambda: scheduler.queued_rows() == 3 + 3 * i)
    model.gate.set()
    for thread in threads:
        thread.join(30)
    assert [len(c) for c in model.calls] == [1, 6, 3]
    np.testing.assert_array_equal(model.calls[2], inputs[2])
    for i in range(3):
        np.testing.assert_array_equal(results[i]["y"], 2 * inputs[i])


def test_a_task_over_max_batch_size_is_refused(make_scheduler):
    scheduler = make_scheduler(max_batch_size=4)
    model = GatedModel(hold_first=False)
    with pytest.raises(ServingError) as error:
        scheduler.run(model, {"x": tf.constant(_rows(0, 5))}, 5)
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "Task size 5" in error.value.message
    assert "maximum input batch size 4" in error.value.message
    assert model.calls == []


def test_a_full_queue_answers_unavailable(make_scheduler):
    scheduler = make_scheduler(max_batch_size=2, max_enqueued_batches=1)
    model = GatedModel()
    threads, results, inputs = _pile_up(scheduler, model, [2])
    with pytest.raises(ServingError) as error:
        scheduler.run(model, {"x": tf.constant(_rows(50, 1))}, 1)
    assert error.value.code == grpc.StatusCode.UNAVAILABLE
    assert "max_enqueued_batches=1" in error.value.message
    model.gate.set()
    for thread in threads:
        thread.join(30)
    np.testing.assert_array_equal(results[0]["y"], 2 * inputs[0])


def test_a_failing_row_fails_only_its_own_request(make_scheduler):
    scheduler = make_scheduler(max_batch_size=16)
    model = GatedModel()
    bad = _rows(0, 2)
    bad[1, 0] = -1.0
    threads, results, inputs = _pile_up(scheduler, model, [1, 2, 1])
    inputs[3] = bad
    threads.append(_submit(scheduler, model, bad, results, 3))
    _wait_until(lambda: scheduler.queued_rows() == 6)
    model.gate.set()
    for thread in threads:
        thread.join(30)
    # The batch of 6 failed, then each task ran alone.
    assert [len(c) for c in model.calls[:2]] == [1, 6]
    assert sorted(len(c) for c in model.calls[2:]) == [1, 1, 2, 2]
    for i in range(3):
        np.testing.assert_array_equal(results[i]["y"], 2 * inputs[i])
    assert isinstance(results[3], ServingError)
    assert results[3].code == grpc.StatusCode.INVALID_ARGUMENT


def test_outputs_without_a_batch_dimension_run_each_task_alone(
    make_scheduler,
):
    scheduler = make_scheduler(max_batch_size=16)
    model = GatedModel(batch_outputs=False)
    threads, results, inputs = _pile_up(scheduler, model, [2, 1])
    model.gate.set()
    for thread in threads:
        thread.join(30)
    assert [len(c) for c in model.calls[:2]] == [1, 3]
    assert sorted(len(c) for c in model.calls[2:]) == [1, 2]
    for i in range(2):
        np.testing.assert_array_equal(results[i]["y"], 2 * inputs[i])
        assert results[i]["scale"] == 2.0


def test_batches_are_padded_to_the_next_allowed_size(make_scheduler):
    scheduler = make_scheduler(
        max_batch_size=8, allowed_batch_sizes=(2, 4, 8)
    )
    model = GatedModel()
    threads, results, inputs = _pile_up(scheduler, model, [1, 2])
    model.gate.set()
    for thread in threads:
        thread.join(30)
    # 1 row runs at 2 and 3 rows at 4, padded with copies of the first row.
    assert [len(c) for c in model.calls] == [2, 4]
    np.testing.assert_array_equal(model.calls[1][3], model.calls[1][0])
    for i in range(2):
        np.testing.assert_array_equal(results[i]["y"], 2 * inputs[i])
    assert scheduler.batch_size_counts() == {1: 1, 3: 1}


def test_tasks_of_other_shapes_or_filters_are_not_mixed(make_scheduler):
    scheduler = make_scheduler(max_batch_size=16)
    model = GatedModel()
    threads, results, inputs = _pile_up(scheduler, model, [1, 1])
    wide = np.ones((1, 3), np.float32)

    def work():
        results["wide"] = scheduler.run(model, {"x": tf.constant(wide)}, 1)

    def filtered():
        results["s_only"] = scheduler.run(
            model, {"x": tf.constant(_rows(9, 1))}, 1, output_filter=("s",)
        )

    extra = [threading.Thread(target=work), threading.Thread(target=filtered)]
    for thread in extra:
        thread.start()
    _wait_until(lambda: scheduler.queued_rows() == 4)
    model.gate.set()
    for thread in threads + extra:
        thread.join(30)
    assert sorted(len(c) for c in model.calls) == [1, 1, 1, 2]
    np.testing.assert_array_equal(results["wide"]["y"], 2 * wide)
    assert set(results["s_only"]) == {"s"}


def test_a_lone_task_waits_for_the_timeout_then_runs(make_scheduler):
    scheduler = make_scheduler(max_batch_size=2, batch_timeout_micros=50_000)
    model = GatedModel(hold_first=False)
    out = scheduler.run(model, {"x": tf.constant(_rows(0, 1))}, 1)
    np.testing.assert_array_equal(out["y"], 2 * _rows(0, 1))


def test_a_full_batch_runs_before_its_timeout(make_scheduler):
    # A 10-minute timeout: the test ends only because a full batch runs.
    scheduler = make_scheduler(
        max_batch_size=3, batch_timeout_micros=600_000_000
    )
    model = GatedModel(hold_first=False)
    results, inputs, threads = {}, {}, []
    for i, size in enumerate([1, 2]):
        inputs[i] = _rows(10 * i, size)
        threads.append(_submit(scheduler, model, inputs[i], results, i))
    for thread in threads:
        thread.join(60)
        assert not thread.is_alive()
    assert [len(c) for c in model.calls] == [3]
    for i in range(2):
        np.testing.assert_array_equal(results[i]["y"], 2 * inputs[i])


def test_stop_runs_what_is_queued_then_refuses(make_scheduler):
    scheduler = make_scheduler(max_batch_size=16)
    model = GatedModel()
    threads, results, inputs = _pile_up(scheduler, model, [2])
    stopper = threading.Thread(target=scheduler.stop)
    stopper.start()
    model.gate.set()
    stopper.join(30)
    for thread in threads:
        thread.join(30)
    np.testing.assert_array_equal(results[0]["y"], 2 * inputs[0])
    with pytest.raises(ServingError) as error:
        scheduler.run(model, {"x": tf.constant(_rows(0, 1))}, 1)
    assert error.value.code == grpc.StatusCode.UNAVAILABLE


def test_a_batch_too_big_for_memory_runs_each_request_alone(make_scheduler):
    # The batch call fails with a TF error (not a request's fault); each
    # task then runs alone and answers, none gets INTERNAL.
    class OutOfMemoryOver2Rows(GatedModel):
        def __call__(self, feeds, output_filter):
            if feeds["x"].shape[0] > 2:
                raise tf.errors.ResourceExhaustedError(None, None, "OOM")
            return super().__call__(feeds, output_filter)

    scheduler = make_scheduler(max_batch_size=16)
    model = OutOfMemoryOver2Rows()
    threads, results, inputs = _pile_up(scheduler, model, [1, 2])
    model.gate.set()
    for thread in threads:
        thread.join(30)
    for i in range(2):
        np.testing.assert_array_equal(results[i]["y"], 2 * inputs[i])
    # A request that is too big alone gets the TF error's own code.
    with pytest.raises(ServingError) as error:
        scheduler.run(model, {"x": tf.constant(_rows(0, 3))}, 3)
    assert error.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
