"""Export: the TF-Serving SavedModel of a trained run (`saved_model`), its
version directories (`versions`), what its saved_model.pb says
(`signatures`) and what TF Serving reads beside it: warm-up requests and
models.config (`tf_serving`)."""
