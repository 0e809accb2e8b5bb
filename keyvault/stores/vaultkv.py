"""Envelopes in a Vault / OpenBao KV version 2 secrets engine: ``vault://kv-mount/prefix``.

Guarantees, the same as every Store (see :mod:`keyvault.stores.base`):

- **Create-only**: a new object is written with ``cas=0``; of two writers
  racing for the same name exactly one wins, the other gets ConflictError
  (Vault decides, atomically).
- **Compare-and-set**: a new version is written with ``cas=<the version the
  writer read>``; a write in between makes Vault refuse it.
- **Every version kept** (up to the mount's ``max_versions``, default 10:
  raise it, or set it to 0 for unlimited, on a mount that holds keys),
  readable by its number; versions are Vault's version numbers as strings.
- **Soft delete** (``bao kv delete``, never keyvault): a deleted version is
  refused by ``read`` with a message that says how to undelete it. The one
  deletion keyvault makes is :meth:`VaultKvStore.delete_all_versions`, for the
  quickstart sample's envelopes alone (:mod:`keyvault.ops.quickstart`).
- **Labels**: each object's KV *custom metadata* carries its team, GUN,
  role and key ID (from its validated name), so an operator can tell what
  an entry is from ``bao kv metadata get`` without reading the secret.

The Vault path of an object is ``<prefix>/<name>`` under the mount, with
every name validated first (:func:`validate_object_name`). The envelope is
one KV field: ``{"envelope": <UTF-8 text>}``, or ``{"envelope_base64": ...}``
for bytes that are not UTF-8. Objects larger than MAX_OBJECT_SIZE are refused
on read, and no answer from Vault larger than
:data:`~keyvault.stores._vault_client.MAX_RESPONSE` is parsed (T10).
Listing uses Vault's LIST on the metadata path of the prefix's own folder and
walks only that subtree. :meth:`VaultKvStore.tags_in` lists one folder's
``detailed-metadata`` instead (OpenBao, KV v2): each object's current version
and its creation time, 1,000 objects a page, so a backup learns which keys are
unchanged without reading them (keyvault.known).

Authentication, TLS, renewal, retries and typed errors: see
:mod:`keyvault.stores._vault_client`.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import threading
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any, NoReturn, Self, TypeVar
from urllib.parse import urlsplit

from keyvault.errors import (
    BackendUnavailableError,
    ConflictError,
    IntegrityError,
    KeyvaultError,
    NotFoundError,
    UsageError,
)
from keyvault.names import FORMAT_PREFIX, KeyAddress, change_marker_name
from keyvault.plugins import BackendOptions
from keyvault.stores import _vault_client as vc
from keyvault.stores.base import (
    MAX_NAME_LENGTH,
    MAX_OBJECT_SIZE,
    OBJECT_SEGMENT,
    LatestDeletedError,
    ObjectVersion,
    StoredObject,
    all_before,
    shown,
    validate_object_name,
)

FIELD_TEXT = "envelope"
FIELD_BASE64 = "envelope_base64"
#: Custom-metadata keys keyvault writes (all values are validated names, never secrets).
LABEL_KIND = "keyvault"
_MOUNT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_PARTIAL_SEGMENT = re.compile(r"[A-Za-z0-9._:~-]*")
_VERSION = re.compile(r"[1-9][0-9]{0,18}")
_CAS_MISMATCH = "check-and-set parameter did not match"
_MAX_DEPTH = 64
#: Objects per ``detailed-metadata`` LIST page (OpenBao's ``limit``).
LIST_PAGE = 1000
#: Tags of versions this store wrote and nobody asked for yet; the oldest go beyond this.
_MAX_WRITTEN = 4096
#: Attempts at a new change-marker version while other machines write theirs.
_MARK_TRIES = 5
_T = TypeVar("_T")
#: ``list`` is a method of VaultKvStore, so annotations inside the class use these aliases.
_Versions = list[ObjectVersion]
_Names = list[str]


class VaultKvStore:
    """Envelopes in ``vault://mount/prefix``; see the module docstring for the guarantees."""

    def __init__(self, mount: str, prefix: str, options: BackendOptions) -> None:
        self._mount = mount
        self._prefix = prefix  # "" or "a/b/" (validated, ends with "/")
        self._client: vc.VaultClient | None = vc.acquire(options)
        self._checked_mount = False
        self._lock = threading.Lock()
        self._detailed = True  # False once Vault refused a detailed-metadata LIST
        self._written: dict[tuple[str, str], str] = {}

    @classmethod
    def from_uri(cls, uri: str, options: BackendOptions, *, create: bool = False) -> Self:
        """Open ``vault://mount/prefix``. ``create`` changes nothing: mounts are the admin's."""
        del create
        mount, prefix = parse_vault_uri(uri)
        return cls(mount, prefix, options)

    @property
    def uri(self) -> str:
        return f"vault://{self._mount}/{self._prefix}".rstrip("/")

    def __repr__(self) -> str:
        return f"VaultKvStore({self.uri!r})"

    # -- the Store protocol --------------------------------------------------------------

    def read(self, name: str, version: str | None = None) -> StoredObject:
        path = self._path(name)
        number = _check_version(version) if version is not None else None
        try:
            resp = self._call(
                "read",
                path,
                lambda c: c.secrets.kv.v2.read_secret_version(
                    path=path,
                    version=number,
                    mount_point=self._mount,
                    raise_on_deleted_version=True,
                ),
            )
        except vc.VaultRequestError as exc:
            if exc.status == 404 and not exc.no_route:
                raise self._missing(name, path, version) from None
            self._raise(exc, name)
        data = _field(resp, "data")
        meta = _field(data, "metadata")
        got = meta.get("version")
        if got is None:
            raise _cut("version")
        if not isinstance(got, int) or isinstance(got, bool) or (number and got != number):
            raise self._tampered(name, "answered with another version than asked for")
        data_bytes = self._decode(name, _field(data, "data"))
        return StoredObject(name, str(got), data_bytes, _tag(got, meta.get("created_time")))

    def write(self, name: str, data: bytes, *, replaces: str | None = None) -> str:
        path = self._path(name)
        if not isinstance(data, bytes) or len(data) > MAX_OBJECT_SIZE:
            raise UsageError(
                f"object {name}: data must be bytes of at most "
                f"{MAX_OBJECT_SIZE} bytes; nothing was written"
            )
        cas = 0 if replaces is None else _check_version(replaces)
        self._check_mount()
        body = _encode(data)
        try:
            resp = self._call(
                "write",
                path,
                lambda c: c.secrets.kv.v2.create_or_update_secret(
                    path=path, secret=body, cas=cas, mount_point=self._mount
                ),
            )
        except vc.VaultRequestError as exc:
            if exc.status == 400 and exc.says(_CAS_MISMATCH):
                landed = self._landed(name, data, cas)
                if landed is not None:
                    return landed  # our own earlier attempt (retried after a lost answer)
                raise _stale(name, replaces, self) from None
            self._raise(exc, name)
        meta = _field(resp, "data")
        version = meta.get("version")
        if version is None:
            raise _cut("the new version's number")
        if not isinstance(version, int) or isinstance(version, bool) or version != cas + 1:
            raise self._tampered(
                name, f"answered version {str(version)[:20]!r} to a write on top of version {cas}"
            )
        labels = labels_for(name)
        if labels and meta.get("custom_metadata") != labels:
            self._label(path, labels)
        tag = _tag(version, meta.get("created_time"))
        if tag:
            with self._lock:
                self._written[(name, str(version))] = tag
                if len(self._written) > _MAX_WRITTEN:
                    del self._written[next(iter(self._written))]
        return str(version)

    def versions(self, name: str) -> _Versions:
        path = self._path(name)
        meta = self._metadata(name, path)
        current = meta.get("current_version")
        live = sorted(_live_versions(meta), reverse=True)
        if not live:
            raise NotFoundError(
                f"object {name} in store {self.uri} has no readable version: all were deleted",
                hint=f"'bao kv undelete -mount={self._mount} -versions=N {path}' brings one back",
            )
        result = []
        for number in live:  # KV metadata has no sizes: each version is read for its own
            try:
                size = len(self.read(name, str(number)).data)
            except IntegrityError:
                size = 0  # changed outside keyvault: still listed, so a good one can go on top
            result.append(
                ObjectVersion(
                    name, str(number), size, _created(meta, number), latest=number == current
                )
            )
        return result

    def list(self, prefix: str, *, after: str = "") -> Iterator[str]:
        """Names starting with ``prefix`` (plain string prefix), sorted, as they are listed;
        with ``after``, those that sort after it.

        Only the folder the prefix names is listed, then its subfolders that
        match, so one team's or GUN's listing never reads another's, nor a folder
        whose every name sorts before ``after``. Folders are walked depth first,
        each one's entries in order, so the names come out sorted without holding
        them all: memory is one folder's listing per level.
        """
        dir_part, partial = _check_prefix(prefix)
        base = f"{dir_part}/" if dir_part else ""
        return (n for n in self._walk(base, only=partial, depth=0, after=after) if n > after)

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.release()

    # -- Vault KV extras (not in the Store protocol) ----------------------------------------

    def tags_in(self, folder: str) -> dict[str, str]:
        """The tag of each object's latest version directly in ``folder`` (a name prefix
        ending in "/"; objects in its subfolders are not included), by name.

        A tag is ``<current version>@<its created_time>``: both assigned by Vault, so a
        writer can neither choose one nor bring an old one back (a copy on top is a new
        version with a new time). A current version that is deleted or destroyed gets a
        tag no record holds (``...@deleted``), so the key is read, as before.

        One ``detailed-metadata`` LIST per :data:`LIST_PAGE` objects (KV v2 lists one
        folder at a time, never a subtree). A token without ``list`` on
        ``<mount>/detailed-metadata/...`` still works: the names come from the plain
        metadata LIST, each with no tag (so each key is read), and one
        :class:`VaultListingWarning` says so, once per store.
        """
        if not isinstance(folder, str) or not folder.endswith("/"):
            raise UsageError(f"a folder must end with '/': {shown(folder)}")
        validate_object_name(folder[:-1])
        self._live()
        if self._detailed:
            try:
                return dict(self._detailed_pages(folder))
            except vc.VaultPermissionError as exc:
                self._no_detailed(exc)
        return dict.fromkeys(self._names_in(folder), "")

    def written_tag(self, name: str, version: str) -> str:
        """The tag (as :meth:`tags_in` lists it) of a version this store just wrote, from
        Vault's answer to the write; "" if unknown. Given once: it is forgotten then."""
        with self._lock:
            return self._written.pop((name, version), "")

    def marker_tag(self, team: str) -> str:
        """The tag of the team's change marker (``<current version>@<created_time>``, both
        Vault's): one metadata read; "" where there is no marker yet."""
        name = change_marker_name(team)
        try:
            return _current_tag(self._metadata(name, self._path(name)))
        except NotFoundError:
            return ""

    def mark_change(self, team: str) -> str:
        """A new version of the team's change marker (a random nonce: nothing secret), on
        top of the current one by check-and-set, so two machines each add their own; its tag.
        Costs a metadata read and a write (another on a race, at most :data:`_MARK_TRIES`)."""
        name = change_marker_name(team)
        for _ in range(_MARK_TRIES):
            try:
                current = self._metadata(name, self._path(name)).get("current_version")
            except NotFoundError:
                current = None
            replaces = str(current) if isinstance(current, int) and current > 0 else None
            try:
                version = self.write(name, secrets.token_hex(16).encode(), replaces=replaces)
            except ConflictError:
                continue  # another machine announced at the same time: on top of its version
            return self.written_tag(name, version)
        raise ConflictError(f"the change marker of team {team} in store {self.uri} kept moving")

    def delete_all_versions(self, name: str) -> None:
        """Delete the metadata of ``name``'s path, which destroys every version of it
        (other paths, including longer ones below it, stay). An absent name is nothing
        to do: Vault answers a deletion of a missing path with success."""
        path = self._path(name)
        try:
            self._call(
                "delete",
                path,
                lambda c: c.secrets.kv.v2.delete_metadata_and_all_versions(
                    path=path, mount_point=self._mount
                ),
            )
        except vc.VaultRequestError as exc:
            if exc.status == 404 and not exc.no_route:
                return
            self._raise(exc, name)

    def labels(self, name: str) -> dict[str, str]:
        """The object's custom metadata (team, GUN, role, key ID) as stored in Vault."""
        meta = self._metadata(name, self._path(name))
        custom = meta.get("custom_metadata")
        if not isinstance(custom, dict):
            return {}
        return {str(k): str(v) for k, v in custom.items()}

    # -- internals -------------------------------------------------------------------------

    def _live(self) -> vc.VaultClient:
        client = self._client
        if client is None:
            raise UsageError(f"store {self.uri} is closed")
        return client

    def _call(self, what: str, path: str, fn: Callable[[Any], _T]) -> _T:
        return self._live().call(what, fn, path=f"{self._mount}/{path}")

    def _path(self, name: str) -> str:
        validate_object_name(name)
        self._live()
        return self._prefix + name

    def _check_mount(self) -> None:
        """Before the first write: refuse a KV version 1 mount (it would take our paths
        literally) and name a missing mount. Needs no extra policy: Vault's CLI does the same
        (``sys/internal/ui/mounts``); a 403 here just skips the check."""
        if self._checked_mount:
            return
        mount = self._mount
        try:
            resp = self._live().call(
                "inspect mount",
                lambda c: c.adapter.get(f"/v1/sys/internal/ui/mounts/{mount}"),
                path=f"{mount}/",
            )
        except vc.VaultPermissionError:
            self._checked_mount = True  # not allowed to look: the first request will tell
            return
        except vc.VaultRequestError as exc:
            if exc.status == 404 or exc.no_route:
                raise self._no_mount() from None
            raise
        data = resp.get("data") if isinstance(resp, dict) else None
        if isinstance(data, dict):
            options = data.get("options") if isinstance(data.get("options"), dict) else {}
            kind = data.get("type")
            version = options.get("version") if isinstance(options, dict) else None
            if kind not in ("kv", "generic") or str(version) != "2":
                raise UsageError(
                    f"store {self.uri}: the mount {mount}/ is {kind!s:.20} version "
                    f"{version!s:.5}, not a KV version 2 secrets engine; nothing was written",
                    hint=f"use a KV v2 mount (bao secrets enable -path={mount} kv-v2)",
                )
        self._checked_mount = True

    def _landed(self, name: str, data: bytes, cas: int) -> str | None:
        """After a CAS refusal: is the latest version exactly what we wrote, on top of ``cas``?"""
        try:
            latest = self.read(name)
        except KeyvaultError:
            return None
        if latest.data == data and latest.version == str(cas + 1):
            return latest.version
        return None

    def _label(self, path: str, labels: dict[str, str]) -> None:
        """Set the custom metadata; only that field is sent, so mount settings stay as they are.

        The envelope is already stored (the write is what counts): a refusal here is
        reported as a warning, not an error, so the backup is not re-done for a label.
        """
        import warnings

        mount = self._mount
        try:
            self._call(
                "label",
                path,
                lambda c: c.adapter.post(
                    f"/v1/{mount}/metadata/{path}", json={"custom_metadata": labels}
                ),
            )
        except KeyvaultError as exc:
            warnings.warn(
                VaultLabelWarning(
                    f"{self.uri}: the envelope at {path} is stored, but its labels (custom "
                    f"metadata) were not set: {exc.message}"
                ),
                stacklevel=3,
            )

    def _metadata(self, name: str, path: str) -> dict[str, Any]:
        try:
            resp = self._call(
                "read the metadata of",
                path,
                lambda c: c.secrets.kv.v2.read_secret_metadata(path=path, mount_point=self._mount),
            )
        except vc.VaultRequestError as exc:
            if exc.status == 404 and not exc.no_route:
                raise NotFoundError(f"object {name} not found in store {self.uri}") from None
            self._raise(exc, name)
        return _field(resp, "data")

    def _missing(self, name: str, path: str, version: str | None) -> NotFoundError:
        """Not found: say so, or say that the version was soft-deleted (and how to undo it)."""
        try:
            meta = self._metadata(name, path)
        except NotFoundError:
            if version is None:
                return NotFoundError(f"object {name} not found in store {self.uri}")
            return self._no_version(name, version)
        number = int(version) if version is not None else meta.get("current_version")
        versions = meta.get("versions") if isinstance(meta.get("versions"), dict) else {}
        entry = versions.get(str(number)) if isinstance(versions, dict) else None
        # the latest version gone: a new one goes on top of it (LatestDeletedError.latest)
        error = (
            NotFoundError
            if version is not None
            else partial(LatestDeletedError, latest=str(number))
        )
        if isinstance(entry, dict) and entry.get("destroyed"):
            return error(
                f"object {name} version {number} in store {self.uri} was destroyed",
                hint="restore another version",
            )
        if isinstance(entry, dict) and entry.get("deletion_time"):
            return error(
                f"object {name} version {number} in store {self.uri} was deleted (soft delete)",
                hint=f"undelete it: bao kv undelete -mount={self._mount} -versions={number} {path}",
            )
        if version is None:
            return NotFoundError(f"object {name} not found in store {self.uri}")
        return self._no_version(name, version)

    def _no_version(self, name: str, version: str) -> NotFoundError:
        return NotFoundError(
            f"object {name} has no version {version} in store {self.uri}",
            hint=f"'keyvault versions' lists the versions of {name}",
        )

    def _walk(self, base: str, *, only: str | None, depth: int, after: str = "") -> Iterator[str]:
        if depth > _MAX_DEPTH:
            raise self._tampered(base, "is nested implausibly deep")
        for key in self._listed(base):
            is_folder = key.endswith("/")
            segment = key[:-1] if is_folder else key
            if only is not None and not segment.startswith(only):
                continue
            if is_folder:
                if not all_before(base + key, after):
                    yield from self._walk(base + key, only=None, depth=depth + 1, after=after)
            else:
                yield base + segment

    def _names_in(self, base: str) -> _Names:
        """The objects directly in the folder ``base`` (no subfolder), from a plain LIST."""
        return [base + key for key in self._listed(base) if not key.endswith("/")]

    def _listed(self, base: str) -> _Names:
        """One plain LIST of the folder ``base``: its entries ("x" or "x/" for a subfolder),
        sorted, only those keyvault could have written."""
        folder = self._prefix + base
        try:
            resp = self._call(
                "list",
                folder or "(the store's root)",
                lambda c: c.secrets.kv.v2.list_secrets(path=folder, mount_point=self._mount),
            )
        except vc.VaultRequestError as exc:
            if exc.status == 404 and not exc.no_route:
                return []  # an empty folder does not exist in Vault
            self._raise(exc, base or "(everything)")
        keys = _field(resp, "data").get("keys")
        if not isinstance(keys, list):
            raise self._tampered(base or "(root)", "lists no keys")
        # "a/" sorts where every name below it does ("/" is a name's only separator)
        return sorted(k for k in keys if isinstance(k, str) and _ours(base, k))

    def _detailed_pages(self, base: str) -> Iterator[tuple[str, str]]:
        """(name, tag) of each object in the folder ``base``, a LIST page at a time."""
        after = ""
        while True:
            data = self._detailed_page(base, after)
            keys, info = data.get("keys"), data.get("key_info")
            if not isinstance(keys, list) or not isinstance(info, dict):
                raise self._tampered(base, "lists no keys")
            for key in keys:
                if isinstance(key, str) and not key.endswith("/") and _ours(base, key):
                    yield base + key, _current_tag(info.get(key))
            if len(keys) < LIST_PAGE:
                return
            last = keys[-1]
            if not isinstance(last, str) or last <= after:
                raise self._tampered(base, "lists its keys out of order")
            after = last

    def _detailed_page(self, base: str, after: str) -> dict[str, Any]:
        """One page of the folder's detailed metadata: the keys that sort after ``after``."""
        mount, folder = self._mount, self._prefix + base
        params: dict[str, str | int] = {"limit": LIST_PAGE}
        if after:
            params["after"] = after
        try:
            resp = self._call(
                "list",
                f"detailed-metadata/{folder}",
                lambda c: c.adapter.list(f"/v1/{mount}/detailed-metadata/{folder}", params=params),
            )
        except vc.VaultRequestError as exc:
            if exc.status == 404 and not exc.no_route:
                return {"keys": [], "key_info": {}}  # an empty folder, or past the last page
            self._raise(exc, base)
        return _field(resp, "data")

    def _no_detailed(self, exc: vc.VaultPermissionError) -> None:
        """Vault refused the detailed-metadata LIST: say so once, then list names only."""
        import warnings

        with self._lock:
            if not self._detailed:
                return
            self._detailed = False
        warnings.warn(
            VaultListingWarning(
                f"{exc.message}; so each key of this backup is read to learn whether it "
                "changed (a request per key instead of a LIST per folder); grant the token "
                f"'list' on {self._mount}/detailed-metadata/<prefix>/v1/teams/<team>/* "
                "('keyvault policy render' prints it)"
            ),
            stacklevel=4,
        )

    def _decode(self, name: str, fields: dict[str, Any]) -> bytes:
        if set(fields) == {FIELD_TEXT} and isinstance(fields[FIELD_TEXT], str):
            text = fields[FIELD_TEXT]
            if len(text) > MAX_OBJECT_SIZE:
                raise self._too_large(name)
            data: bytes = text.encode("utf-8", errors="surrogatepass")
        elif set(fields) == {FIELD_BASE64} and isinstance(fields[FIELD_BASE64], str):
            if len(fields[FIELD_BASE64]) > (MAX_OBJECT_SIZE + 2) // 3 * 4:
                raise self._too_large(name)
            try:
                data = base64.b64decode(fields[FIELD_BASE64], validate=True)
            except (binascii.Error, ValueError):
                raise self._tampered(name, "holds invalid base64") from None
        else:
            raise self._tampered(
                name,
                f"is not an object written by keyvault (fields {', '.join(sorted(fields))[:80]!r})",
            )
        if len(data) > MAX_OBJECT_SIZE:
            raise self._too_large(name)
        return data

    def _too_large(self, name: str) -> IntegrityError:
        return self._tampered(name, f"is larger than {MAX_OBJECT_SIZE} bytes; refused")

    def _tampered(self, name: str, what: str) -> IntegrityError:
        return IntegrityError(
            f"store {self.uri}: {name} {what}; it was changed outside keyvault",
            hint="inspect it with 'bao kv metadata get' and restore another version",
        )

    def _no_mount(self) -> vc.VaultMountNotFoundError:
        return vc.VaultMountNotFoundError(
            f"store {self.uri}: no secrets engine is mounted at {self._mount}/ on "
            f"{self._live().address}",
            hint=f"enable KV version 2 there (bao secrets enable -path={self._mount} kv-v2) "
            "or fix the store URI",
        )

    def _raise(self, exc: vc.VaultRequestError, name: str) -> NoReturn:
        if exc.no_route:
            raise self._no_mount() from None
        if exc.status == 404:
            raise NotFoundError(f"object {name} not found in store {self.uri}") from None
        raise exc


