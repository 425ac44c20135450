"""Exceptions whose messages are fit to show a user, and warnings carried as data.

Every failure that a user can cause (a broken image, a folder that is not a dataset,
tampered weights) raises a subclass of :class:`GastricVisionError`. Its message names the
file or value and says what to do. Anything else that escapes is a bug: front ends log it
with its traceback and show a generic message instead.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = [
    "ArchiveError",
    "DatasetError",
    "DownloadError",
    "GastricVisionError",
    "ImageError",
    "ModelUnavailableError",
    "TileWarning",
    "WeightsError",
]


class GastricVisionError(Exception):
    """A failure caused by input that the user can fix; the message says how."""


class ImageError(GastricVisionError):
    """An image file or upload that cannot be decoded or is outside the limits."""


class DatasetError(GastricVisionError):
    """A folder that does not match any supported dataset layout, or a bad split file."""


class WeightsError(GastricVisionError):
    """A weights folder whose manifest or weights file is missing, invalid or tampered."""


class ModelUnavailableError(WeightsError):
    """A model that was requested but has no usable weights."""


class ArchiveError(GastricVisionError):
    """A zip or RAR archive that is corrupt, hostile or over the extraction limits."""


class DownloadError(GastricVisionError):
    """A dataset download that failed: no network, HTTP error, changed file list, bad MD5, full disk."""


@dataclass(frozen=True)
class TileWarning:
    """A condition worth telling the user about that did not stop the work.

    Attributes:
        code: Stable identifier for programs and tests, e.g. ``scale_mismatch``.
        message: One plain sentence for people.
    """

    code: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)
