"""Apache Beam jobs and the TFX-style pipeline that chains them."""
