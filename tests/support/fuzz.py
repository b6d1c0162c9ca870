"""Seeded generators of malformed REST requests and gRPC PredictRequests.

`rest_cases(seed, count)` returns `FuzzCase`s of these kinds (the `kind`
field), cycling through them until `count`:

* random_bytes: random bodies to `:predict` and `/v1/search`;
* wrong_types: valid JSON of the wrong shape or type in every field;
* nan: NaN / Infinity (Python's JSON extension) in codes and pixels;
* huge_k: k too large, negative, fractional, a string, a bool;
* png_bomb: a PNG whose header claims 30000 x 30000 pixels;
* image_bomb: real decompression bombs (`real_png_bomb`: a valid
  20000 x 20000 PNG of zeros, 390 KB) and headers declaring huge images
  in every format (`header_bomb`: JPEG, GIF screen or frames, BMP, WebP),
  all over the server's default max_image_pixels, and an animated WebP
  (`animated_webp`: TF 2.20's decoder would abort the server on it);
* deep_nesting: JSON nested 10^3 to 10^5 deep;
* traversal: `..`, `%2e%2e`, absolute paths and NULs in image, static
  and model paths;
* bad_base64: invalid characters, padding, types in `{"b64": ...}`;
* surrogates: lone surrogates (`"\\ud800"`) in keys and values;
* methods: PUT, DELETE, PATCH, OPTIONS on every route;
* raw: protocol abuse sent over a raw socket (bad request lines, bad
  headers, Content-Length mismatches, bad chunking, garbage).

`grpc_cases(seed)` returns (description, PredictRequest) pairs with wrong
dtypes, shapes, sizes, names and missing inputs.

Every case must be answered 4xx or 501 (`ok_statuses`; NaN cases may also
succeed) and never 500; raw cases may also be closed without an answer.
"""

import base64
import dataclasses
import json
import random

from tests.support.image_bombs import HEADER_BOMBS
from tests.support.image_bombs import animated_webp
from tests.support.image_bombs import header_bomb
from tests.support.image_bombs import png_bomb
from tests.support.image_bombs import real_png_bomb

MODEL = "enc"
_PREDICT = f"/v1/models/{MODEL}:predict"
_ROUTES = (
    _PREDICT,
    f"/v1/models/{MODEL}/versions/1:predict",
    "/v1/search",
)
CLIENT_ERRORS = frozenset(range(400, 500)) | {501}


@dataclasses.dataclass(frozen=True)
class FuzzCase:
    """One malformed request.

    Attributes:
        kind: generator name (see the module docstring).
        method, path, body, headers: an HTTP request (when raw is None).
        raw: bytes sent as-is over a socket.
        ok_statuses: statuses that pass.
    """

    kind: str
    method: str = "POST"
    path: str = _PREDICT
    body: bytes = b""
    headers: tuple = ()
    raw: bytes = None
    ok_statuses: frozenset = CLIENT_ERRORS


def _json(value):
    return json.dumps(value).encode("utf-8")


def _b64(data):
    return {"b64": base64.b64encode(data).decode("ascii")}


# === Generators: each takes a random.Random and returns one FuzzCase ===


def _random_bytes(rng):
    size = rng.choice([0, 1, 2, 7, 64, 1000, 20000])
    body = bytes(rng.getrandbits(8) for _ in range(size))
    if rng.random() < 0.3:
        body = b"{" + body  # looks like JSON for a byte
    return FuzzCase("random_bytes", path=rng.choice(_ROUTES), body=body)


_JUNK = [
    None,
    True,
    0,
    -1,
    1.5,
    "x",
    "",
    [],
    {},
    [[]],
    [None],
    {"b64": 3},
    {"a": {"b": []}},
    [1, "a", None],
    "A" * 300,
    2**70,
]


