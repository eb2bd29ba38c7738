"""A content-addressed artifact store: one directory per party, objects named by their SHA-256.

Everything large or private (model updates, global models, records, metrics) lives here and the
chain holds only the 32-byte digests, so the store is what makes an anchored digest mean
something months later. It therefore promises four things:

- **content addressing**: an object lives at ``objects/ab/cdef…`` where ``abcdef…`` is the
  lowercase hex SHA-256 of its bytes, so an audit bundle can reuse the same layout;
- **atomic, durable writes**: bytes go to a temporary file in the object's own directory, are
  fsynced, hard-linked to the final name, and the directory is fsynced before :meth:`put`
  returns; a reader or a crash sees either no object or the whole object;
- **no overwriting**: a link, unlike a rename, fails when the target exists, so a valid object
  is never replaced; objects are read-only files (0o444) so nothing rewrites them by accident;
- **verification on every read**: :meth:`get` never returns bytes whose SHA-256 is not the
  requested digest.

Reads are bounded: an object is opened without blocking and read only if the opened file is a
regular file, no larger than the store's limit (``max_object_bytes``) or the caller's, so a
FIFO, a device or a huge sparse file in a store handed over by someone else (an audit bundle)
is refused instead of hanging the reader or filling its memory. A read-only store, being
evidence, also refuses symbolic links, which could lead out of it.

Crashed writers leave temporary files (``.tmp-<random>``) behind; :meth:`ArtifactStore.recover`,
which the constructor calls, removes them. A live writer holds an exclusive ``flock`` on its
temporary file for as long as the name exists, and the kernel drops that lock when the process
dies, even by SIGKILL; so recovery removes exactly the unlocked temporary files and can run at
any time, next to live writers in this or other processes, without a grace period. (``flock``
locks belong to the open file, not the process, which is why they are used instead of
``fcntl``/``lockf`` record locks: those would let a recovery in the writer's own process
delete, or unlock, the writer's file.) The store assumes a local POSIX filesystem with working
``flock``; on NFS Linux emulates ``flock`` with record locks and that guarantee weakens.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
import stat
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import numpy as np

from consortium.crypto.canonical import jcs
from consortium.errors import ConsortiumError, UsageError
from consortium.jsonio import _special_kind

DIGEST_SIZE = 32
OBJECT_MODE = 0o444
TEMP_PREFIX = ".tmp-"

_FANOUT = re.compile(r"[0-9a-f]{2}")
_REST = re.compile(r"[0-9a-f]{62}")
_CHUNK = 1 << 20
# A cache line, and more than any numpy element size.
_ALIGNMENT = 64
_Bytes = TypeVar("_Bytes", bytes, memoryview)
# errnos with which link(2) says "this filesystem has no hard links" rather than "no".
_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK}

_log = logging.getLogger(__name__)


class ArtifactError(ConsortiumError):
    """An artifact cannot be stored or returned; the message names the digest and the path."""


class MissingArtifact(ArtifactError):
    """No object with the requested digest is in the store."""


class CorruptArtifact(ArtifactError):
    """The object's bytes do not hash to its digest (bit rot, truncation, tampering)."""


class NotRegularFile(OSError):
    """What a path names is not a regular file: a FIFO (opening or reading it could block), a
    device (reading it might never end), a directory, or a symbolic link where none is
    followed. Its message reads after "is" or after "cannot read ...:"."""

    def __init__(self, kind: str) -> None:
        super().__init__(f"not a regular file but a {kind}")
        self.kind = kind


