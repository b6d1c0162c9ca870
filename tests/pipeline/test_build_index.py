"""The build_index job: codes, dead letters, indexes and atomic output."""

import glob
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from pipeline import build_index
from pipeline import bulk_encode
from pipeline.dead_letters import read_dead_letters
from shrewd_tf.data import records as data
from shrewd_tf.retrieval import registry as index_lib
from shrewd_tf.retrieval import builder as index_builder
from tests.paths import REPO_ROOT
from tests.support import encoders as encoder_fixtures

NUM_GOOD = 100


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A model dir (version 1), and TFRecords: test = 100 good + 3 bad."""
    root = tmp_path_factory.mktemp("inputs")
    model_dir = str(root / "export" / "fake")
    encoder_fixtures.save_fake_encoder(os.path.join(model_dir, "1"))
    good = encoder_fixtures.make_records(NUM_GOOD, seed=7)
    bad = [
        data.ImageRecord(id="test/corrupt", image=b"garbage", label=1),
        encoder_fixtures.black_record("test/black"),
        b"not a tf.train.Example",
    ]
    queries = encoder_fixtures.make_records(12, seed=8, prefix="train")
    tfrecord_dir = encoder_fixtures.write_records_dir(
        str(root / "tfrecords"),
        {"test": good[:50] + bad + good[50:], "train": queries},
    )
    version_dir = os.path.join(model_dir, "1")
    return {
        "model_dir": model_dir,
        "tfrecord_dir": tfrecord_dir,
        "good": sorted(good, key=lambda r: r.id),
        "codes": encoder_fixtures.encode_directly(
            version_dir, [r.image for r in sorted(good, key=lambda r: r.id)]
        ),
        "query_codes": encoder_fixtures.encode_directly(
            version_dir, [r.image for r in queries]
        ),
    }


def _argv(inputs, output_dir, *extra):
    return [
        "--tfrecord-dir", inputs["tfrecord_dir"],
        "--saved-model", inputs["model_dir"],
        "--output-dir", output_dir,
        "--batch-size", "32",
        *extra,
    ]


def _run(argv):
    """The job on a command line, as `main` runs it (minus the printing)."""
    return build_index.run(build_index.parse_options(argv))


def _hamming(queries, database):
    """Slow reference: [Q, N] numbers of differing bits (bit = code > 0.5)."""
    return (
        (queries[:, None, :] > 0.5) != (database[None, :, :] > 0.5)
    ).sum(axis=2)


def _check_hamming_search(index, database_ids, database, queries, k):
    """Tie-aware: the returned distances are the k smallest, and true."""
    found_ids, found = index.search(queries, k)
    reference = _hamming(queries, database)
    np.testing.assert_array_equal(found, np.sort(reference, axis=1)[:, :k])
    rows = {key: row for row, key in enumerate(database_ids)}
    for q in range(len(queries)):
        true = [reference[q, rows[key]] for key in found_ids[q]]
        np.testing.assert_array_equal(found[q], true)
    return found_ids


@pytest.fixture(scope="module")
def built(inputs, tmp_path_factory):
    output_dir = str(tmp_path_factory.mktemp("out") / "index")
    result = _run(
        _argv(inputs, output_dir, "--no-rerank", "--scann-brute-force")
    )
    return output_dir, result


def test_job_result_counts_and_dead_letters(inputs, built):
    output_dir, result = built
    assert result.num_codes == NUM_GOOD
    assert result.code_dim == 32
    assert result.saved_model_dir == os.path.join(inputs["model_dir"], "1")
    assert result.dead_letters == {
        build_index.PARSE_STAGE: 1,
        bulk_encode.ENCODE_STAGE: 1,
        bulk_encode.NONFINITE_STAGE: 1,
    }
    assert result.index_dirs == {
        "binary": os.path.join(output_dir, "binary"),
        "scann": os.path.join(output_dir, "scann"),
    }
    codes_dir = os.path.join(output_dir, "codes")
    letters = read_dead_letters(
        glob.glob(os.path.join(codes_dir, "dead_letters-*.jsonl"))
    )
    assert {d.id: d.stage for d in letters} == {
        "<22 bytes>": build_index.PARSE_STAGE,
        "test/corrupt": bulk_encode.ENCODE_STAGE,
        "test/black": bulk_encode.NONFINITE_STAGE,
    }
    info = index_builder.read_codes_info(codes_dir)
    assert info["count"] == NUM_GOOD and info["code_dim"] == 32
    assert info["split"] == "test" and info["indexes"] == ["binary", "scann"]
    # No staging or old copies left next to the output.
    assert sorted(os.listdir(output_dir)) == ["binary", "codes", "scann"]


def test_job_codes_equal_direct_savedmodel_calls(inputs, built):
    output_dir, _ = built
    ids, codes, metadata = index_builder.read_codes(
        os.path.join(output_dir, "codes")
    )
    assert ids.tolist() == [r.id for r in inputs["good"]]
    np.testing.assert_allclose(codes, inputs["codes"], rtol=1e-6, atol=1e-7)
    assert metadata["label"] == [r.label for r in inputs["good"]]
    assert metadata["caption"] == [r.caption for r in inputs["good"]]
    assert metadata["image_uri"] == ids.tolist()


def test_binary_index_equals_brute_force_hamming_with_metadata(
    inputs, built
):
    output_dir, _ = built
    index = index_lib.load_index(os.path.join(output_dir, "binary"))
    assert index.method == "flat" and not index.rerank
    good = inputs["good"]
    database_ids = [r.id for r in good]
    queries = np.concatenate([inputs["query_codes"], inputs["codes"][:5]])
    found_ids = _check_hamming_search(
        index, database_ids, inputs["codes"], queries, k=10
    )
    # A database code finds itself at distance 0.
    assert all(database_ids[i] in found_ids[12 + i] for i in range(5))
    by_id = {r.id: r for r in good}
    rows = index.metadata(found_ids)
    entries = [entry for row in rows for entry in row]
    for key, entry in zip(found_ids.ravel(), entries):
        record = by_id[key]
        assert entry == {
            "label": record.label,
            "label_name": record.label_name,
            "caption": record.caption,
            "image_uri": record.id,
        }


def test_scann_brute_force_equals_numpy_squared_l2(inputs, built):
    output_dir, _ = built
    index = index_lib.load_index(os.path.join(output_dir, "scann"))
    queries = inputs["query_codes"]
    found_ids, found = index.search(queries, 7)
    reference = ((queries[:, None, :] - inputs["codes"][None]) ** 2).sum(2)
    np.testing.assert_allclose(
        found, np.sort(reference, axis=1)[:, :7], rtol=1e-4, atol=1e-5
    )
    assert index.metadata(found_ids[:1])[0][0]["image_uri"] == found_ids[0, 0]


def test_failure_after_the_pipeline_keeps_the_previous_output(
    built, inputs, tmp_path
):
    output_dir = str(tmp_path / "index")
    shutil.copytree(built[0], output_dir)
    before = {
        path: open(path, "rb").read()
        for path in glob.glob(os.path.join(output_dir, "**"), recursive=True)
        if os.path.isfile(path)
    }
    # nlist > N fails after the pipeline, at the index build.
    with pytest.raises(ValueError, match="nlist=1000"):
        _run(
            _argv(inputs, output_dir, "--index", "binary",
                  "--binary-method", "ivf", "--nlist", "1000")
        )
    after = {
        path: open(path, "rb").read()
        for path in glob.glob(os.path.join(output_dir, "**"), recursive=True)
        if os.path.isfile(path)
    }
    assert after == before  # No staging folder or new file left either.


@pytest.mark.large
def test_multiprocess_direct_runner_replaces_the_output(
    built, inputs, tmp_path
):
    output_dir = str(tmp_path / "index")
    shutil.copytree(built[0], output_dir)
    old_manifest = index_builder.read_codes_info(
        os.path.join(output_dir, "codes")
    )
    result = _run(
        _argv(inputs, output_dir, "--index", "binary",
              "--runner=DirectRunner", "--direct_num_workers=2",
              "--direct_running_mode=multi_processing")
    )
    assert result.num_codes == NUM_GOOD
    ids, codes, _ = index_builder.read_codes(os.path.join(output_dir, "codes"))
    assert ids.tolist() == [r.id for r in inputs["good"]]
    np.testing.assert_allclose(codes, inputs["codes"], rtol=1e-6, atol=1e-7)
    info = index_builder.read_codes_info(os.path.join(output_dir, "codes"))
    assert info["indexes"] == ["binary"] and old_manifest["indexes"] == [
        "binary", "scann"
    ]
    # Default rerank: L1 over a shortlist of C = 4k >= N codes: exact L1.
    index = index_lib.load_index(os.path.join(output_dir, "binary"))
    assert index.rerank
    found_ids, found = index.search(inputs["query_codes"], 25)
    l1 = np.abs(
        inputs["query_codes"][:, None, :] - inputs["codes"][None]
    ).sum(2)
    np.testing.assert_allclose(found, np.sort(l1, axis=1)[:, :25], rtol=1e-5)
    # The ScaNN index was not rebuilt and is left as it was.
    assert sorted(os.listdir(output_dir)) == ["binary", "codes", "scann"]


def test_bad_split_signature_and_flags_fail_before_the_pipeline(
    inputs, tmp_path
):
    output_dir = str(tmp_path / "index")
    with pytest.raises(KeyError, match="validation"):
        _run(_argv(inputs, output_dir, "--split", "validation"))
    with pytest.raises(ValueError, match="one tf.string input"):
        _run(_argv(inputs, output_dir, "--signature", "pixels"))
    with pytest.raises(ValueError, match="method='flat': \\['nlist'\\]"):
        _run(_argv(inputs, output_dir, "--binary-method", "flat",
                   "--nlist", "4"))
    with pytest.raises(ValueError, match="'auto'.*\\['nhash'\\]"):
        _run(_argv(inputs, output_dir, "--nhash", "4"))
    with pytest.raises(ValueError, match="distance='cosine'"):
        build_index.run(build_index.BuildIndexOptions(
            inputs["tfrecord_dir"], inputs["model_dir"], output_dir,
            scann_params={"distance": "cosine"},
        ))
    with pytest.raises(TypeError, match="BuildIndexOptions"):
        build_index.run(_argv(inputs, output_dir))
    assert not os.path.exists(output_dir)


def test_typed_options_run_the_job(tmp_path, capsys):
    model = encoder_fixtures.save_fake_encoder(str(tmp_path / "model" / "3"))
    records = encoder_fixtures.make_records(24, seed=9)
    tfrecord_dir = encoder_fixtures.write_records_dir(
        str(tmp_path / "tfrecords"), {"test": records}
    )
    result = build_index.run(build_index.BuildIndexOptions(
        tfrecord_dir=tfrecord_dir,
        saved_model=str(tmp_path / "model"),
        output_dir=str(tmp_path / "index"),
        kinds=("binary",),
        rerank=False,
        image_uri_prefix="/data/",
    ))
    assert result.saved_model_dir == model and result.num_codes == 24
    index = index_lib.load_index(result.index_dirs["binary"])
    expected = encoder_fixtures.encode_directly(
        model, [r.image for r in records]
    )
    _check_hamming_search(
        index, sorted(r.id for r in records),
        expected[np.argsort([r.id for r in records], kind="stable")],
        expected, k=5,
    )
    assert index.metadata([records[4].id])[0] == {
        "label": records[4].label,
        "label_name": records[4].label_name,
        "caption": records[4].caption,
        "image_uri": "/data/" + records[4].id,
    }
    # main(argv): the same job from its flags, the result printed as JSON.
    assert build_index.main([
        "--tfrecord-dir", tfrecord_dir, "--saved-model", model,
        "--output-dir", str(tmp_path / "again"), "--index", "binary",
    ]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["num_codes"] == 24
    assert set(printed["index_dirs"]) == {"binary"}


def test_module_runs_as_a_script():
    completed = subprocess.run(
        [sys.executable, "-m", "pipeline.build_index", "--help"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    assert "--tfrecord-dir" in completed.stdout
    assert "--scann-num-leaves" in completed.stdout
