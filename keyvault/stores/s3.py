"""Envelopes in an S3 bucket (AWS S3 or any S3-compatible service), ``s3://bucket/prefix``.

Guarantees, the same as every Store (see :mod:`keyvault.stores.base`):

- **Create-only**: a new object is written with ``If-None-Match: *``; of
  two writers racing for the same name exactly one wins, the other gets
  ConflictError (the service decides, atomically).
- **Compare-and-set**: a new version is written only on top of the version
  the writer read (``replaces``): the store checks that it is the latest and
  writes with ``If-Match: <its ETag>``, so a write in between makes the
  service answer 412 and nothing is lost.
- **Old versions stay**: with bucket versioning (required for ``replaces``
  writes unless ``[s3] allow_unversioned = true``), every version is
  readable by its VersionId. On an unversioned bucket a version *is* the
  object's ETag and an update replaces the old bytes, which is why keyvault
  refuses updates there by default.
- **No conditional writes** (``[s3] conditional_writes = false``, or a
  service that answers 501 to them): on a versioned bucket the store checks
  first, writes, then lists the versions and raises ConflictError unless
  its version sits directly on top of the one it replaced; nothing is lost
  because versioning kept both. On an unversioned bucket it refuses to
  write at all: it would overwrite silently.
- **One deletion**: :meth:`S3Store.delete_all_versions` (used for quickstart's
  sample only) deletes every version and delete marker of exactly one key.

Object keys are ``<prefix>/<name>`` with every name validated first.
Objects larger than MAX_OBJECT_SIZE are refused from their Content-Length,
before the body is read (T10). One boto3 client per store, created once and
shared by threads (boto3 clients are thread-safe), with botocore's
``standard`` retry mode and bounded timeouts.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Mapping
from typing import Any, NoReturn, Self
from urllib.parse import urlsplit

from keyvault.errors import (
    AccessDeniedError,
    BackendUnavailableError,
    ConflictError,
    IntegrityError,
    KeyvaultError,
    NotFoundError,
    UsageError,
)
from keyvault.plugins import BackendOptions
from keyvault.stores import _awsclient as aws
from keyvault.stores.base import (
    MAX_NAME_LENGTH,
    MAX_OBJECT_SIZE,
    ObjectVersion,
    StoredObject,
    VersionPage,
    shown,
    validate_object_name,
)

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IPV4 = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+")
_PARTIAL_SEGMENT = re.compile(r"[A-Za-z0-9._:~-]*")
_VERSION = re.compile(r"[A-Za-z0-9._+=:-]{1,1024}")
_ETAG = re.compile(r'"?([A-Za-z0-9-]{1,128})"?')
_ETAG_PREFIX = "etag:"
_SSE = ("AES256", "aws:kms", "aws:kms:dsse")
_LIST_PAGE = 1000
#: ``list`` is a method of S3Store, so annotations inside the class use this alias.
_Versions = list[ObjectVersion]
#: One listed version: (is latest, time, listing order, the version, its ETag).
_Found = tuple[bool, float, int, ObjectVersion, str]


class S3Store:
    """Envelopes in ``s3://bucket/prefix``; see the module docstring for the guarantees."""

    def __init__(self, bucket: str, prefix: str, options: BackendOptions) -> None:
        self._bucket = bucket
        self._prefix = prefix  # "" or "a/b/" (validated, ends with "/")
        settings = options.for_scheme("s3")
        self._cs = aws.client_settings("s3", "s3", settings, options.env)
        self._client: Any = aws.make_client(self._cs, options.env, options.breaker)
        self._client.meta.events.register("request-created.s3.PutObject", _send_in_one_go)
        self._sse = _sse_args(settings)
        self._allow_unversioned = _flag(settings, "allow_unversioned", False)
        self._conditional = _flag(settings, "conditional_writes", True)
        self._versioning: str | None = None  # "Enabled", "Suspended", "" (never); cached
        self._lock = threading.Lock()

    @classmethod
    def from_uri(cls, uri: str, options: BackendOptions, *, create: bool = False) -> Self:
        """Open ``s3://bucket/prefix``. ``create`` (``keyvault init``) checks that the bucket
        exists: buckets are infrastructure (region, policy, versioning), never made here."""
        bucket, prefix = parse_s3_uri(uri)
        store = cls(bucket, prefix, options)
        if create:
            store.check_bucket()
        return store

    @property
    def uri(self) -> str:
        return f"s3://{self._bucket}/{self._prefix}".rstrip("/")

    @property
    def bucket(self) -> str:
        return self._bucket

    def __repr__(self) -> str:
        return f"S3Store({self.uri!r})"

    def check_bucket(self) -> str:
        """Versioning status ("Enabled", "Suspended" or ""); NotFoundError if no bucket."""
        return self._bucket_versioning()

    # -- the Store protocol --------------------------------------------------------

    def read(self, name: str, version: str | None = None) -> StoredObject:
        key = self._key(name)
        args: dict[str, Any] = {"Bucket": self._bucket, "Key": key}
        if version is not None:
            args.update(_version_args(version))
        try:
            resp = self._client.get_object(**args)
        except Exception as exc:
            self._raise(exc, "read", name, version=version)
        body = resp["Body"]
        try:
            size = resp.get("ContentLength")
            if size is None:  # S3 always sends it: the answer was lost, not a wrong object
                raise aws.cut_answer(f"store {self.uri}: cannot read {name}", "Content-Length")
            if not isinstance(size, int) or size > MAX_OBJECT_SIZE:
                raise IntegrityError(
                    f"store {self.uri}: {name} is larger than {MAX_OBJECT_SIZE} bytes; "
                    "refused before reading",
                    hint="the object was not written by keyvault; inspect the bucket",
                )
            data = body.read(MAX_OBJECT_SIZE + 1)
        except KeyvaultError:
            raise
        except Exception as exc:
            self._raise(exc, "read", name, version=version)
        finally:
            body.close()
        if len(data) != size:
            raise BackendUnavailableError(
                f"store {self.uri}: {name} was cut short while reading", hint="re-run to retry"
            )
        return StoredObject(
            name, _version_of(resp, version), bytes(data), etag=_etag_hex(resp.get("ETag"))
        )

    def write(self, name: str, data: bytes, *, replaces: str | None = None) -> str:
        key = self._key(name)
        if not isinstance(data, bytes) or len(data) > MAX_OBJECT_SIZE:
            raise UsageError(
                f"object {name}: data must be bytes of at most "
                f"{MAX_OBJECT_SIZE} bytes; nothing was written"
            )
        if replaces is not None:
            _check_version(replaces)
            if not self._allow_unversioned and self._bucket_versioning() != "Enabled":
                raise UsageError(
                    f"store {self.uri}: bucket versioning is not enabled, so updating {name} "
                    "would destroy its old version; nothing was written",
                    hint=f"enable versioning on bucket {self._bucket} (aws s3api "
                    "put-bucket-versioning ... Status=Enabled), or set [s3] "
                    "allow_unversioned = true to accept replacing old bytes",
                )
        if not self._conditional:
            return self._write_verified(name, key, data, replaces)
        condition: dict[str, str] = {"IfNoneMatch": "*"}
        if replaces is not None:
            condition = {"IfMatch": self._etag_of_latest(name, key, replaces)}
        try:
            resp = self._client.put_object(
                Bucket=self._bucket,
                Key=key,
                Body=data,
                ContentType="application/octet-stream",
                **condition,
                **self._sse,
            )
        except Exception as exc:
            code, status = aws.error_code(exc)
            if status == 501 or code == "NotImplemented":
                return self._write_verified(name, key, data, replaces)
            self._raise(exc, "write", name, replaces=replaces, creating=replaces is None)
        return _version_of(resp, None)

    def versions(self, name: str) -> _Versions:
        key = self._key(name)
        found: list[_Found] = []
        paginator = self._client.get_paginator("list_object_versions")
        try:
            for page in self._pages(paginator, key):
                for item in page.get("Versions", ()):
                    if item.get("Key") != key:
                        continue  # a longer key sharing the prefix
                    found.append(self._version_entry(name, item, len(found)))
        except Exception as exc:
            self._raise(exc, "list the versions of", name)
        if not found:
            raise self._not_found(name)
        return _newest_first(found)

    def versions_under(self, prefix: str, *, after: str = "") -> dict[str, _Versions]:
        """What one paginated versions listing under ``prefix`` holds, by name: a bulk
        reader checks each key's chain without a request per key.

        Never the list of what there is: SeaweedFS (4.48 here) leaves out of a paged
        ``ListObjectVersions`` the folders whose names sort before a sibling's followed
        by "/" (``app-web/`` and ``app.io/`` beside ``app/``: 1,400 of 3,500 objects
        under one prefix), while its ``ListObjectsV2`` (:meth:`list`) lists them all.
        Readers name their keys from :meth:`list` and list the versions of any this
        lacks on their own. ``after``: as :meth:`versions_pages`."""
        listed: dict[str, _Versions] = {}
        for page in self.versions_pages(prefix, after=after):
            listed.update(page.versions)
        return listed

    def versions_pages(
        self, prefix: str, *, page_size: int | None = None, after: str = ""
    ) -> Iterator[VersionPage]:
        """The versions listing of :meth:`versions_under`, a page at a time as S3 sends
        it, so a caller can start on the first names while later pages are on their way.

        S3 lists keys in byte order and may cut one key's versions across two pages:
        a page's last name is held back until the next page (or the end) has shown
        all of its versions, and ``before`` says which names are final. A key whose
        versions come back on a later page after its own was handed out is refused
        (exit 6), never guessed: its versions would look fewer than they are.
        """
        full = self._prefix + _check_prefix(prefix)
        held: tuple[str, list[_Found]] | None = None
        given: set[str] = set()  # the names already in a page (held back: in the next)
        paginator = self._live().get_paginator("list_object_versions")
        try:
            # A KeyMarker without a VersionIdMarker: the listing starts past that key.
            for page in self._pages(
                paginator, full, self._start_after(after), page_size=page_size, marker="KeyMarker"
            ):
                found: dict[str, list[_Found]] = dict([held]) if held is not None else {}
                last = held[0] if held is not None else None
                for item in page.get("Versions", ()):
                    name = str(item.get("Key") or "")[len(self._prefix) :]
                    try:
                        validate_object_name(name)
                    except UsageError:
                        continue  # not a name keyvault writes: not ours to list
                    if name in given:  # its page is out: a consumer may have used it
                        raise _out_of_order(self.uri, name)
                    entries = found.setdefault(name, [])
                    entries.append(self._version_entry(name, item, len(entries)))
                    last = name
                held = None
                before: str | None = None
                if page["IsTruncated"]:  # the last key's versions may go on: hold it back
                    before = last or ""
                    if last is not None:
                        held = (last, found.pop(last))
                given.update(found)
                yield VersionPage(
                    {name: _newest_first(entries) for name, entries in found.items()}, before
                )
        except KeyvaultError:
            raise
        except Exception as exc:
            self._raise(exc, "list the versions under", prefix or "/")
        if held is not None:  # S3 said "more" and then sent nothing more
            yield VersionPage({held[0]: _newest_first(held[1])}, None)

    def list(self, prefix: str, *, after: str = "") -> Iterator[str]:
        """Names starting with ``prefix`` (plain string prefix), paginated: in key order on
        S3; SeaweedFS lists a folder's subfolders in its own order (``app/`` before
        ``app-web/``), so no caller may rely on the order. ``after``: S3's ``StartAfter``."""
        full = self._prefix + _check_prefix(prefix)
        return (name for name, _ in self._iter_names(full, self._start_after(after)))

    def tags_under(self, prefix: str, *, after: str = "") -> dict[str, str]:
        """The ETag of each object's latest version under ``prefix``, from the same paged
        ``ListObjectsV2`` as :meth:`list` (a deleted object is not listed); ``after``: S3's
        ``StartAfter``, so the names before it cost no page."""
        return dict(
            self._iter_names(self._prefix + _check_prefix(prefix), self._start_after(after))
        )

    def delete_all_versions(self, name: str) -> None:
        """Delete every version and delete marker of exactly ``name``'s key (a longer key
        sharing it as a prefix is skipped): listed first, all pages, then deleted one by
        one. An absent name is nothing to do."""
        key = self._key(name)
        doomed: list[str] = []
        paginator = self._client.get_paginator("list_object_versions")
        try:
            for page in self._pages(paginator, key):
                for item in (*page.get("Versions", ()), *page.get("DeleteMarkers", ())):
                    if item.get("Key") == key:
                        doomed.append(str(item.get("VersionId") or "null"))
            for version in doomed:
                # a never-versioned bucket has one object and no version to name
                plain = version == "null" and self._bucket_versioning() == ""
                which = {} if plain else {"VersionId": version}
                self._client.delete_object(Bucket=self._bucket, Key=key, **which)
        except Exception as exc:
            self._raise(exc, "delete", name)

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    # -- internals -------------------------------------------------------------------

    def _pages(
        self,
        paginator: Any,
        prefix: str,
        start_after: str = "",
        *,
        page_size: int | None = None,
        marker: str = "StartAfter",
    ) -> Iterator[dict[str, Any]]:
        """A listing's pages; a page without ``IsTruncated`` (which S3 always sends) was
        lost on the way: backend unavailable, never "no such objects"."""
        after = {marker: start_after} if start_after else {}
        size = {"PageSize": page_size or _LIST_PAGE}
        for page in paginator.paginate(
            Bucket=self._bucket, Prefix=prefix, **after, PaginationConfig=size
        ):
            if "IsTruncated" not in page:
                raise aws.cut_answer(
                    f"store {self.uri}: cannot list {prefix or '/'}", "IsTruncated"
                )
            yield page

    def _start_after(self, after: str) -> str:
        """The bucket key a listing starts after ("": from the beginning)."""
        if not after:
            return ""
        validate_object_name(after)
        return self._prefix + after

    def _iter_names(self, full_prefix: str, start_after: str = "") -> Iterator[tuple[str, str]]:
        paginator = self._live().get_paginator("list_objects_v2")
        try:
            for page in self._pages(paginator, full_prefix, start_after):
                for item in page.get("Contents", ()):
                    name = str(item.get("Key", ""))[len(self._prefix) :]
                    try:
                        validate_object_name(name)
                    except UsageError:
                        continue  # foreign objects in a shared bucket are not ours to judge
                    yield name, _etag_hex(item.get("ETag"))
        except KeyvaultError:
            raise
        except Exception as exc:
            self._raise(exc, "list", full_prefix[len(self._prefix) :] or "(everything)")

    def _live(self) -> Any:
        client = self._client
        if client is None:
            raise UsageError(f"store {self.uri} is closed")
        return client

    def _key(self, name: str) -> str:
        validate_object_name(name)
        self._live()
        return self._prefix + name

    def _bucket_versioning(self) -> str:
        if self._versioning is None:
            try:
                resp = self._live().get_bucket_versioning(Bucket=self._bucket)
            except Exception as exc:
                self._raise(
                    exc,
                    "check versioning of",
                    "(bucket)",
                    denied_hint="grant s3:GetBucketVersioning on the bucket, or set "
                    "[s3] allow_unversioned = true",
                )
            self._versioning = str(resp.get("Status") or "")
        return self._versioning

    def _etag_of_latest(self, name: str, key: str, replaces: str) -> str:
        """The latest version's ETag, after checking that it is ``replaces``."""
        try:
            head = self._client.head_object(Bucket=self._bucket, Key=key)
        except Exception as exc:
            code, status = aws.error_code(exc)
            if status == 404 or code in ("NoSuchKey", "404", "NotFound"):
                raise ConflictError(
                    f"object {name} does not exist, so version {replaces} "
                    "cannot be replaced; nothing was written"
                ) from None
            self._raise(exc, "check", name)
        latest = _version_of(head, None)
        if latest != replaces:
            raise ConflictError(
                f"object {name} changed: latest version is {latest}, not "
                f"{replaces}; nothing was written",
                hint="read it again and retry on top of the new version",
            )
        return str(head["ETag"])

    def _write_verified(self, name: str, key: str, data: bytes, replaces: str | None) -> str:
        """Without conditional writes: check, write, then prove nobody wrote in between."""
        if self._bucket_versioning() != "Enabled":
            raise BackendUnavailableError(
                f"store {self.uri}: this S3 service does not do conditional writes and bucket "
                f"{self._bucket} is not versioned, so writing {name} could overwrite another "
                "writer silently; nothing was written",
                hint="enable bucket versioning, or use a service that supports If-None-Match",
            )
        try:
            latest: str | None = self._client.head_object(Bucket=self._bucket, Key=key).get(
                "VersionId"
            )
        except Exception as exc:
            code, status = aws.error_code(exc)
            if not (status == 404 or code in ("NoSuchKey", "404", "NotFound")):
                self._raise(exc, "check", name)
            latest = None
        if latest != replaces:
            raise _stale(name, latest, replaces)
        try:
            resp = self._client.put_object(
                Bucket=self._bucket,
                Key=key,
                Body=data,
                ContentType="application/octet-stream",
                **self._sse,
            )
        except Exception as exc:
            self._raise(exc, "write", name)
        mine = _version_of(resp, None)
        order = [v.version for v in self.versions(name)]
        below = order[order.index(mine) + 1] if mine in order[:-1] else None
        if mine not in order or order[0] != mine or below != replaces:
            raise ConflictError(
                f"object {name}: another writer wrote at the same time; both versions are kept "
                f"(ours is {mine})",
                hint="run 'keyvault versions' and re-run the backup",
            )
        return mine

    def _version_entry(self, name: str, item: Mapping[str, Any], index: int) -> _Found:
        modified = item.get("LastModified")
        stamp = modified.timestamp() if modified is not None else 0.0
        created = modified.strftime("%Y-%m-%dT%H:%M:%SZ") if modified is not None else None
        version = str(item.get("VersionId") or "null")
        latest = bool(item.get("IsLatest"))
        entry = ObjectVersion(name, version, int(item.get("Size") or 0), created, latest)
        return latest, float(stamp), index, entry, str(item.get("ETag") or "")

    def _not_found(self, name: str, version: str | None = None) -> NotFoundError:
        if version is None:
            return NotFoundError(f"object {name} not found in store {self.uri}")
        return NotFoundError(
            f"object {name} has no version {version} in store {self.uri}",
            hint=f"'keyvault versions' lists the versions of {name}",
        )

    def _raise(
        self,
        exc: BaseException,
        action: str,
        name: str,
        *,
        version: str | None = None,
        replaces: str | None = None,
        creating: bool = False,
        denied_hint: str | None = None,
    ) -> NoReturn:
        """Translate an SDK exception into a KeyvaultError with safe facts only."""
        if isinstance(exc, KeyvaultError):
            raise exc
        where = f"store {self.uri}: cannot {action} {name}"
        transport = aws.translate_transport_error(
            exc, what=where, endpoint=self._cs.endpoint_url or "S3"
        )
        if transport is not None:
            raise transport from None
        skewed = aws.clock_skew(exc, where)
        if skewed is not None:
            raise skewed from None
        code, status = aws.error_code(exc)
        if not code and status is None:
            raise exc  # not an SDK error: a bug, let it show
        shown = f"{code or 'error'}, HTTP {status}"
        if code == "NoSuchBucket":
            raise NotFoundError(
                f"store {self.uri}: bucket {self._bucket} does not exist",
                hint="create it (with versioning enabled) or fix the store URI",
            ) from None
        if code in aws.ACCESS_CODES or status == 403:
            raise AccessDeniedError(
                f"{where}: access denied ({shown})",
                hint=denied_hint
                or f"check the credentials and that their policy allows this "
                f"on s3://{self._bucket}/{self._prefix}*",
            ) from None
        if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
            if creating:
                raise ConflictError(
                    f"object {name} already exists in store {self.uri}; nothing was written",
                    hint="read it and write on top of its latest version",
                ) from None
            if replaces is not None:
                raise ConflictError(
                    f"object {name} was written by someone else after version "
                    f"{replaces}; nothing was written",
                    hint="read it again and retry on top of the new version",
                ) from None
            if version is not None:
                raise self._not_found(name, version) from None
        if code in ("NoSuchKey", "NoSuchVersion", "404", "NotFound") or status == 404:
            raise self._not_found(name, version) from None
        if version is not None and code == "InvalidArgument":
            raise self._not_found(name, version) from None
        if code == "InvalidObjectState":
            raise AccessDeniedError(
                f"{where}: the object is archived ({shown})",
                hint="restore it from its storage class first",
            ) from None
        if code in aws.TRANSIENT_CODES or (status is not None and status >= 500):
            raise BackendUnavailableError(
                f"{where}: the service failed ({shown})",
                hint="re-run to retry; nothing was changed by this request",
            ) from None
        raise BackendUnavailableError(
            f"{where}: the service refused the request ({shown})"
        ) from None


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket[/prefix]`` -> (bucket, prefix ending in "/" or "")."""
    if not isinstance(uri, str) or len(uri) > 2048 or not uri.isprintable():
        raise UsageError("invalid s3 store URI")
    parts = urlsplit(uri)
    if parts.scheme.lower() != "s3":
        raise UsageError(f"not an s3: store URI: {shown(uri)}")
    if not uri.lower().startswith("s3://"):
        raise UsageError(f"s3 store URI {shown(uri)} must be s3://bucket/prefix")
    if parts.query or parts.fragment or uri.endswith(("?", "#")) or "@" in parts.netloc:
        raise UsageError(
            f"s3 store URI {shown(uri)} must not have credentials, a query or a fragment",
            hint="credentials come from the AWS environment",
        )
    bucket = parts.netloc
    if not bucket:
        raise UsageError(
            f"s3 store URI {shown(uri)} names no bucket",
            hint="use s3://bucket-name/optional/prefix",
        )
    check_bucket_name(bucket)
    path = parts.path.strip("/")
    if parts.path.startswith("//") or "//" in parts.path:
        raise UsageError(f"s3 store URI {shown(uri)} has an empty path segment")
    if not path:
        return bucket, ""
    try:
        validate_object_name(path)
    except UsageError:
        raise UsageError(
            f"s3 store URI {shown(uri)} has an invalid prefix",
            hint="use '/'-separated segments of letters, digits and ._:~-",
        ) from None
    if len(path) > MAX_NAME_LENGTH // 2:
        raise UsageError(f"s3 store URI {shown(uri)}: the prefix is too long")
    return bucket, path + "/"


def check_bucket_name(bucket: str) -> str:
    """S3's bucket naming rules: 3-63 of [a-z0-9.-], starting and ending alphanumeric."""
    if (
        not _BUCKET.fullmatch(bucket)
        or ".." in bucket
        or _IPV4.fullmatch(bucket)
        or ".-" in bucket
        or "-." in bucket
    ):
        raise UsageError(
            f"invalid S3 bucket name {shown(bucket)}",
            hint="3-63 lower-case letters, digits, dots and hyphens, starting and "
            "ending with a letter or digit",
        )
    return bucket


