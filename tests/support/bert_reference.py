"""A float64 numpy BERT forward pass shared by the BERT and text tests.

Written from the BERT paper and the Hugging Face `BertModel` description,
independently of the Keras code: it shares only the weight names.
"""

import numpy as np
import scipy.special


def layer_norm(x, gamma, beta, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def numpy_bert(ids, w, num_layers=6, num_heads=12, eps=1e-12):
    """One unpadded sequence through HF BertModel in float64.

    Returns:
        (states [n, H], pooled [H]).
    """
    n = len(ids)
    x = (w["embeddings.word_embeddings.weight"][ids]
         + w["embeddings.position_embeddings.weight"][:n]
         + w["embeddings.token_type_embeddings.weight"][0])
    x = layer_norm(x, w["embeddings.LayerNorm.weight"],
                   w["embeddings.LayerNorm.bias"], eps)
    hidden = x.shape[1]
    d = hidden // num_heads
    for i in range(num_layers):
        p = f"encoder.layer.{i}."

        def lin(h, name):
            return h @ w[p + name + ".weight"].T + w[p + name + ".bias"]

        q = lin(x, "attention.self.query").reshape(n, num_heads, d)
        k = lin(x, "attention.self.key").reshape(n, num_heads, d)
        v = lin(x, "attention.self.value").reshape(n, num_heads, d)
        context = np.zeros((n, num_heads, d))
        for h in range(num_heads):
            probs = softmax(q[:, h] @ k[:, h].T / np.sqrt(d))
            context[:, h] = probs @ v[:, h]
        attn = lin(context.reshape(n, hidden), "attention.output.dense")
        x = layer_norm(x + attn, w[p + "attention.output.LayerNorm.weight"],
                       w[p + "attention.output.LayerNorm.bias"], eps)
        inter = lin(x, "intermediate.dense")
        gelu = 0.5 * inter * (1.0 + scipy.special.erf(inter / np.sqrt(2.0)))
        x = layer_norm(x + lin(gelu, "output.dense"),
                       w[p + "output.LayerNorm.weight"],
                       w[p + "output.LayerNorm.bias"], eps)
    pooled = np.tanh(x[0] @ w["pooler.dense.weight"].T
                     + w["pooler.dense.bias"])
    return x, pooled
