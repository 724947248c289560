"""The student's identity (docs/method.md §10): every byte that can change a score, and the
prompt encoding the student really sees. The cache namespace and the resume identity both
rest on it, so a fine-tune, an edited chat template or another tokenizer is another student.

    file digest  SHA-256 over the SHA-256 digests of its 64 MiB blocks (the blocks of every
                 file are hashed in parallel threads: disk speed, not one core's)
    files        every file under the student's directory but `OUT`, by relative path
    digest       blake2b-128 over the files' (path, size, digest) and, for a hub id, the
                 resolved commit

A local student is its real directory (symlinks resolved: `latest/` repointed after the
identity was taken changes nothing), walked through directory symlinks, plus any file its
weight index names. The actors load that real directory (or the hub commit the driver
resolved) and check its files against these digests before and after loading (`verify`):
what was identified is what runs, or the run stops naming the file.

Hashing is memoized per machine in a small sidecar per directory (`hashes/` in the localnat
cache dir), keyed by each file's real path, size, mtime_ns, ctime_ns and inode: a 64 GB
student is hashed once per machine, not every night; an actor on the driver's machine checks
it by a stat per file, one on another machine hashes it there once.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ...logs import LOG
from ...scoring.student import cache_dir

BLOCK = 64 << 20  # bytes hashed by one task
READ = 8 << 20  # bytes per read: large reads keep a disk or a network mount streaming
THREADS = 8
# Out of the identity, the only files that are: transformers never reads them when it loads
# a model or tokenizer from a directory. Documentation and licences by name, and hidden
# entries (`.git/`, `.gitattributes`, the `.cache/` that `hf download --local-dir` leaves).
OUT = ("README*", "LICENSE*", "LICENCE*", "NOTICE*", "*.md")


class StudentError(ValueError):
    """The student cannot be identified: no score of it may be cached or resumed."""


class StudentChanged(StudentError):
    """The files loaded are not the files identified: the run stops before a score."""


@dataclass(frozen=True)
class StudentIdentity:
    """What a student is, for the cache and for a resume. `files`: relative path -> digest
    (hub ids: the hub's own content hashes when the files are not on this machine);
    `commit`: a hub id's resolved commit, which the actors then load."""

    name: str
    files: dict[str, str]
    commit: str | None = None
    prompt_probe: dict = field(default_factory=dict)
    family: str | None = None  # the model family its name or type says (student.family)
    root: str | None = None  # a local student's real directory: what the actors load

    @property
    def digest(self) -> str:
        h = hashlib.blake2b(digest_size=16)
        h.update(json.dumps([self.commit, sorted(self.files.items())]).encode())
        return h.hexdigest()

    def pinned(self, score):
        """`score` (a ScoreConfig) loading exactly this student: its real directory, or
        the hub commit resolved when it was identified."""
        from dataclasses import replace

        if self.root is not None:
            return replace(score, student=self.root, revision=None)
        return replace(score, revision=self.commit or score.revision)

    def record(self) -> dict:
        """The identity as the run and the cache write it down."""
        return {
            "digest": self.digest,
            "commit": self.commit,
            "files": dict(sorted(self.files.items())),
            "prompt_probe": self.prompt_probe,
        }


def changes(before: dict, now: dict) -> list[str]:
    """What differs between two `record()`s, in words a user can check."""
    out = []
    old, new = before.get("files") or {}, now.get("files") or {}
    for name in sorted(set(old) | set(new)):
        if name not in old:
            out.append(f"{name} added")
        elif name not in new:
            out.append(f"{name} removed")
        elif old[name] != new[name]:
            out.append(f"{name} changed")
    if before.get("commit") != now.get("commit"):
        out.append(f"commit {before.get('commit')} -> {now.get('commit')}")
    if before.get("prompt_probe") != now.get("prompt_probe"):
        out.append("the rendered prompt (chat template, system prompt or special tokens)")
    return out or ["its identity"]


def identify(student: str, revision: str | None, probe: dict) -> StudentIdentity:
    """The identity of a local directory (by its real path) or a hub id (see the module
    doc)."""
    if Path(student).is_dir():
        root = os.path.realpath(student)
        return StudentIdentity(student, hash_dir(Path(root)), None, probe, root=root)
    if looks_local(student):
        raise StudentError(
            f"the student directory {student!r} does not exist (a local path: not looked up on "
            "the hub); check the path, or give a hub id as org/name"
        )
    commit, files = _hub(student, revision)
    return StudentIdentity(student, files, commit, probe)


def checked_load(student: StudentIdentity, load):
    """`load()` (a model or tokenizer of `student.pinned`), the student's files checked
    against their digests before and after it: the bytes loaded are the bytes identified."""
    verify(student)
    loaded = load()
    verify(student)
    return loaded


def looks_local(student: str) -> bool:
    """A path, not a hub id (`org/name`): it starts like a path, or has more parts."""
    return student.startswith(("/", ".", "~")) or student.count("/") > 1 or "\\" in student


def verify(student: StudentIdentity) -> None:
    """Raise StudentChanged, naming the files, unless a local student's files are still the
    ones identified (a stat per file where they were hashed before, else hashed here once).
    A hub student is its pinned commit: nothing to check."""
    if student.root is None:
        return
    try:
        now = hash_dir(Path(student.root))
    except (OSError, StudentError) as err:
        raise StudentChanged(f"the student {student.name!r} cannot be read now: {err}") from None
    if now != student.files:
        changed = ", ".join(changes({"files": student.files}, {"files": now}))
        raise StudentChanged(
            f"the student {student.name!r} changed since it was identified ({changed} in "
            f"{student.root}): no score of it is kept; rerun once it holds still (a model "
            "updated in place must not be scored under its old identity)"
        )


def _hub(repo: str, revision: str | None) -> tuple[str, dict[str, str]]:
    """A hub id's commit and files: hashed here when the commit is in the local hub cache,
    else the hub's content hashes (LFS sha256, git blob ids) for the commit it resolves."""
    from huggingface_hub import HfApi, snapshot_download

    errors = []
    commit = None
    try:
        info = HfApi().model_info(repo, revision=revision, files_metadata=True)
        commit = info.sha
    except Exception as err:  # noqa: BLE001 - offline: the local hub cache may have it
        errors.append(f"hub: {type(err).__name__}: {str(err).splitlines()[0][:200]}")
    try:
        local = snapshot_download(repo, revision=commit or revision, local_files_only=True)
        return Path(local).name, hash_dir(Path(local))
    except Exception as err:  # noqa: BLE001
        errors.append(f"local hub cache: {type(err).__name__}: {str(err).splitlines()[0][:200]}")
    if commit is None:
        raise StudentError(f"cannot identify the student {repo!r}: " + "; ".join(errors))
    files = {}
    for s in info.siblings or []:
        lfs = getattr(s, "lfs", None)
        sha = getattr(lfs, "sha256", None) or (lfs.get("sha256") if isinstance(lfs, dict) else None)
        if not _out(s.rfilename):
            files[s.rfilename] = f"hub:{sha or s.blob_id}"
    return commit, files


def _out(relative: str) -> bool:
    parts = relative.split("/")
    return any(p.startswith(".") for p in parts) or any(
        fnmatch.fnmatch(parts[-1], pattern) for pattern in OUT
    )


def student_files(root: Path) -> list[str]:
    """Relative paths of the files that make the student (every file but `OUT`), sorted:
    directory symlinks followed (a `shards/` linked elsewhere is the student's too), and the
    files a weight index (`*.index.json`) names wherever they lie. A broken symlink, or an
    index naming a file that is not there, is an error naming it."""
    out, seen = set(), {os.path.realpath(root)}
    for where, dirs, names in os.walk(root, followlinks=True):
        real = [os.path.realpath(os.path.join(where, d)) for d in dirs]
        dirs[:] = [d for d, r in zip(dirs, real) if not d.startswith(".") and r not in seen]
        seen.update(real)
        for name in names:
            path = os.path.join(where, name)
            rel = os.path.relpath(path, root).replace(os.sep, "/")
            if _out(rel):
                continue
            if not os.path.exists(path):
                raise StudentError(
                    f"the student's {rel} is a broken symlink (to {os.readlink(path)!r})"
                )
            out.add(rel)
    for index in [n for n in out if n.endswith(".index.json")]:
        out.update(_indexed(root, index))
    return sorted(out)


def _indexed(root: Path, index: str) -> set[str]:
    """The files a weight index's `weight_map` names (transformers opens each of them),
    relative to the student."""
    try:
        weight_map = json.loads((root / index).read_text()).get("weight_map") or {}
    except (OSError, ValueError, AttributeError) as err:
        raise StudentError(f"the student's {index} is not a weight index: {err}") from None
    named = set()
    for file in set(weight_map.values()) if isinstance(weight_map, dict) else ():
        rel = os.path.normpath(os.path.join(os.path.dirname(index), str(file))).replace(os.sep, "/")
        if not (root / rel).is_file():
            raise StudentError(f"the student's {index} names {file!r}, which is not a file")
        named.add(rel)
    return named


def hash_dir(root: Path) -> dict[str, str]:
    """Relative path -> digest of every file of the student; memoized (see the module doc)."""
    names = student_files(root)
    if not names:
        raise StudentError(f"the student directory {str(root)!r} holds no file")
    memo_path = _memo_path(root)
    memo = _read_memo(memo_path)
    stats = {n: _stat(root / n) for n in names}
    todo = [n for n in names if memo.get(n, {}).get("stat") != stats[n]]
    fresh = hash_files([root / n for n in todo])
    out = {n: memo[n]["digest"] for n in names if n not in todo}
    out.update(zip(todo, fresh))
    if todo or set(memo) != set(names):
        remember(memo_path, {n: {"stat": stats[n], "digest": out[n]} for n in names})
    return out


def hash_files(paths: list[Path]) -> list[str]:
    """Each file's digest; the blocks of all the files are hashed in parallel threads
    (hashlib releases the GIL on large buffers)."""
    jobs = []
    for i, path in enumerate(paths):
        size = os.path.getsize(path)
        jobs += [(i, path, start, min(BLOCK, size - start)) for start in range(0, size, BLOCK)]
        if size == 0:
            jobs.append((i, path, 0, 0))
    with ThreadPoolExecutor(THREADS) as pool:
        blocks = list(pool.map(lambda job: _block(*job[1:]), jobs))
    per_file: list[list[bytes]] = [[] for _ in paths]
    for (i, _, _, _), digest in zip(jobs, blocks):
        per_file[i].append(digest)
    return [
        hashlib.sha256(b"".join(d) + str(os.path.getsize(p)).encode()).hexdigest()
        for p, d in zip(paths, per_file)
    ]


def _block(path: Path, start: int, length: int) -> bytes:
    h = hashlib.sha256()  # measured faster than blake2b (CPUs hash it in hardware), and
    # unlike xxhash a student cannot be crafted to collide with another (jobs/identity.py)
    fd = os.open(path, os.O_RDONLY)
    try:
        done = 0
        while done < length:
            data = os.pread(fd, min(READ, length - done), start + done)
            if not data:
                raise OSError(f"{path} shrank while it was hashed")
            h.update(data)
            done += len(data)
    finally:
        os.close(fd)
    return h.digest()


def _stat(path: Path) -> list:
    real = os.path.realpath(path)
    st = os.stat(real)
    return [real, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _memo_path(root: Path) -> Path:
    key = hashlib.blake2b(os.path.realpath(root).encode(), digest_size=12).hexdigest()
    return cache_dir() / "hashes" / f"{key}.json"


def _read_memo(path: Path) -> dict:
    """The memo's entries of the shape this version writes ({"stat": [...], "digest": str});
    anything else (another version's, a cut file) is as if absent: hashed again."""
    memo = recall(path)
    if not isinstance(memo, dict):
        return {}
    return {
        name: entry
        for name, entry in memo.items()
        if isinstance(entry, dict)
        and isinstance(entry.get("stat"), list)
        and isinstance(entry.get("digest"), str)
    }


def recall(path: Path):
    """What this machine remembered at `path` (`remember`); None when absent or cut."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


_unwritable: set[str] = set()  # memo directories already warned about


def remember(path: Path, data) -> None:
    """Keep `data` (JSON) at `path` for the next run on this machine: written aside and
    renamed, so two drivers at once each leave a whole file. Where it cannot be written the
    next run does the work again, and this one says so once."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)
    except OSError as err:
        if str(path.parent) not in _unwritable:
            _unwritable.add(str(path.parent))
            LOG.warning(
                f"cannot keep what is known of the student in {path.parent} "
                f"({err.strerror or err}): the student is hashed again on every run; set "
                "LOCALNAT_CACHE to a writable directory"
            )