def _check_prefix(prefix: str) -> str:
    if not isinstance(prefix, str):
        raise UsageError("an object name prefix must be a string")
    dir_part, _, partial = prefix.rpartition("/")
    if dir_part:
        validate_object_name(dir_part)
    if not _PARTIAL_SEGMENT.fullmatch(partial) or len(prefix) > MAX_NAME_LENGTH:
        raise UsageError(f"invalid object name prefix {shown(prefix)}")
    return prefix


def _check_version(version: str) -> None:
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        raise UsageError(
            f"invalid version {shown(version)}: expected an S3 VersionId or etag:<hex>"
        )


def _version_args(version: str) -> dict[str, str]:
    _check_version(version)
    if version.startswith(_ETAG_PREFIX):
        return {"IfMatch": f'"{version[len(_ETAG_PREFIX) :]}"'}
    return {"VersionId": version}


def _version_of(resp: Mapping[str, Any], asked: str | None) -> str:
    """The version an S3 response names: its VersionId, else ``etag:<hex>`` (unversioned)."""
    version = resp.get("VersionId")
    if isinstance(version, str) and version and version != "null":
        return version
    if asked is not None and asked.startswith(_ETAG_PREFIX):
        return asked
    match = _ETAG.fullmatch(str(resp.get("ETag") or ""))
    if match is None:
        raise BackendUnavailableError("the S3 service returned neither a VersionId nor an ETag")
    return _ETAG_PREFIX + match.group(1)


