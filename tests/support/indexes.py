"""Generated codes and slow NumPy references shared by the index tests."""

import numpy as np

CODE_BITS = 64


def clustered_codes(rng, num, centres, flip=0.05):
    """Float codes in [0, 1] whose bits are centre bits flipped with p=flip."""
    bits = centres[rng.integers(0, len(centres), num)]
    bits = bits ^ (rng.random(bits.shape) < flip)
    noise = rng.uniform(0.0, 0.45, bits.shape)
    return np.where(bits == 1, 1.0 - noise, noise).astype(np.float32)


def random_codes(rng, num, code_bits=CODE_BITS):
    return rng.random((num, code_bits)).astype(np.float32)


def hamming_reference(queries, database):
    """Slow exact Hamming distances [Q, N] from unpacked bits."""
    q_bits = queries > 0.5
    db_bits = database > 0.5
    return (q_bits[:, None, :] != db_bits[None, :, :]).sum(axis=2)


def xor_popcount_reference(query_bytes, database_bytes):
    """Hamming distances [Q, N] from packed bytes by XOR + popcount."""
    xor = query_bytes[:, None, :] ^ database_bytes[None, :, :]
    return np.unpackbits(xor, axis=2).sum(axis=2)


def tie_aware_recall(found, exact):
    """Mean multiset overlap of per-row distance values, over k."""
    overlap = 0
    for found_row, exact_row in zip(found, exact):
        values, counts = np.unique(found_row, return_counts=True)
        found_counts = dict(zip(values.tolist(), counts.tolist()))
        values, counts = np.unique(exact_row, return_counts=True)
        overlap += sum(
            min(count, found_counts.get(value, 0))
            for value, count in zip(values.tolist(), counts)
        )
    return overlap / found.size


def exact_top_k(distances, k):
    return np.sort(distances, axis=1)[:, :k]


def clustered_database_and_queries():
    """5000 database and 60 query float codes around 40 random centres."""
    rng = np.random.default_rng(0)
    centres = rng.integers(0, 2, (40, CODE_BITS))
    database = clustered_codes(rng, 5000, centres)
    return database, clustered_codes(rng, 60, centres)
