"""The faiss engines behind `BinaryHammingIndex`: one per method, its
search settings, and the OpenMP thread count around faiss calls."""

import contextlib

import faiss


@contextlib.contextmanager
def faiss_threads(num_threads):
    """Runs faiss on `num_threads` OpenMP threads, restoring the old count
    (no calls into OpenMP when it is already that count)."""
    previous = faiss.omp_get_max_threads()
    if previous == num_threads:
        yield
        return
    faiss.omp_set_num_threads(num_threads)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


def new_engine(method, code_bits, params, packed):
    """An empty faiss binary index of `method` over `code_bits`-bit codes
    (ivf: trained on `packed`, with `params["nlist"]` lists).

    Raises:
        ValueError: ivf with fewer codes than lists.
    """
    d, p = code_bits, params
    if method == "flat":
        return faiss.IndexBinaryFlat(d)
    if method == "mih":
        return faiss.IndexBinaryMultiHash(d, p["nhash"], d // p["nhash"])
    if method == "hnsw":
        engine = faiss.IndexBinaryHNSW(d, p["M"])
        engine.hnsw.efConstruction = p["ef_construction"]
        return engine
    # ivf: needs training codes.
    if len(packed) < p["nlist"]:
        raise ValueError(
            f"method='ivf' needs at least nlist={p['nlist']} codes to "
            f"train. Received: {len(packed)} codes"
        )
    quantizer = faiss.IndexBinaryFlat(d)
    engine = faiss.IndexBinaryIVF(quantizer, d, p["nlist"])
    engine.own_fields = True
    quantizer.this.disown()
    engine.train(packed)
    return engine


def apply_search_params(engine, method, params):
    """Sets the search settings of `params` on an engine of `method`."""
    if method == "mih":
        engine.nflip = params["nflip"]
    elif method == "ivf" and params["nprobe"] is not None:
        engine.nprobe = params["nprobe"]
    elif method == "hnsw":
        engine.hnsw.efSearch = params["ef_search"]
