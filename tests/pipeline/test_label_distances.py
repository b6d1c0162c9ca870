"""Tests for the label_distances job: Beam row blocks vs direct computation.

Each matrix the job writes is compared with the same kind computed directly
by `shrewd_tf.semantics.distances` (one call, no blocks), with a few entries
checked against NLTK's `wup_similarity` or a hand-computed tree. `bert` uses
the fake encoder of tests/support/sentence_encoders, injected with
`run(options, model_handler=...)`. The command line is tested through
`main(argv)`, `parse_args` and `python -m pipeline.label_distances --help`.
"""

import json
import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from apache_beam.testing import test_pipeline  # noqa: E402

from pipeline import label_distances  # noqa: E402
from shrewd_tf.semantics import class_synsets  # noqa: E402
from shrewd_tf.data import records as data  # noqa: E402
from shrewd_tf.semantics import distances as semantics  # noqa: E402
from shrewd_tf.semantics import wordnet_corpus  # noqa: E402
from tests.paths import REPO_ROOT  # noqa: E402
from tests.paths import SHARED_REFERENCE  # noqa: E402
from tests.support.sentence_encoders import FAKE_ENCODER_NAME  # noqa: E402
from tests.support.sentence_encoders import FakeEncoderHandler  # noqa: E402
from tests.support.sentence_encoders import fake_embedding  # noqa: E402

CIFAR_HIERARCHY = SHARED_REFERENCE / "cifar100-hierarchy"


@pytest.fixture(scope="module")
def wordnet_root(tmp_path_factory):
    """The default nltk_data root, else a corpus built into a temp dir."""
    try:
        semantics.load_wordnet()
        return None
    except FileNotFoundError:
        pass
    source = wordnet_corpus.DEBIAN_WORDNET_DIR
    if not os.path.isfile(os.path.join(source, "data.noun")):
        pytest.skip(f"Debian WordNet missing in {source}: apt-get install "
                    "wordnet-base wordnet-sense-index")
    root = tmp_path_factory.mktemp("nltk_data")
    wordnet_corpus.build_nltk_wordnet(target_root=root)
    return str(root)


def run_job(wordnet_root=None, model_handler=None, **options):
    """`run(LabelDistancesOptions(**options))` on a TestPipeline."""
    return label_distances.run(
        label_distances.LabelDistancesOptions(wordnet_root=wordnet_root,
                                              **options),
        test_pipeline=test_pipeline.TestPipeline(runner="FnApiRunner"),
        model_handler=model_handler,
    )


def read_outputs(prefix):
    with open(f"{prefix}.json") as f:
        return np.load(f"{prefix}.npy"), json.load(f)


def test_wup_dataset_matches_direct_matrix_and_nltk(tmp_path, wordnet_root):
    prefix = str(tmp_path / "fmnist_wup")
    result = run_job(wordnet_root, kind="wup", dataset="fashion_mnist",
                     output=prefix, rows_per_block=3)

    matrix, meta = read_outputs(prefix)
    assert result == label_distances.LabelDistancesResult(
        matrix_path=prefix + ".npy", metadata_path=prefix + ".json",
        kind="wup", num_classes=10)
    synsets = class_synsets.FASHION_MNIST_SYNSETS
    wordnet = semantics.load_wordnet(wordnet_root)
    direct = semantics.wup_distance_matrix(synsets, wordnet)
    assert matrix.dtype == np.float64 and matrix.shape == (10, 10)
    np.testing.assert_array_equal(matrix, direct)
    for i, j in ((0, 6), (5, 9), (2, 4)):  # NLTK, the paper's measure
        a, b = wordnet.synset(synsets[i]), wordnet.synset(synsets[j])
        expected = 1 - max(a.wup_similarity(b), b.wup_similarity(a))
        assert matrix[i, j] == pytest.approx(expected, abs=1e-12)
    assert meta["kind"] == "wup"
    assert meta["class_names"] == list(class_synsets.FASHION_MNIST_CLASSES)
    assert meta["synsets"] == list(synsets)
    assert meta["source"] == "dataset:fashion_mnist"
    assert meta["num_classes"] == 10
    assert sorted(os.listdir(tmp_path)) == ["fmnist_wup.json",
                                            "fmnist_wup.npy"]


