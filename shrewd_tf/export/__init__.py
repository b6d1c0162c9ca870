"""Export: the TF-Serving SavedModel of a trained run (`saved_model`)."""
