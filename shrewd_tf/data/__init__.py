"""Data: the TFRecord schema and readers (`records`), sources (Fashion-MNIST
IDX and tfds in `tfds_sources`, captioned image folders in `image_folder`,
`make_tfrecords` directories in `tfrecord_splits`), the one image
preprocessing shared with make_tfrecords and the exported model
(`preprocess`), the tf.data input pipeline (`image_dataset`), the class
semantics (`class_semantics`) and what feeds training and evaluation
(`pipelines`)."""
