"""The versions of a bulk listing, filled page by page by a background thread.

A bulk restore names its keys from the plain listing and checks each key's
signed chain against the versions beneath its latest, which a versions listing
gives for many keys at once. S3 services take their time over that listing
(SeaweedFS: about 0.9 s for a page of 1,000, 0.2 s for a page of 250), so it is
made beside the names' and read while it goes on: a key's chain check waits
only until the listing has passed its name, never for the whole listing.

Nothing is guessed: a name the listing has passed without holding it (written
after it, left out by the service, or listed out of byte order) is "not
listed", and the reader lists that key's versions on its own; an error of the
listing reaches every waiter.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Self

from keyvault.errors import BackendUnavailableError
from keyvault.stores.base import VersionPage


class VersionIndex:
    """One listing's versions by object name, readable while the listing goes on."""

    def __init__(self, pages: Iterable[VersionPage]) -> None:
        self._pages = pages
        self._ready = threading.Condition()
        #: Version IDs (newest first) of each listed object whose latest is an object.
        self._found: dict[str, tuple[str, ...]] = {}
        self._before: str | None = ""  # names sorting before it are final ("": none yet)
        self._done = False
        self._error: BaseException | None = None
        # A daemon: Ctrl-C or a failed restore never waits for a listing nobody reads.
        self._thread = threading.Thread(target=self._fill, name="keyvault-versions", daemon=True)

    def start(self) -> Self:
        self._thread.start()
        return self

    def wait(self, name: str) -> tuple[str, ...] | None:
        """``name``'s listed versions (newest first) once the listing has passed it; None
        if it passed without holding it (or holds only a deletion on top). Raises the
        listing's error."""
        with self._ready:
            self._ready.wait_for(lambda: self._final(name))
            if name in self._found:
                return self._found[name]
            if self._error is not None:
                raise self._error  # the same error for every waiter, as Future.result()
            return None

    def close(self) -> None:
        """Stop after the page in flight; whoever still waits is told the listing stopped."""
        self._end(
            BackendUnavailableError("the versions listing was stopped before it ended"),
            only_if_running=True,
        )

    # -- the listing thread ----------------------------------------------------------

    def _fill(self) -> None:
        pages = iter(self._pages)
        try:
            for page in pages:
                with self._ready:
                    if self._done:  # closed: nobody reads on
                        break
                    for name, versions in page.versions.items():
                        if any(v.latest for v in versions):  # a deletion on top: not listed
                            self._found[name] = tuple(v.version for v in versions)
                    self._before = page.before
                    self._ready.notify_all()
        except Exception as exc:  # handed to every waiter, never swallowed
            self._end(exc)
        finally:
            self._end(None, only_if_running=True)
            close: Callable[[], object] | None = getattr(pages, "close", None)
            if close is not None:
                close()

    def _end(self, error: BaseException | None, *, only_if_running: bool = False) -> None:
        with self._ready:
            if only_if_running and self._done:
                return
            self._done, self._error = True, error
            self._ready.notify_all()

    def _final(self, name: str) -> bool:
        before = self._before  # no name sorts before "": nothing is final before page 1
        return name in self._found or self._done or before is None or name < before