class VaultLabelWarning(UserWarning):
    """An envelope was stored but its custom-metadata labels could not be set."""


class VaultListingWarning(UserWarning):
    """Vault refused a detailed-metadata LIST: unchanged keys are read, not listed."""


def labels_for(name: str) -> dict[str, str]:
    """Custom metadata for an object name: what it is, from the validated name alone."""
    try:
        address = KeyAddress.from_object_name(name)
    except UsageError:
        return {}
    labels = {
        LABEL_KIND: f"envelope/{FORMAT_PREFIX}",
        "team": address.team,
        "key_id": address.key_id,
    }
    if address.role is not None:
        labels["role"] = address.role
    if address.gun is not None:
        labels["gun"] = address.gun
    return labels


def parse_vault_uri(uri: str) -> tuple[str, str]:
    """``vault://mount[/prefix]`` -> (mount, prefix ending in "/" or "")."""
    if not isinstance(uri, str) or len(uri) > 2048 or not uri.isprintable():
        raise UsageError("invalid vault store URI")
    parts = urlsplit(uri)
    if parts.scheme.lower() != "vault" or not uri.lower().startswith("vault://"):
        raise UsageError(
            f"not a vault: store URI: {shown(uri)}", hint="use vault://kv-mount/prefix"
        )
    if parts.query or parts.fragment or uri.endswith(("?", "#")) or "@" in parts.netloc:
        raise UsageError(
            f"vault store URI {shown(uri)} must not have credentials, a query or a fragment",
            hint="the address comes from VAULT_ADDR or [vault] address; the token from VAULT_TOKEN",
        )
    mount = parts.netloc
    if not mount:
        raise UsageError(
            f"vault store URI {shown(uri)} names no KV mount",
            hint="use vault://kv-mount/prefix, e.g. vault://secret/keyvault",
        )
    if not _MOUNT.fullmatch(mount):
        raise UsageError(
            f"vault store URI {shown(uri)}: {mount[:60]!r} is not a mount name",
            hint="letters, digits and ._- (the host part is the KV mount)",
        )
    if "//" in parts.path:
        raise UsageError(f"vault store URI {shown(uri)} has an empty path segment")
    path = parts.path.strip("/")
    if not path:
        return mount, ""
    try:
        validate_object_name(path)
    except UsageError:
        raise UsageError(
            f"vault store URI {shown(uri)} has an invalid prefix",
            hint="use '/'-separated segments of letters, digits and ._:~-",
        ) from None
    if len(path) > MAX_NAME_LENGTH // 2:
        raise UsageError(f"vault store URI {shown(uri)}: the prefix is too long")
    return mount, path + "/"


