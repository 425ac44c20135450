"""Error boundaries: user errors become messages in the page, bugs go to the log.

A :class:`~gastricvision.errors.GastricVisionError` carries a message written for the
user (what failed, on which file, what to do), so it is shown as it is. Any other
exception is a bug: it is logged with its traceback and the page shows a short generic
message, so no traceback reaches the browser. Streamlit's own rerun and stop signals
derive from ``BaseException`` and pass through untouched.
"""

from __future__ import annotations

import functools
import logging
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

import streamlit as st

from gastricvision.errors import GastricVisionError

logger = logging.getLogger("gastricvision.app")

GENERIC_MESSAGE = (
    "Something went wrong in this part of the page. The details are in the server log; "
    "try again, or reload the page."
)

F = TypeVar("F", bound=Callable)


def configure_logging() -> None:
    """Send the library's and the app's log records to stderr, once per process."""
    package_logger = logging.getLogger("gastricvision")
    if any(getattr(handler, "gastricvision_app", False) for handler in package_logger.handlers):
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.gastricvision_app = True  # marks the handler so that reruns add no other
    package_logger.addHandler(handler)
    package_logger.setLevel(logging.INFO)
    package_logger.propagate = False


@contextmanager
def guard(where: str) -> Iterator[None]:
    """Show errors raised in the block in the page instead of failing the whole run."""
    try:
        yield
    except GastricVisionError as exc:
        logger.info("%s: %s", where, exc)
        st.error(str(exc))
    except Exception:
        logger.exception("Unexpected error in %s", where)
        st.error(GENERIC_MESSAGE)


def guarded(where: str) -> Callable[[F], F]:
    """Decorator form of :func:`guard`, for fragments, which rerun on their own."""

    def decorate(function: F) -> F:
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            with guard(where):
                return function(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
