"""Evaluation: ranking (`ranking`), the paper's metrics (`metrics`),
evaluating a run (`evaluate`), the report (`report`) and the ablation and
zero-shot experiments (`experiments`)."""