def _wrong_types(rng):
    junk = rng.choice(_JUNK)
    other = rng.choice(_JUNK)
    choice = rng.randrange(12)
    if choice == 0:
        body = junk
    elif choice == 1:
        body = {"instances": junk}
    elif choice == 2:
        body = {"inputs": junk}
    elif choice == 3:
        body = {"instances": [junk, other]}
    elif choice == 4:
        body = {"signature_name": junk, "instances": [other]}
    elif choice == 5:
        body = {"signature_name": "embed_pixels", "inputs": {"pixels": junk}}
    elif choice == 6:
        body = {"signature_name": "embed_pixels", "instances": [junk]}
    elif choice == 7:
        body = {"instances": [{"image_bytes": junk}]}
    elif choice == 8:
        body = {"instances": [], "inputs": junk}
    elif choice == 9:
        return FuzzCase(
            "wrong_types",
            path="/v1/search",
            body=_json({"code": junk, "k": rng.choice([1, 5, junk])}),
        )
    elif choice == 10:
        return FuzzCase(
            "wrong_types",
            path="/v1/search",
            body=_json(
                {
                    rng.choice(["bits", "image", "mode", "model"]): junk,
                    rng.choice(["code", "bits", "image"]): other,
                }
            ),
        )
    else:
        body = {"instances": [[junk] * rng.randrange(1, 4)]}
    if body is not None and not isinstance(body, (dict, list)) and (
        choice == 0
    ):
        body = [body]  # a bare scalar
    return FuzzCase(
        "wrong_types", path=rng.choice(_ROUTES[:2]), body=_json(body)
    )


def _nan(rng):
    value = rng.choice([float("nan"), float("inf"), float("-inf")])
    if rng.random() < 0.5:
        code = [0.5] * 16
        code[rng.randrange(16)] = value
        body = {"code": code, "k": 5, "mode": rng.choice(["binary", "float"])}
        path = "/v1/search"
    else:
        pixels = [[[[value, 0.0, 1.0]] * 2] * 2]
        body = {"signature_name": "embed_pixels", "inputs": {"pixels": pixels}}
        path = _PREDICT
    # JSON has no NaN; TF Serving's parser takes it, so success is fine.
    return FuzzCase(
        "nan",
        path=path,
        body=_json(body),
        ok_statuses=CLIENT_ERRORS | {200},
    )


def _huge_k(rng):
    k = rng.choice(
        ["1000000000", str(2**63), "1" + "0" * 400, "-1", "0", "1.5",
         "1e308", '"10"', "true", "null", "[5]", "Infinity"]
    )
    code = json.dumps([0.5] * 16)
    return FuzzCase(
        "huge_k",
        path="/v1/search",
        body=f'{{"code": {code}, "k": {k}}}'.encode(),
    )


def _png_bomb(rng):
    bomb = _b64(png_bomb(rng.choice([30000, 65535, (1 << 31) - 1]), 30000))
    if rng.random() < 0.5:
        return FuzzCase("png_bomb", body=_json({"instances": [bomb]}))
    return FuzzCase(
        "png_bomb", path="/v1/search", body=_json({"image": bomb, "k": 3})
    )


def _image_bomb(rng):
    choice = rng.random()
    if choice < 0.1:
        bomb = animated_webp()  # not a bomb: a decoder crash, refused too
    elif choice < 0.55:
        bomb = real_png_bomb()
    else:
        bomb = header_bomb(*rng.choice(HEADER_BOMBS))
    if rng.random() < 0.5:
        return FuzzCase(
            "image_bomb", path=rng.choice(_ROUTES[:2]),
            body=_json({"instances": [_b64(bomb)]}),
        )
    return FuzzCase(
        "image_bomb", path="/v1/search",
        body=_json({"image": _b64(bomb), "k": 3}),
    )


def _deep_nesting(rng):
    depth = rng.choice([1000, 5000, 30000, 100000])
    opener, closer = rng.choice([(b"[", b"]"), (b'{"a":', b"}")])
    inner = opener * depth + b"1" + closer * depth
    if rng.random() < 0.5:
        body = b'{"instances": ' + inner + b"}"
    else:
        body = inner
    return FuzzCase("deep_nesting", path=rng.choice(_ROUTES), body=body)