def _check_prefix(prefix: str) -> tuple[str, str]:
    if not isinstance(prefix, str) or len(prefix) > MAX_NAME_LENGTH:
        raise UsageError(
            f"an object name prefix must be a string of at most {MAX_NAME_LENGTH} characters"
        )
    dir_part, _, partial = prefix.rpartition("/")
    if dir_part or prefix.startswith("/"):
        validate_object_name(dir_part)
    if not _PARTIAL_SEGMENT.fullmatch(partial):
        raise UsageError(f"invalid object name prefix {shown(prefix)}")
    return dir_part, partial


def _encode(data: bytes) -> dict[str, str]:
    try:
        return {FIELD_TEXT: data.decode("utf-8")}
    except UnicodeDecodeError:
        return {FIELD_BASE64: base64.b64encode(data).decode("ascii")}


def _field(doc: Any, key: str) -> dict[str, Any]:
    value = doc.get(key) if isinstance(doc, dict) else None
    if not isinstance(value, dict):
        raise _cut(f"a {key!r} object")
    return value


def _cut(what: str) -> BackendUnavailableError:
    """A field Vault always sends is missing: the answer was lost, not a wrong one (exit 6)."""
    return BackendUnavailableError(
        f"Vault answered without {what} (an empty or cut-off answer); nothing was used from it",
        hint="re-run to retry",
    )


