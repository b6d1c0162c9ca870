"""shrewd_tf: SHREWD semantic deep hashing in Keras/TensorFlow.

Modules (one concept each): `losses`, `estimators`, `semantics`, `metrics`,
`datasets`, `models`, `training`, `text`, `index`, `export`, `cli`.
Import the module you need; this package imports nothing heavy on its own.
"""

__version__ = "0.1.0"
