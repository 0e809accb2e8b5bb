"""The Store protocol: create-only, versioned storage of small objects.

Stores hold envelopes (a few KiB each) under validated object names (see
:mod:`keyvault.names`). A store never overwrites silently: ``write`` either
creates a new object, or adds a new version on top of the version the writer
last saw (compare-and-set), and raises ConflictError otherwise. Every older
version stays readable. This maps onto S3 (``If-None-Match: *`` / ``If-Match``
plus bucket versioning), Vault KV v2 (``cas``) and the local file store.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol, Self, runtime_checkable

from keyvault.errors import NotFoundError, UsageError
from keyvault.plugins import BackendOptions
from keyvault.redact import shown_uri

#: Largest object a store returns; larger ones are refused before parsing (T10).
MAX_OBJECT_SIZE = 2 * 1024 * 1024
MAX_NAME_LENGTH = 1024
OBJECT_SEGMENT = re.compile(r"[A-Za-z0-9._:~-]+")


def all_before(folder: str, after: str) -> bool:
    """Whether every name in ``folder`` (ending in "/") sorts before ``after``: a listing
    that starts after ``after`` need not look into it."""
    return bool(after) and folder < after and not after.startswith(folder)


def validate_object_name(name: str) -> list[str]:
    """The segments of a store object name; UsageError for anything that could escape.

    Generic on purpose (any store may hold any name keyvault builds): segments
    of ``[A-Za-z0-9._:~-]``, no empty, ``.`` or ``..`` segment, no leading or
    trailing slash, at most 1024 characters.
    """
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_LENGTH:
        raise UsageError(
            f"invalid object name {shown(name)}: empty or longer than {MAX_NAME_LENGTH} characters"
        )
    segments = name.split("/")
    if not all(OBJECT_SEGMENT.fullmatch(s) and s not in (".", "..") for s in segments):
        raise UsageError(
            f"invalid object name {shown(name)}: use '/'-separated segments of "
            "letters, digits and ._:~- (no empty, '.' or '..' segment)"
        )
    return segments


def shown(value: object) -> str:
    """A value for an error message: redacted (a URI's userinfo), quoted, cut to 80 characters."""
    return shown_uri(value)


class LatestDeletedError(NotFoundError):
    """The object's latest version was deleted or destroyed outside keyvault (Vault KV's
    ``kv delete``/``kv destroy``); its history stays, so a new version goes on top of
    ``latest`` (a create would be refused)."""

    def __init__(self, message: str, *, latest: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.latest = latest


@dataclass(frozen=True)
class StoredObject:
    name: str
    version: str
    data: bytes = field(repr=False)
    #: The service's entity tag of this version, where it has one (S3); "" elsewhere.
    etag: str = ""


@dataclass(frozen=True)
class ObjectVersion:
    name: str
    version: str
    size: int
    created: str | None
    latest: bool


@dataclass(frozen=True)
class VersionPage:
    """One page of a versions listing: what a bulk reader may use before the next arrives."""

    #: Each object's versions, newest first; an object appears in one page only.
    versions: dict[str, list[ObjectVersion]]
    #: Every name that sorts (byte order) before this one has been listed in full by now
    #: ("": none yet); None: the listing is complete.
    before: str | None


@runtime_checkable
class Store(Protocol):
    """Envelope storage. The whole contract fits on this screen."""

    @property
    def uri(self) -> str:
        """The canonical URI of the store (no credentials in it)."""
        ...

    def read(self, name: str, version: str | None = None) -> StoredObject:
        """The latest (or the given) version; NotFoundError if absent."""
        ...

    def write(self, name: str, data: bytes, *, replaces: str | None = None) -> str:
        """Create ``name`` (``replaces=None``) or add a version on top of ``replaces``.

        Returns the new version. ConflictError when the object exists (create)
        or its latest version is not ``replaces`` (someone wrote in between).
        """
        ...

    def versions(self, name: str) -> list[ObjectVersion]:
        """Every version of ``name``, newest first; NotFoundError if absent."""
        ...

    def list(self, prefix: str, *, after: str = "") -> Iterator[str]:
        """Names of the objects under ``prefix`` (recursively), paginating as needed;
        with ``after``, only the names that sort after it (S3's ``StartAfter``): a store
        skips what sorts before it without listing it where it can."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class VersionListing(Protocol):
    """A store that can list the versions of many objects in one go (S3).

    Optional: a bulk restore uses it to check every key's chain with one
    paginated listing instead of a request per key.
    """

    def versions_under(self, prefix: str, *, after: str = "") -> dict[str, list[ObjectVersion]]:
        """The versions of the objects under ``prefix`` that one listing holds, by name,
        newest first. It may leave objects out (a service's listing fault): callers name
        their objects from :meth:`Store.list` and list the versions of any it lacks on
        their own. ``after``: only the names that sort after it."""
        ...

    def versions_pages(
        self, prefix: str, *, page_size: int | None = None, after: str = ""
    ) -> Iterator[VersionPage]:
        """The same listing a page at a time as the service sends it, ``page_size``
        versions a page at most (None: the store's own); with ``after``, only the names
        that sort after it, as :meth:`Store.list`."""
        ...


@runtime_checkable
class TagListing(Protocol):
    """A store whose plain listing names each object's latest version by an entity tag (S3
    ``ListObjectsV2``: 1,000 objects a page, whatever their number of versions).

    Optional: a backup lists them once and takes a key whose latest version still has
    the tag this machine recorded when it sealed or verified it as unchanged, without
    reading it (keyvault.known).
    """

    def tags_under(self, prefix: str, *, after: str = "") -> dict[str, str]:
        """The entity tag of every object's latest version under ``prefix``, by name; with
        ``after``, only the names that sort after it (byte order), skipping those before."""
        ...


@runtime_checkable
class FolderTagListing(Protocol):
    """A store that names each object's latest version by a tag one folder at a time (Vault
    KV v2 ``detailed-metadata``: a LIST per folder, never a subtree, 1,000 objects a page).

    Optional: a backup lists each folder that holds one of its keys once, rather than the
    whole team (whose GUN paths and audit checkpoints are folders of their own), and
    uses the tags as :class:`TagListing`'s.
    """

    def tags_in(self, folder: str) -> dict[str, str]:
        """The tag of every object's latest version directly in ``folder`` (ending in "/"),
        by name; "" where the store may not say."""
        ...

    def written_tag(self, name: str, version: str) -> str:
        """The tag of a version this store has just written ("" if unknown)."""
        ...


@runtime_checkable
class ChangeMarking(Protocol):
    """A store that keeps a per-team change marker (Vault KV, ``[vault] change_marker``):
    an object keyvault rewrites after each run that wrote a key, pin or cert of the team,
    whose server-assigned tag names the team's last announced change.

    Optional: with it a backup that finds the marker as this machine last checked it
    (and a full listing younger than ``[vault] full_check_every``) lists nothing.
    """

    def marker_tag(self, team: str) -> str:
        """The tag of the marker's current version (one request); "" if there is none."""
        ...

    def mark_change(self, team: str) -> str:
        """Write a new marker version (no secret in it); its tag."""
        ...


@runtime_checkable
class Deleting(Protocol):
    """A store that can remove an object with every version of it (file, S3, Vault KV).

    Optional, and used for one thing only: ``keyvault quickstart --remove-sample``
    removes the sample team's envelopes, whose passphrase is public. Nothing
    else deletes from a store: a deletion would look like a rollback.
    """

    def delete_all_versions(self, name: str) -> None:
        """Remove every version of ``name`` (exactly that name, never a longer one sharing
        it as a prefix). A name that is absent is not an error: there is nothing to do."""
        ...


class StoreFactory(Protocol):
    @classmethod
    def from_uri(cls, uri: str, options: BackendOptions, *, create: bool = False) -> Self: ...