_TRAVERSALS = [
    "../../../../etc/passwd",
    "..%2F..%2F..%2Fetc%2Fpasswd",
    "%2e%2e/%2e%2e/etc/passwd",
    "/etc/passwd",
    "%2Fetc%2Fpasswd",
    "....//....//etc/passwd",
    "..\\..\\windows\\win.ini",
    "0%00.png",
    "%00",
    "-1",
    "99999999999999999999999",
    "1e3",
    "%ff%fe",
    "%ud800",
    "a" * 3000,
]


def _traversal(rng):
    target = rng.choice(_TRAVERSALS)
    path = rng.choice(
        [
            f"/v1/images/{target}",
            f"/static/{target}",
            f"/static/../{target}",
            f"/v1/models/{target}",
            f"/v1/models/{MODEL}/versions/{target}",
            f"/v1/models/{target}/metadata",
            f"/{target}",
        ]
    )
    if rng.random() < 0.1:  # an offset past the end is a fine query
        return FuzzCase(
            "traversal",
            method="GET",
            path=f"/v1/database?offset={target}&limit=2",
            ok_statuses=CLIENT_ERRORS | {200},
        )
    return FuzzCase("traversal", method="GET", path=path)


def _bad_base64(rng):
    value = rng.choice(
        [
            "@@@",
            "abc",
            "a===",
            "====",
            "YWJj\n",
            "YW Jj",
            "\u00e9\u00e9\u00e9\u00e9",
            "A" * 4001,
            3,
            None,
            [],
            {"b64": "AAAA"},
            "iVBORw0KGgo=",  # a PNG signature, cut
            "AAAA",
        ]
    )
    obj = {"b64": value}
    if rng.random() < 0.2:
        obj["extra"] = 1
    if rng.random() < 0.5:
        return FuzzCase("bad_base64", body=_json({"instances": [obj]}))
    return FuzzCase(
        "bad_base64",
        path="/v1/search",
        body=_json({rng.choice(["image", "bits"]): obj, "k": 3}),
    )


def _surrogates(rng):
    lone = rng.choice(["\\ud800", "\\udfff", "\\udbff", "\\udc00x"])
    body = rng.choice(
        [
            '{"instances": ["%s"]}',
            '{"instances": [{"b64": "%s"}]}',
            '{"%s": 1, "instances": [1]}',
            '{"signature_name": "%s", "instances": [1]}',
            '{"inputs": {"image_bytes": ["%s"]}}',
            '{"image": {"b64": "%s"}, "k": 1}',
            '{"code": [0.5], "mode": "%s"}',
            '{"code": [0.5], "model": "%s", "k": 1}',
            '["%s"]',
        ]
    ) % lone
    return FuzzCase("surrogates", path=rng.choice(_ROUTES), body=body.encode())


def _methods(rng):
    return FuzzCase(
        "methods",
        method=rng.choice(["PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"]),
        path=rng.choice(list(_ROUTES) + ["/", f"/v1/models/{MODEL}"]),
        body=rng.choice([b"", b"{}"]),
    )