def write_info(directory, class_names):
    os.makedirs(directory)
    data.DatasetInfo(image_shape=(4, 4, 1), class_names=tuple(class_names),
                     splits={"train": 0}).save(directory)


def test_wup_tfrecord_dir_with_synsets_file(tmp_path, wordnet_root):
    # A name with a space, a name that is a synset name, and two classes
    # mapped to one synset (distance 0 between them).
    names = ["Ankle boot", "dog.n.01", "house cat", "kitty", "Pickup truck"]
    synsets = ["boot.n.01", "dog.n.01", "domestic_cat.n.01",
               "domestic_cat.n.01", "pickup.n.01"]
    tfrecord_dir = str(tmp_path / "records")
    write_info(tfrecord_dir, names)
    synsets_file = tmp_path / "synsets.txt"
    synsets_file.write_text(
        "# name synset\nAnkle boot boot.n.01\n\nhouse cat domestic_cat.n.01\n"
        "kitty domestic_cat.n.01\nPickup truck   pickup.n.01\n")
    prefix = str(tmp_path / "out" / "wup.npy")  # a .npy suffix is dropped

    run_job(wordnet_root, kind="wup", tfrecord_dir=tfrecord_dir,
            synsets_file=str(synsets_file), output=prefix, rows_per_block=2)

    matrix, meta = read_outputs(str(tmp_path / "out" / "wup"))
    direct = semantics.wup_distance_matrix(
        synsets, semantics.load_wordnet(wordnet_root))
    np.testing.assert_array_equal(matrix, direct)
    assert matrix[2, 3] == 0.0 and matrix[0, 2] > 0
    assert meta["synsets"] == synsets
    assert meta["class_names"] == names
    assert meta["source"] == os.path.abspath(tfrecord_dir)


def test_lcs_small_tree_by_hand_from_the_command_line(tmp_path):
    # root -> A -> {a1, a2};  root -> B -> {b1, B2 -> b2}
    # heights: leaves 0, A 1, B2 1, B 2, root 3.
    hierarchy = tmp_path / "tree.txt"
    hierarchy.write_text("root A\nroot B\nA a1\nA a2\nB b1\nB B2\nB2 b2\n")
    ids = tmp_path / "ids.txt"
    ids.write_text("a1 first\na2 second\nb1 third\nb2 fourth\n")
    tfrecord_dir = str(tmp_path / "records")
    write_info(tfrecord_dir, ["fourth", "first", "third", "second"])
    prefix = str(tmp_path / "lcs")

    assert label_distances.main([
        "--kind", "lcs", "--tfrecord-dir", tfrecord_dir,
        "--hierarchy-file", str(hierarchy), "--class-ids-file", str(ids),
        "--output", prefix, "--rows-per-block", "3",
        "--runner=FnApiRunner"]) == 0

    matrix, meta = read_outputs(prefix)
    # classes in label order: b2, a1, b1, a2
    expected = np.array([
        [0, 1, 2 / 3, 1],
        [1, 0, 1, 1 / 3],
        [2 / 3, 1, 0, 1],
        [1, 1 / 3, 1, 0],
    ])
    np.testing.assert_allclose(matrix, expected, rtol=0, atol=1e-15)
    assert meta["node_ids"] == ["b2", "a1", "b1", "a2"]
    assert meta["synsets"] is None


def test_lcs_cifar100_reference_matches_direct(tmp_path):
    edges_file = CIFAR_HIERARCHY / "cifar.parent-child.txt"
    ids_file = CIFAR_HIERARCHY / "class_names.txt"
    if not edges_file.is_file():
        pytest.skip(f"{edges_file} missing")
    prefix = str(tmp_path / "cifar_lcs")
    run_job(kind="lcs", dataset="cifar100", hierarchy_file=str(edges_file),
            class_ids_file=str(ids_file), output=prefix, rows_per_block=7)

    matrix, _ = read_outputs(prefix)
    by_name = dict(reversed(line.split()) for line in
                   ids_file.read_text().splitlines() if line.strip())
    ids = [by_name[n] for n in class_synsets.CIFAR100_CLASSES]
    direct = semantics.lcs_height_distance_matrix(
        semantics.read_parent_child_edges(edges_file), ids)
    np.testing.assert_array_equal(matrix, direct)