def _live_versions(meta: dict[str, Any]) -> list[int]:
    versions = meta.get("versions")
    if not isinstance(versions, dict):
        return []
    return [
        int(v)
        for v, e in versions.items()
        if _VERSION.fullmatch(v)
        and isinstance(e, dict)
        and not e.get("deletion_time")
        and not e.get("destroyed")
    ]


def _ours(base: str, key: str) -> bool:
    """A listed entry ("x" or "x/") whose name keyvault could have written."""
    segment = key.removesuffix("/")
    return (
        bool(OBJECT_SEGMENT.fullmatch(segment))
        and segment not in (".", "..")
        and len(base + segment) <= MAX_NAME_LENGTH
    )


def _tag(version: object, created: object) -> str:
    """``<version>@<created_time>``: what :meth:`VaultKvStore.tags_in` lists for it."""
    if not isinstance(version, int) or isinstance(version, bool) or not isinstance(created, str):
        return ""
    return f"{version}@{created[:64]}" if created else ""


def _current_tag(entry: object) -> str:
    """The tag of a detailed-metadata entry's current version; ``<version>@deleted`` (which
    no record holds) when it is deleted or destroyed; "" when the entry says too little."""
    if not isinstance(entry, dict):
        return ""
    current, versions = entry.get("current_version"), entry.get("versions")
    own = versions.get(str(current)) if isinstance(versions, dict) else None
    if not isinstance(own, dict):
        return ""
    if own.get("deletion_time") or own.get("destroyed"):
        return f"{current}@deleted"  # current is a number: it named an entry of versions
    return _tag(current, own.get("created_time"))


def _created(meta: dict[str, Any], number: int) -> str | None:
    versions = meta.get("versions")
    entry = versions.get(str(number)) if isinstance(versions, dict) else None
    stamp = entry.get("created_time") if isinstance(entry, dict) else None
    if not isinstance(stamp, str) or len(stamp) < 19:
        return None
    return stamp[:19] + "Z"


def _check_version(version: str) -> int:
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        raise UsageError(
            f"invalid version {shown(version)}: a Vault KV version is a positive number, e.g. 3"
        )
    return int(version)


def _stale(name: str, replaces: str | None, store: VaultKvStore) -> ConflictError:
    if replaces is None:
        return ConflictError(
            f"object {name} already exists in store {store.uri}; nothing was written",
            hint="read it and write on top of its latest version",
        )
    return ConflictError(
        f"object {name} changed (or does not exist): its latest version is "
        f"not {replaces}; nothing was written",
        hint="read it again and retry on top of the new version",
    )
