"""Checks of image files before training, and the mapper wrapper that names an image that
fails while training.

Holds the DATASETS.IMAGE_CHECK checks of one file (:func:`image_problem`; ``_image_size`` with
its per-process header cache: the header read by PIL, EXIF orientation applied as Detectron2's
``detection_utils.read_image`` applies it, the JPEG end-of-image / PNG IEND marker looked for at
the file's end), :class:`BadImageError` and :class:`NamingMapper` (around Detectron2's
``DatasetMapper``; it skips a record the way Detectron2's ``MapDataset`` documents). Sources:
PIL's ``Image.open``, Detectron2's ``read_image`` and ``MapDataset``, and the JPEG (ITU T.81)
and PNG (RFC 2083) file structure.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, Optional

__all__ = ["BadImageError", "END_MARKER_WINDOW", "IMAGE_CHECKS", "MAX_WARNINGS_PER_KIND", "NamingMapper",
           "image_problem"]

logger = logging.getLogger("rwdet.data")


#: How many warnings of one kind (clipped box, dropped box, skipped image) a dataset logs
#: one by one; the rest are counted in a summary line.
MAX_WARNINGS_PER_KIND = 20

#: EXIF orientations that swap width and height (Detectron2's ``read_image`` applies them).
_EXIF_TRANSPOSED = (5, 6, 7, 8)

# (path, size in bytes, mtime in ns) -> (width, height) or an error message; see _image_size.
_HEADER_CACHE: Dict[tuple, Any] = {}


#: Bytes at the end of a file searched for the JPEG end-of-image marker: valid files may carry
#: padding after it (zero bytes, seen up to 1,188 bytes in a public set).
END_MARKER_WINDOW = 4096

#: What may follow a JPEG's FFD9 marker in a file that decodes fully: zero bytes and whitespace.
_JPEG_PADDING = b"\x00 \t\r\n"

#: The last 12 bytes of every complete PNG: the IEND chunk (length 0, type, CRC).
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"

#: Allowed values of DATASETS.IMAGE_CHECK.
IMAGE_CHECKS = ("end_marker", "decode")


def _end_marker_problem(path: str, fmt: Optional[str], size: int) -> Optional[str]:
    """Why the file at ``path`` looks truncated, or None: a JPEG must hold the end-of-image
    marker FFD9 followed only by padding (:data:`_JPEG_PADDING`) within its last
    :data:`END_MARKER_WINDOW` bytes; a PNG must end with its IEND chunk (trailing padding
    allowed likewise). Other formats are not checked. One seek and one read of at most
    :data:`END_MARKER_WINDOW` bytes. Source: JPEG (ITU T.81, B.1.1.3: EOI = FFD9) and PNG (RFC
    2083, 11.2.5: IEND) file structure."""
    if fmt not in ("JPEG", "MPO", "PNG"):
        return None
    with open(path, "rb") as f:
        f.seek(max(0, size - END_MARKER_WINDOW))
        tail = f.read()
    body = tail.rstrip(_JPEG_PADDING)
    if fmt == "PNG":
        return None if body.endswith(_PNG_IEND) or tail.endswith(_PNG_IEND) else \
            "is truncated: no PNG IEND chunk at its end"
    return None if body.endswith(b"\xff\xd9") else \
        f"is truncated: no JPEG end-of-image marker (FFD9) in its last {min(size, END_MARKER_WINDOW)} bytes"


def _image_size(path: str, check: str = "end_marker"):
    """``(width, height)`` of the image at ``path`` as Detectron2's ``read_image`` returns it
    (EXIF orientation applied), from its header only; or a str saying why it cannot be read.

    ``PIL.Image.open`` reads the header, not the pixels; then ``check`` (DATASETS.IMAGE_CHECK):
    ``"end_marker"`` looks for the end marker (:func:`_end_marker_problem`, finds truncated
    JPEG/PNG files), ``"decode"`` also decodes the whole image (``Image.load``). Results are
    cached per process by (path, size, mtime, check), so a dataset listed twice (train and
    trainval) is read once.
    """
    try:
        st = os.stat(path)
    except OSError as e:
        return f"cannot be read: {e.strerror or e}"
    key = (path, st.st_size, st.st_mtime_ns, check)
    if key in _HEADER_CACHE:
        return _HEADER_CACHE[key]
    if st.st_size == 0:
        result: Any = "is an empty (zero-byte) file"
    else:
        try:
            from PIL import Image  # Detectron2's read_image uses PIL too

            with Image.open(path) as im:
                width, height = im.size
                fmt = im.format
                if check == "decode":
                    im.load()  # raises OSError ("image file is truncated ...") on a broken file
                try:
                    orientation = im.getexif().get(0x0112)
                except Exception as e:  # a broken EXIF block: read_image ignores it as well
                    if fmt == "PNG" and isinstance(e, OSError):
                        raise  # PIL decodes a PNG to find its EXIF: this is a decode error
                    orientation = None
            if orientation in _EXIF_TRANSPOSED:
                width, height = height, width
            truncated = _end_marker_problem(path, fmt, st.st_size)
            result = truncated if truncated else (int(width), int(height))
        except Exception as e:  # UnidentifiedImageError, OSError, SyntaxError from plugins
            result = f"is not a readable image ({type(e).__name__}: {e})"
            if check == "decode" and isinstance(e, OSError):
                result = f"cannot be decoded ({type(e).__name__}: {e})"
    _HEADER_CACHE[key] = result
    return result


def image_problem(path: str, check: str = "end_marker") -> Optional[str]:
    """Why the image file at ``path`` cannot be used, or None when it can: missing, empty, not
    readable by PIL, or truncated (``check="end_marker"``: no JPEG end-of-image / PNG IEND
    marker at its end, one seek a file), or not decodable (``check="decode"``: every pixel
    decoded). The checks of DATASETS.IMAGE_CHECK, for a single file (cached per process).

    Raises:
        ValueError: ``check`` is not one of :data:`IMAGE_CHECKS`.
    """
    if check not in IMAGE_CHECKS:
        raise ValueError(f"image check {check!r} is unknown; allowed: {', '.join(IMAGE_CHECKS)}")
    result = _image_size(path, check)
    return result if isinstance(result, str) else None


class BadImageError(OSError):
    """An image that passed the checks before training cannot be read when the data loader
    maps it; the message names the file and what to set (DATASETS.IMAGE_CHECK decode,
    DATASETS.SKIP_BAD_IMAGES)."""


class NamingMapper:
    """A Detectron2 dataset mapper (e.g. ``DatasetMapper``) whose errors name the image.

    An ``OSError`` (PIL's "image file is truncated", unreadable files) or Detectron2's
    ``SizeMismatchError`` while mapping a record becomes :class:`BadImageError` naming the
    record's ``file_name``; with ``skip_bad_images`` (training, DATASETS.SKIP_BAD_IMAGES) the
    record is left out instead, with a warning (at most :data:`MAX_WARNINGS_PER_KIND`, then at
    DEBUG): the mapper returns None, and Detectron2's ``MapDataset`` maps another record in its
    place (``MapDataset``'s documented way to skip data). Any other exception gets a note
    naming the file and is raised as it is.

    Args:
        mapper: callable, a dataset dict -> the model's input dict.
        skip_bad_images: leave unreadable images out instead of raising (never for evaluation,
            where ``MapDataset`` would evaluate another image in its place).
    """

    def __init__(self, mapper, skip_bad_images: bool = False):
        self.mapper, self.skip_bad_images, self.skipped = mapper, bool(skip_bad_images), 0

    def __call__(self, record: Dict[str, Any]):
        from detectron2.data.detection_utils import SizeMismatchError

        name = record.get("file_name", "(a record without file_name)")
        try:
            return self.mapper(record)
        except (OSError, SizeMismatchError) as e:
            if self.skip_bad_images:
                self.skipped += 1
                level = logging.WARNING if self.skipped <= MAX_WARNINGS_PER_KIND else logging.DEBUG
                logger.log(level, "Skipping image %s (DATASETS.SKIP_BAD_IMAGES): it cannot be read (%s: %s)",
                           name, type(e).__name__, e)
                return None
            raise BadImageError(
                f"{name} cannot be read while training or evaluating ({type(e).__name__}: {e}), although it "
                "passed the checks before the run: set DATASETS.IMAGE_CHECK decode to find such images "
                "before training, or DATASETS.SKIP_BAD_IMAGES True to leave them out with a warning"
            ) from e
        except Exception as e:
            e.add_note(f"rwdet: while mapping the record of {name}")
            raise