def _raw(rng):
    body = b'{"instances": [1]}'
    choice = rng.randrange(14)
    if choice == 0:
        raw = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 300)))
        raw += b"\r\n\r\n"
    elif choice == 1:
        raw = b"GARBAGE\r\n\r\n"
    elif choice == 2:
        raw = b"GET /v1/models/enc HTTP/9.9\r\n\r\n"
    elif choice == 3:
        raw = b"GET /" + b"a" * rng.choice([9000, 70000]) + b" HTTP/1.1\r\n\r\n"
    elif choice == 4:
        raw = b"GET /v1/models/enc HTTP/1.1\r\nNoColonHere\r\n\r\n"
    elif choice == 5:
        raw = (
            b"GET /v1/models/enc HTTP/1.1\r\nX-Big: "
            + b"b" * 20000
            + b"\r\n\r\n"
        )
    elif choice == 6:  # body shorter than Content-Length, then EOF
        raw = (
            b"POST " + _PREDICT.encode() + b" HTTP/1.1\r\nContent-Length: "
            + str(len(body) + rng.randrange(1, 1000)).encode()
            + b"\r\n\r\n"
            + body
        )
    elif choice == 7:  # body longer than Content-Length: a bad 2nd request
        raw = (
            b"POST " + _PREDICT.encode() + b" HTTP/1.1\r\nContent-Length: 5"
            b"\r\n\r\n" + body
        )
    elif choice == 8:
        raw = (
            b"POST " + _PREDICT.encode() + b" HTTP/1.1\r\nContent-Length: "
            + rng.choice([b"-1", b"abc", b"1e3", b"99999999999999999999", b""])
            + b"\r\n\r\n"
            + body
        )
    elif choice == 9:
        raw = (
            b"POST " + _PREDICT.encode() + b" HTTP/1.1\r\nContent-Length: 3"
            b"\r\nContent-Length: 30\r\n\r\n" + body
        )
    elif choice == 10:
        raw = (
            b"POST " + _PREDICT.encode() + b" HTTP/1.1\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
            + rng.choice([b"zz\r\nab\r\n0\r\n\r\n", b"5\r\nab", b"0\r\n\r\n"])
        )
    elif choice == 11:
        raw = b"GET /v1/models/\x00enc\xff HTTP/1.1\r\n\r\n"
    elif choice == 12:
        raw = (
            b"GET http://evil.example/../../etc/passwd HTTP/1.1\r\n"
            b"Host: evil\r\n\r\n"
        )
    else:
        raw = b"GET /v1/models/enc HTTP/1.1\r\n" + b"X-A: a\r\n" * 200 + b"\r\n"
    if rng.random() < 0.5 and b" HTTP/1.1\r\n" in raw:
        raw = raw.replace(b" HTTP/1.1\r\n", b" HTTP/1.1\r\nHost: fuzz\r\n", 1)
    return FuzzCase("raw", raw=raw)


GENERATORS = {
    "random_bytes": (_random_bytes, 150),
    "wrong_types": (_wrong_types, 250),
    "nan": (_nan, 50),
    "huge_k": (_huge_k, 50),
    "png_bomb": (_png_bomb, 12),
    "image_bomb": (_image_bomb, 24),
    "deep_nesting": (_deep_nesting, 24),
    "traversal": (_traversal, 110),
    "bad_base64": (_bad_base64, 110),
    "surrogates": (_surrogates, 60),
    "methods": (_methods, 40),
    "raw": (_raw, 160),
}


def rest_cases(seed=0):
    """The seeded list of REST fuzz cases (1,040 with the default mix)."""
    rng = random.Random(seed)
    cases = []
    for make, count in GENERATORS.values():
        cases.extend(make(rng) for _ in range(count))
    rng.shuffle(cases)
    return cases


# === gRPC ===


