"""Training: devices, strategy and precision (`distribution`), the
optimiser and eq. 1 (`objective`), the callbacks (`callbacks`) and the
`model.fit` driver (`trainer`)."""