def _etag_hex(etag: object) -> str:
    """An ETag as S3 sends it (quoted), without its quotes; "" if it has none."""
    match = _ETAG.fullmatch(str(etag or ""))
    return match.group(1) if match else ""


def _newest_first(found: list[_Found]) -> _Versions:
    """One object's listed versions, newest first.

    The latest, then by time; ties (one-second clocks) keep the service's own
    order, which is newest first. VersionIds are not ordered.
    """
    if all(f[3].version == "null" for f in found):
        return [_unversioned_entry(found[0][3], found[0][4])]
    return [f[3] for f in sorted(found, key=lambda f: (not f[0], -f[1], f[2]))]


def _unversioned_entry(entry: ObjectVersion, etag: str) -> ObjectVersion:
    """An unversioned bucket's only version is named by its ETag (as ``read`` returns it)."""
    match = _ETAG.fullmatch(etag)
    version = _ETAG_PREFIX + match.group(1) if match else "null"
    return ObjectVersion(entry.name, version, entry.size, entry.created, latest=True)


def _out_of_order(uri: str, name: str) -> BackendUnavailableError:
    """S3 lists each key's versions together; a page that comes back to a key a page before
    held would make its versions look fewer than they are: not guessed."""
    return BackendUnavailableError(
        f"store {uri}: the service listed versions of {name} again on a later page "
        "(S3 lists each key's versions together); nothing was used from that listing",
        hint="re-run; if it persists, the S3 service does not list versions by key",
    )


