"""Images that declare more pixels than they carry, or decode to far more
memory than their size: decompression bombs for the pixel cap
(`shrewd_tf.data.image_header`) and the server fuzz (`fuzz`).

* `png_bomb`: a PNG header claiming a size, a tiny IDAT (decoding fails);
* `real_png_bomb`: a valid PNG of zeros, every row present, made without
  ever holding the image;
* `header_bomb`: JPEG, GIF, BMP and WebP headers declaring a size;
* `gif_bytes`: a GIF of given screen and frame rectangles;
* `animated_webp`: a small animated WebP (TF 2.20's decoder aborts on it).
"""

import functools
import struct
import zlib

def _png_chunk(tag, data):
    crc = zlib.crc32(tag + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)


def png_bomb(width=30000, height=30000):
    """A PNG header claiming width x height RGB pixels, with a tiny IDAT."""
    chunk = _png_chunk
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", idat)
        + chunk(b"IEND", b"")
    )


@functools.lru_cache(maxsize=8)
def real_png_bomb(width=20000, height=20000, bit_depth=8):
    """A valid greyscale PNG of zeros, width x height, every row present.

    Rows (a filter byte and zeros) go through one zlib stream a row at a
    time, so making it never holds the image: 20000 x 20000 at 8 bits is
    400 MB of pixels in a 390 KB file (deflate's ~1,000:1 on zeros).
    """
    row = bytes(1 + (width * bit_depth + 7) // 8)
    stream = zlib.compressobj()
    parts = [stream.compress(row) for _ in range(height)]
    parts.append(stream.flush())
    header = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", b"".join(parts))
        + _png_chunk(b"IEND", b"")
    )


def gif_bytes(screen, frames):
    """A GIF87a: screen (width, height), frames [(left, top, width,
    height)], each with a 2-colour local table and one tiny LZW sub-block
    (its pixels are not all there: for header tests and bombs)."""
    out = b"GIF87a" + struct.pack("<HHBBB", *screen, 0, 0, 0)
    for left, top, width, height in frames:
        out += b"\x2c" + struct.pack("<HHHHB", left, top, width, height,
                                      0x80)
        out += b"\x00\x00\x00\xff\xff\xff"  # local table: black, white
        out += b"\x02\x02\x44\x01\x00"  # code size 2; one sub-block; end
    return out + b"\x3b"


def header_bomb(kind, width, height):
    """Bytes whose header declares width x height pixels, with (almost) no
    pixel data: "jpeg" (SOF0 of a 1-pixel baseline JPEG rewritten), "gif"
    (the logical screen), "gif_frames" (screen and 4 frames of that size),
    "bmp" (BITMAPINFOHEADER, 24 bits), "webp" (VP8X canvas, width and
    height up to 2**24)."""
    if kind == "jpeg":
        jpeg = bytearray(_tiny_jpeg())
        sof = jpeg.index(b"\xff\xc0")
        jpeg[sof + 5:sof + 9] = struct.pack(">HH", height, width)
        return bytes(jpeg)
    if kind == "gif":
        return gif_bytes((width, height), [(0, 0, 1, 1)])
    if kind == "gif_frames":
        return gif_bytes((width, height), [(0, 0, width, height)] * 4)
    if kind == "bmp":
        info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0,
                           0, 0, 0, 0)
        return b"BM" + struct.pack("<IHHI", 54 + 12, 0, 0, 54) + info + (
            b"\x00" * 12
        )
    if kind == "webp":
        vp8x = bytes([0, 0, 0, 0]) + (width - 1).to_bytes(3, "little") + (
            height - 1
        ).to_bytes(3, "little")
        body = b"WEBP" + b"VP8X" + struct.pack("<I", len(vp8x)) + vp8x
        return b"RIFF" + struct.pack("<I", len(body)) + body
    raise ValueError(f"unknown header_bomb kind {kind!r}")


@functools.lru_cache(maxsize=1)
def animated_webp(frames=4):
    """A 30 x 20 animated WebP (Pillow): TensorFlow 2.20's WebP decoder
    corrupts the heap on it, so `image_header` refuses it undecoded."""
    import io

    from PIL import Image

    images = [Image.new("RGB", (30, 20), (40 * i, 0, 0)) for i in
              range(frames)]
    buffer = io.BytesIO()
    images[0].save(buffer, format="WEBP", save_all=True,
                   append_images=images[1:])
    return buffer.getvalue()


@functools.lru_cache(maxsize=1)
def _tiny_jpeg():
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="JPEG")
    return buffer.getvalue()



HEADER_BOMBS = (
    ("jpeg", 60000, 60000),
    ("gif", 65535, 65535),
    ("gif_frames", 8000, 8000),  # each frame under the cap, 4 over it
    ("bmp", 30000, 30000),
    ("webp", 1 << 24, 1 << 24),
)