class ArtifactStore:
    """One party's content-addressed store under ``root`` (objects in ``root/objects``).

    Directories are created lazily by the first :meth:`put`, so opening a store to read (an
    auditor's unpacked bundle, a read-only mount, a mistyped path) never creates anything.
    Instances are cheap and hold no open files; several instances and processes may use the
    same root at once.
    """

    def __init__(
        self,
        root: Path,
        *,
        private: bool = True,
        read_only: bool = False,
        max_object_bytes: int | None = None,
    ) -> None:
        """``private``: a store this creates is readable by its owner only (updates and models
        reveal something of the data they were trained on); an export meant to be handed over,
        such as an audit bundle, passes False and gets the umask's permissions.

        ``read_only``: the store is evidence (an auditor's bundle): every read is verified as
        usual, but nothing is written or removed, not even a crashed writer's temporary file,
        and no symbolic link is followed (to an object or to its directory).

        ``max_object_bytes``: the largest object a read returns; a larger file is refused
        before it is read.
        """
        self.root = Path(root)
        self.objects = self.root / "objects"
        self.read_only = read_only
        self.max_object_bytes = max_object_bytes
        # Directories of a read-only store seen not to be symbolic links.
        self._unlinked: set[Path] = set()
        self._root_mode = 0o700 if private else 0o777
        # Directories whose own entry is known to be durable (created and parent fsynced, or
        # seen to exist and parent fsynced once by this instance).
        self._durable: set[Path] = set()
        self.recover()

    def __repr__(self) -> str:
        return f"ArtifactStore({str(self.root)!r})"

    # ----------------------------------------------------------------------------- naming

    def path(self, digest: bytes) -> Path:
        """Where the object with ``digest`` lives (whether or not it is stored)."""
        text = _hex(digest)
        return self.objects / text[:2] / text[2:]

    def has(self, digest: bytes) -> bool:
        """Whether an object file exists for ``digest``; cheap, and does not verify it."""
        return self.path(digest).is_file()

    def __contains__(self, digest: object) -> bool:
        """``digest in store``; like :meth:`has`, but anything not a digest is simply absent."""
        valid = isinstance(digest, bytes | bytearray) and len(digest) == DIGEST_SIZE
        return valid and self.has(bytes(digest))

    def digests(self) -> Iterator[bytes]:
        """The digests of all stored objects, in ascending order; temporary files are skipped.

        Objects are listed by name only; use :meth:`verify_all` to check their contents.
        """
        for fanout in _sorted_entries(self.objects):
            if not (_FANOUT.fullmatch(fanout.name) and fanout.is_dir(follow_symlinks=False)):
                continue
            for entry in _sorted_entries(Path(fanout.path)):
                if _REST.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                    yield bytes.fromhex(fanout.name + entry.name)

    def __iter__(self) -> Iterator[bytes]:
        return self.digests()

    # ----------------------------------------------------------------------------- reading

    def get(self, digest: bytes, *, max_bytes: int | None = None) -> bytes:
        """The object's bytes, after checking that they hash to ``digest``.

        Raises :class:`MissingArtifact` if there is no such object and :class:`CorruptArtifact`
        if its bytes are damaged; bad bytes are never returned, because a caller would go on to
        aggregate, sign or anchor them. An object larger than ``max_bytes`` (or the store's
        ``max_object_bytes``), or one that is not a regular file, is an :class:`ArtifactError`
        and is not read.
        """
        return self._verified(digest, _read_bytes, max_bytes)

    def get_view(self, digest: bytes) -> memoryview:
        """The object's bytes, verified like :meth:`get`, as a read-only view of private memory.

        For large objects that are parsed in place rather than kept as bytes (tensors, which
        :func:`~consortium.store.models.parse_tensor_blob` turns into arrays over this memory
        without a copy). The file is read once into a buffer allocated for it alone, so the
        bytes hashed are the bytes handed out, whatever later happens to the file or to its
        page cache (which is why this is not an ``mmap`` of the file). The buffer is a numpy
        allocation, which asks the kernel for huge pages, so reading a large object costs about
        half of what filling a ``bytes`` object of the same size does (fewer page faults).
        """
        return self._verified(digest, _read_private)

    def _verified(
        self, digest: bytes, read: Callable[[BinaryIO, int], _Bytes], max_bytes: int | None = None
    ) -> _Bytes:
        """``read`` of the object's file and its size, refused unless it hashes to ``digest``."""
        path = self.path(digest)
        limit = min((n for n in (max_bytes, self.max_object_bytes) if n is not None), default=None)
        try:
            handle, size = self._open(path)
            with handle:
                if limit is not None and size > limit:
                    raise ArtifactError(
                        f"artifact {digest.hex()} at {path} is {size:,} bytes, more than the "
                        f"{limit:,} it may take"
                    )
                data = read(handle, size)
        except FileNotFoundError:
            raise MissingArtifact(
                f"artifact {digest.hex()} is not in the store {self.root}"
            ) from None
        except OSError as exc:
            raise ArtifactError(
                f"cannot read artifact {digest.hex()} at {path}: {exc.strerror or exc}"
            ) from None
        actual = hashlib.sha256(data).digest()
        if actual != digest:
            raise CorruptArtifact(
                f"artifact {digest.hex()} at {path} is corrupt: its {len(data)} bytes hash to "
                f"{actual.hex()}"
            )
        return data

    def _open(self, path: Path) -> tuple[BinaryIO, int]:
        """The object file at ``path``, opened unbuffered, and its size; a read-only store
        follows no symbolic link to it or to its directories."""
        if not self.read_only:
            return open_regular(path)
        for directory in (self.objects, path.parent):
            if directory not in self._unlinked:
                if stat.S_ISLNK(os.lstat(directory).st_mode):
                    inside = directory.relative_to(self.root)
                    raise OSError(f"{inside} is a symbolic link, not a directory")
                self._unlinked.add(directory)
        return open_regular(path, follow_symlinks=False)

    def get_json(self, digest: bytes) -> Any:
        """The JSON value stored by :meth:`put_json`, verified like :meth:`get`.

        The object must be RFC 8785 canonical JSON: any other encoding of the same value has a
        different digest, so a non-canonical object cannot be the thing a protocol digest
        (always taken over JCS bytes) commits to.
        """
        data = self.get(digest)
        try:
            value = json.loads(data.decode("utf-8"))
            canonical = jcs(value)
        except (UnicodeDecodeError, ValueError, UsageError):
            raise ArtifactError(f"artifact {digest.hex()} is not JSON") from None
        if canonical != data:
            raise ArtifactError(f"artifact {digest.hex()} is JSON but not RFC 8785 canonical")
        return value

    def verify_all(self) -> list[bytes]:
        """The digests of stored objects whose bytes are damaged or unreadable, in order.

        Objects are hashed in chunks, so arbitrarily large objects need no extra memory.
        """
        bad = []
        for digest in self.digests():
            try:
                intact = _file_digest(self.path(digest)) == digest
            except OSError:
                intact = False
            if not intact:
                bad.append(digest)
        return bad

    # ----------------------------------------------------------------------------- writing

    def put(self, data: bytes) -> bytes:
        """Store ``data`` durably and return its 32-byte SHA-256.

        Idempotent: if the object already exists, it is read once and compared with ``data``,
        and nothing is written. Trusting the name alone would let ``put`` report success for a
        damaged copy that every later :meth:`get` refuses; and a put is the one moment the
        store holds the true bytes, so a copy that provably differs from them is repaired by
        an atomic replace (with a logged warning). An intact object is never replaced. Two
        writers of the same bytes, in threads or processes, both succeed and leave one intact
        object.
        """
        return self._put(hashlib.sha256(data).digest(), data)

    def _put(self, digest: bytes, data: bytes | memoryview) -> bytes:
        """:meth:`put` of ``data`` whose SHA-256 the caller knows to be ``digest`` (it has just
        computed or verified it), so that copying a verified object does not hash it twice."""
        if self.read_only:
            raise UsageError(f"the store {self.root} is read-only: nothing is written to it")
        final = self.path(digest)
        try:
            if _compare(final, data) == "intact":
                # Possibly linked a moment ago by a concurrent writer that has not yet synced
                # the directory; this put promises durability too, so sync before returning.
                self._make_durable(final.parent)
                _fsync_directory(final.parent)
                return digest
            self._make_durable(final.parent)
            with self._temporary(final.parent) as (fd, temporary):
                self._write_temp(fd, memoryview(data))
                # fchmod, unlike the open mode, ignores the umask; the link shares the inode.
                os.fchmod(fd, OBJECT_MODE)
                os.fsync(fd)
                self._publish(temporary, final, data)
            _fsync_directory(final.parent)
        except OSError as exc:
            raise ArtifactError(
                f"cannot store artifact {digest.hex()} at {final}: {exc.strerror or exc}"
            ) from exc
        return digest

    def put_json(self, value: Any) -> bytes:
        """Store the RFC 8785 canonical bytes of a JSON value; its digest is the protocol's."""
        return self.put(jcs(value))

    def export(self, digests: Iterable[bytes], dest_dir: Path) -> ArtifactStore:
        """Copy the given objects into a store at ``dest_dir`` (same ``objects/`` layout).

        Each object is verified on the way out (:meth:`get_view`, whose check also provides its
        digest, so it is hashed once) and written with the same atomic, non-overwriting
        :meth:`put`, so an audit bundle never receives a damaged object; the first damaged or
        missing one raises. Objects copied before that stay, and are valid: whoever builds a
        bundle writes its manifest only after ``export`` returns. Returns the destination store.
        """
        dest = ArtifactStore(dest_dir, private=False)
        for digest in dict.fromkeys(digests):
            dest._put(digest, self.get_view(digest))
        return dest

    # ----------------------------------------------------------------------------- recovery

    def recover(self) -> list[Path]:
        """Remove temporary files left by crashed writers; return the paths removed.

        A temporary file whose ``flock`` can be taken belongs to no live writer (see the module
        docstring), so removing it is safe even while other processes write. Files this process
        may not remove (a read-only bundle) are left alone.
        """
        if self.read_only:
            return []
        removed = []
        for fanout in _sorted_entries(self.objects):
            if not (_FANOUT.fullmatch(fanout.name) and fanout.is_dir(follow_symlinks=False)):
                continue
            for entry in _sorted_entries(Path(fanout.path)):
                if entry.name.startswith(TEMP_PREFIX) and entry.is_file(follow_symlinks=False):
                    path = Path(entry.path)
                    if _remove_abandoned(path):
                        removed.append(path)
        if removed:
            _log.info("removed %d temporary file(s) left in %s", len(removed), self.objects)
        return removed

    # ----------------------------------------------------------------------------- internals

    def _write_temp(self, fd: int, data: memoryview) -> None:
        """Write all of ``data`` to the temporary file (tests override this to crash mid-write)."""
        written = 0
        while written < len(data):
            written += os.write(fd, data[written : written + _CHUNK])

    @contextlib.contextmanager
    def _temporary(self, directory: Path) -> Iterator[tuple[int, Path]]:
        """A new, locked temporary file in ``directory``; closed and unlinked on exit.

        Between creating the file and locking it there is a window in which a concurrent
        :meth:`recover` may find it unlocked and remove it; the writer notices (its name no
        longer refers to its inode) and starts over with a new name.
        """
        while True:
            temporary = directory / f"{TEMP_PREFIX}{secrets.token_hex(16)}"
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
            fd = os.open(temporary, flags, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if _same_file(fd, temporary):
                    break
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
        try:
            yield fd, temporary
        finally:
            # Unlink while still locked, so recovery never sees a finished but unlocked file.
            try:
                temporary.unlink(missing_ok=True)
            finally:
                os.close(fd)

    def _publish(self, temporary: Path, final: Path, data: bytes | memoryview) -> None:
        """Give the complete, synced temporary file its final name without replacing an object."""
        for _ in range(3):
            try:
                os.link(temporary, final)
                return
            except FileExistsError:
                state = _compare(final, data)
                if state == "intact":
                    return  # a concurrent writer of the same bytes was first
                if state == "missing":
                    continue  # removed by hand, or a dangling symlink; try the link again
                _log.warning("replacing damaged object %s with verified bytes", final)
                os.replace(temporary, final)
                return
            except OSError as exc:
                if exc.errno not in _NO_HARD_LINKS:
                    raise
                # No hard links here: rename instead. Two writers may then both rename, but
                # both hold the same verified bytes, and rename is atomic for readers.
                if _compare(final, data) != "intact":
                    os.replace(temporary, final)
                return
        raise FileExistsError(errno.EEXIST, "exists but cannot be opened", str(final))

    def _make_durable(self, directory: Path) -> None:
        """Create ``directory`` (and the store directories above it) with durable entries.

        The parent is fsynced even when the directory already existed: another process may
        have just created it and not yet synced its parent. Done once per directory and
        instance, since directories are never removed.
        """
        if directory in self._durable:
            return
        if directory != self.root:
            self._make_durable(directory.parent)
            directory.mkdir(exist_ok=True)
        else:
            directory.mkdir(mode=self._root_mode, parents=True, exist_ok=True)
        _fsync_directory(directory.parent)
        self._durable.add(directory)


def _hex(digest: bytes) -> str:
    """The lowercase hex of a 32-byte digest; anything else is refused by name."""
    if not isinstance(digest, bytes | bytearray) or len(digest) != DIGEST_SIZE:
        kind = (
            f"{len(digest)} bytes"
            if isinstance(digest, bytes | bytearray)
            else type(digest).__name__
        )
        raise UsageError(f"an artifact digest is {DIGEST_SIZE} bytes of SHA-256, not {kind}")
    return digest.hex()


def _compare(path: Path, data: bytes | memoryview) -> str:
    """``"missing"``, ``"intact"`` (the file holds exactly ``data``) or ``"damaged"``.

    Comparing with bytes known to hash to the digest is as strong as hashing the file, and
    stops at the first difference.
    """
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return "missing"
    view = memoryview(data)
    with handle:
        if os.fstat(handle.fileno()).st_size != len(view):
            return "damaged"
        offset = 0
        while chunk := handle.read(_CHUNK):
            if chunk != view[offset : offset + len(chunk)]:
                return "damaged"
            offset += len(chunk)
    return "intact" if offset == len(view) else "damaged"


def _remove_abandoned(path: Path) -> bool:
    """Remove ``path`` if no live writer holds its lock; whether it was removed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return False  # gone already, or not ours to open
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a live writer
        # Names are random and never reused, but check that we locked what we will unlink.
        if not _same_file(fd, path):
            return False
        try:
            path.unlink()
        except OSError:
            return False
        return True
    finally:
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd``."""
    try:
        named = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


def open_regular(
    path: Path, *, follow_symlinks: bool = True, buffering: int = 0
) -> tuple[BinaryIO, int]:
    """``path`` opened for reading, and its size, if it is a regular file.

    Opening does not block (a FIFO without a writer would block ``open`` itself), and the
    opened descriptor is checked with one ``fstat``, not the path, so nothing swapped in
    between is read. ``follow_symlinks=False`` refuses a symbolic link instead of following it.

    Raises:
        NotRegularFile: if it is anything but a regular file.
        OSError: if it cannot be opened (FileNotFoundError if nothing is there).
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow_symlinks else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_symlinks:
            raise NotRegularFile("symbolic link") from None
        raise
    try:
        status = os.fstat(fd)
        kind = _special_kind(status.st_mode)
        if kind is not None:
            raise NotRegularFile(kind)
        return open(fd, "rb", buffering=buffering), status.st_size
    except BaseException:
        os.close(fd)
        raise


def _read_bytes(handle: BinaryIO, size: int) -> bytes:
    """The file's ``size`` bytes, and one more if it has grown since (its hash then fails)."""
    chunks, remaining = [], size + 1
    while remaining > 0 and (chunk := handle.read(remaining)):
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _read_private(handle: BinaryIO, size: int) -> memoryview:
    """The file's bytes in a new numpy buffer, as a read-only view that ends on a multiple of
    :data:`_ALIGNMENT`.

    Ending there, not starting there, is what aligns a payload behind a header of any length
    whose size is a multiple of its element size (a tensor's numbers): numpy computes on
    misaligned arrays about twice as slowly. Spare bytes follow the end: a file that grew
    after it was sized fills some, and then its bytes hash to something else and are refused,
    as a file read whole would be.
    """
    buffer = np.empty(size + _ALIGNMENT + 1, dtype=np.uint8)
    start = -(buffer.ctypes.data + size) % _ALIGNMENT
    filled = 0
    while count := handle.readinto(buffer[start + filled :]):
        filled += count
    buffer.flags.writeable = False
    return memoryview(buffer[start : start + filled])


def _file_digest(path: Path) -> bytes:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").digest()


def _sorted_entries(directory: Path) -> list[os.DirEntry[str]]:
    """The entries of ``directory`` by name; none if it does not exist (a lazy store)."""
    try:
        with os.scandir(directory) as entries:
            return sorted(entries, key=lambda entry: entry.name)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _fsync_directory(directory: Path) -> None:
    """Make the directory's entries durable, not only the files' contents."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
