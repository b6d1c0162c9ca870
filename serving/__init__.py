"""TF-Serving-compatible endpoints and retrieval."""