def _stale(name: str, latest: str | None, replaces: str | None) -> ConflictError:
    if replaces is None:
        return ConflictError(
            f"object {name} already exists (latest version {latest}); nothing was written",
            hint="read it and write on top of its latest version",
        )
    if latest is None:
        return ConflictError(
            f"object {name} does not exist, so version {replaces} "
            "cannot be replaced; nothing was written"
        )
    return ConflictError(
        f"object {name} changed: latest version is {latest}, not {replaces}; nothing was written",
        hint="read it again and retry on top of the new version",
    )


def _send_in_one_go(request: Any, **_: Any) -> None:
    """Send a write's body with its headers instead of waiting for ``100 Continue``.

    botocore adds ``Expect: 100-continue`` to every file-like body, so each write
    would wait one extra round trip before sending an envelope of a few KB (at
    most MAX_OBJECT_SIZE, checked before the request is made). The header is not
    signed, so dropping it changes nothing else.
    """
    if "Expect" in request.headers:
        del request.headers["Expect"]


def _sse_args(settings: Mapping[str, Any]) -> dict[str, str]:
    sse = settings.get("sse")
    key_id = settings.get("sse_kms_key_id")
    if sse in (None, ""):
        if key_id:
            raise UsageError('[s3] sse_kms_key_id needs sse = "aws:kms"')
        return {}
    if sse not in _SSE:
        raise UsageError(f"[s3] sse must be one of {', '.join(_SSE)}")
    args = {"ServerSideEncryption": str(sse)}
    if key_id:
        if not str(sse).startswith("aws:kms"):
            raise UsageError('[s3] sse_kms_key_id needs sse = "aws:kms"')
        if not isinstance(key_id, str) or not _VERSION.fullmatch(key_id.replace("/", "-")):
            raise UsageError("[s3] sse_kms_key_id must be a KMS key ID, ARN or alias")
        args["SSEKMSKeyId"] = key_id
    return args


def _flag(settings: Mapping[str, Any], key: str, default: bool) -> bool:
    value = settings.get(key, default)
    if not isinstance(value, bool):
        raise UsageError(f"[s3] {key} must be true or false")
    return value
