"""Data: the TFRecord schema and readers (`records`), sources (Fashion-MNIST
IDX and tfds in `tfds_sources`, captioned image folders in `image_folder`)
and the input pipelines that feed training and evaluation (`pipelines`)."""
