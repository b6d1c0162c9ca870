"""Models: the encoders and the SHREWD model (`shrewd_model`) and its code
head (`code_head`)."""
