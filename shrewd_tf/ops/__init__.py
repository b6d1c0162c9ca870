"""Pure maths, no I/O and no models: pairwise distances (eq. 2), the kNN
estimators and the empirical KL of eq. 4, the target samples, and the
argument checks the library shares (`validation`)."""