def grpc_cases(seed=0):
    """(description, PredictRequest, may succeed) triples: malformed,
    or (may succeed) empty batches and images."""
    import numpy as np
    import tensorflow as tf
    from tensorflow.core.framework import tensor_pb2
    from tensorflow.core.framework import types_pb2
    from tensorflow_serving.apis import predict_pb2

    rng = random.Random(seed)
    cases = []

    def request(model=MODEL, signature="", version=None):
        r = predict_pb2.PredictRequest()
        r.model_spec.name = model
        r.model_spec.signature_name = signature
        if version is not None:
            r.model_spec.version.value = version
        return r

    dtypes = [
        tf.float32,
        tf.float64,
        tf.int32,
        tf.int64,
        tf.uint8,
        tf.bool,
        tf.half,
    ]
    for dtype in dtypes:  # wrong dtype for the bytes input
        r = request()
        r.inputs["image_bytes"].CopyFrom(
            tf.make_tensor_proto(np.zeros([1], dtype.as_numpy_dtype))
        )
        cases.append((f"bytes input as {dtype.name}", r))
        if dtype != tf.float32:
            r = request(signature="embed_pixels")
            r.inputs["pixels"].CopyFrom(
                tf.make_tensor_proto(
                    np.zeros([1, 2, 2, 3], dtype.as_numpy_dtype)
                )
            )
            cases.append((f"pixels as {dtype.name}", r))
    for shape in ([], [3], [2, 2], [1, 2, 2], [1, 2, 2, 4], [0, 2, 2, 3],
                  [1, 0, 0, 3], [1, 1, 1, 1, 3]):
        r = request(signature="embed_pixels")
        r.inputs["pixels"].CopyFrom(
            tf.make_tensor_proto(np.zeros(shape, np.float32))
        )
        cases.append((f"pixels shape {shape}", r, 0 in shape))
    for _ in range(50):  # tensor_content / shape size mismatches
        r = request(signature="embed_pixels")
        proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
        first = rng.choice([1, 2, 3, 10**6, 2**40, 2**62, -1])
        for size in (first, 2, 2, 3):
            proto.tensor_shape.dim.add(size=size)
        if rng.random() < 0.5:
            proto.tensor_content = bytes(rng.randrange(1, 64))
            padded = False
        else:
            # Fewer values than elements: TF repeats the last one.
            proto.float_val.extend([0.5] * rng.randrange(1, 5))
            padded = 1 <= first <= 3
        r.inputs["pixels"].CopyFrom(proto)
        cases.append(("pixels content/shape mismatch", r, padded))
    for _ in range(30):  # string tensors of the wrong count, junk bytes
        r = request()
        proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING)
        proto.tensor_shape.dim.add(size=rng.choice([0, 2, 10**9]))
        proto.string_val.append(bytes(rng.getrandbits(8) for _ in range(20)))
        r.inputs["image_bytes"].CopyFrom(proto)
        cases.append(("string count mismatch / junk", r))
    r = request()
    r.inputs["image_bytes"].CopyFrom(
        tf.make_tensor_proto([png_bomb()], dtype=tf.string)
    )
    cases.append(("PNG bomb", r))
    for description, bomb in (
        ("real PNG bomb", real_png_bomb()),
        ("GIF frames bomb", header_bomb("gif_frames", 8000, 8000)),
        ("animated WebP (decoder crash) bomb", animated_webp()),
    ):
        r = request()
        r.inputs["image_bytes"].CopyFrom(
            tf.make_tensor_proto([bomb], dtype=tf.string)
        )
        cases.append((description, r))
    r = request()
    r.inputs["image_bytes"].CopyFrom(
        tf.make_tensor_proto([b"x"] * 1000, dtype=tf.string)
    )
    cases.append(("batch over max_batch_size", r))
    cases.append(("no inputs", request()))
    r = request()
    r.inputs["nope"].CopyFrom(tf.make_tensor_proto([b"x"], dtype=tf.string))
    cases.append(("unknown input", r))
    r = request()
    r.inputs["image_bytes"].CopyFrom(
        tf.make_tensor_proto([b"x"], dtype=tf.string)
    )
    r.inputs["extra"].CopyFrom(tf.make_tensor_proto([1.0]))
    cases.append(("extra input", r))
    r = request()
    r.inputs["image_bytes"].CopyFrom(tensor_pb2.TensorProto(dtype=999))
    cases.append(("unknown dtype enum", r))
    r = request()
    r.inputs["image_bytes"].CopyFrom(
        tf.make_tensor_proto([b"x"], dtype=tf.string)
    )
    r.output_filter.append("nope")
    cases.append(("unknown output_filter", r))
    for model, signature, version in (
        ("", "", None),
        ("nope", "", None),
        (MODEL, "nope", None),
        (MODEL, "", 99),
        ("\u00e9" * 100, "", None),
    ):
        r = request(model, signature, version)
        r.inputs["image_bytes"].CopyFrom(
            tf.make_tensor_proto([b"x"], dtype=tf.string)
        )
        cases.append((f"model spec {model[:8]!r}/{signature}/{version}", r))
    return [case if len(case) == 3 else (*case, False) for case in cases]
