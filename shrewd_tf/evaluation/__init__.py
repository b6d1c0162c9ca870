"""Evaluation: ranking (`ranking`), the paper's retrieval metrics and code
statistics (`metrics`), the binary entropy of codes (`entropy`), the caption
protocol (`captions`), evaluating a run and its metrics files (`evaluate`),
the report (`report`) and the ablation and zero-shot experiments
(`experiments`)."""