def test_bert_embeds_definitions_and_matches_direct(tmp_path, wordnet_root):
    prefix = str(tmp_path / "fmnist_bert")
    run_job(wordnet_root, FakeEncoderHandler(max_batch_size=3), kind="bert",
            dataset="fashion_mnist", output=prefix, rows_per_block=4)

    matrix, meta = read_outputs(prefix)
    definitions = semantics.synset_definitions(
        class_synsets.FASHION_MNIST_SYNSETS,
        semantics.load_wordnet(wordnet_root))
    vectors = np.stack([fake_embedding(d) for d in definitions])
    direct = semantics.embedding_distance_matrix(vectors, "cosine")
    np.testing.assert_allclose(matrix, direct, rtol=0, atol=1e-12)
    # the slow loop: 1 - cos for one pair
    a, b = vectors[1].astype(np.float64), vectors[7].astype(np.float64)
    cosine = sum(x * y for x, y in zip(a, b)) / np.sqrt(
        sum(x * x for x in a) * sum(y * y for y in b))
    assert matrix[1, 7] == pytest.approx(1 - cosine, abs=1e-12)
    assert meta["text_encoder"] == FAKE_ENCODER_NAME
    assert meta["definitions"] == definitions


def test_failed_run_leaves_previous_outputs(tmp_path, wordnet_root):
    prefix = tmp_path / "bert"
    (tmp_path / "bert.npy").write_bytes(b"old matrix")
    (tmp_path / "bert.json").write_text("old metadata")
    with pytest.raises(Exception, match="fake encoder failure"):
        run_job(wordnet_root, FakeEncoderHandler(fail=True), kind="bert",
                dataset="fashion_mnist", output=str(prefix))
    assert (tmp_path / "bert.npy").read_bytes() == b"old matrix"
    assert (tmp_path / "bert.json").read_text() == "old metadata"
    assert sorted(os.listdir(tmp_path)) == ["bert.json", "bert.npy"]


def test_class_and_flag_errors(tmp_path, wordnet_root):
    tfrecord_dir = str(tmp_path / "records")
    write_info(tfrecord_dir, ["dog.n.01", "Ankle boot"])
    output = str(tmp_path / "x")
    with pytest.raises(ValueError, match="Ankle boot"):
        run_job(wordnet_root, kind="wup", tfrecord_dir=tfrecord_dir,
                output=output)
    bad = tmp_path / "bad.txt"
    bad.write_text("Ankle boot boot.n.99\n")
    with pytest.raises(ValueError, match="boot.n.99"):
        run_job(wordnet_root, kind="wup", tfrecord_dir=tfrecord_dir,
                synsets_file=str(bad), output=output)
    verb = tmp_path / "verb.txt"
    verb.write_text("Ankle boot run.v.01\n")
    with pytest.raises(ValueError, match="noun synsets"):
        run_job(wordnet_root, kind="wup", tfrecord_dir=tfrecord_dir,
                synsets_file=str(verb), output=output)
    with pytest.raises(ValueError, match="--hierarchy-file"):
        run_job(kind="lcs", dataset="cifar100", output=output)
    with pytest.raises(ValueError, match="kind='cosine'"):
        run_job(kind="cosine", dataset="cifar100", output=output)
    with pytest.raises(ValueError, match="rows_per_block=0"):
        run_job(kind="lcs", dataset="cifar100", output=output,
                hierarchy_file=str(bad), rows_per_block=0)
    with pytest.raises(TypeError, match="LabelDistancesOptions.*main"):
        label_distances.run(["--kind", "wup", "--dataset", "cifar100",
                             "--output", output])
    with pytest.raises(SystemExit):
        label_distances.parse_args(["--kind", "wup", "--output", "x",
                                    "--dataset", "cifar100",
                                    "--tfrecord-dir", tfrecord_dir])
    assert sorted(os.listdir(tmp_path)) == ["bad.txt", "records", "verb.txt"]


def test_module_runs_as_a_script():
    completed = subprocess.run(
        [sys.executable, "-m", "pipeline.label_distances", "--help"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    for flag in ("--kind", "--dataset", "--tfrecord-dir", "--synsets-file",
                 "--hierarchy-file", "--class-ids-file", "--rows-per-block"):
        assert flag in completed.stdout

