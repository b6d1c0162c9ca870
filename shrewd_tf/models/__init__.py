"""Models: the image encoders (`encoders`), the SHREWD model and the one-hot
baseline (`shrewd_model`) and the code head's activations (`code_head`)."""
