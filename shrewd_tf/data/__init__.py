"""Data: the TFRecord schema and readers (`records`), sources (Fashion-MNIST
IDX and tfds in `tfds_sources`, captioned image folders in `image_folder`),
the one image preprocessing shared with make_tfrecords and the exported
model (`preprocess`) and the input pipelines that feed training and
evaluation (`pipelines`)."""
