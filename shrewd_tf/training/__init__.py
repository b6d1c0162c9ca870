"""Training: strategy, precision, optimiser and eq. 1 (`objective`), the
callbacks (`callbacks`) and the `model.fit` driver (`trainer`)."""
