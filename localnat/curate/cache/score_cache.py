"""The score cache a run uses (--cache), as one object the job makes once its student is
identified and hands to its Run: the namespaces of this student and its scoring settings,
each declared the first time, read only while registered as their reader, added to by the
passes' sink, and compacted at the night's end. Every file it leaves is written by
writer.py; nothing here touches a run's directory."""

from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from dataclasses import dataclass, field

import pyarrow as pa

from ...fields import SCORES
from ...logs import LOG
from ...scoring.config import ScoreConfig
from ...scoring.schema import SCORING_VERSION
from ..job_config import CurateConfig
from ..run.identity import StudentIdentity
from ..signals import result_columns
from ..storage import join, read_text
from .lookup import shared_view
from .namespace import VERSION, expected_schema, view
from .writer import compact, declare, reading


@dataclass
class ScoreCache:
    """`ScoreCache.of(cfg, student)`: None without --cache. `settings`: the options declared
    to change a score (`SCORES`); `opened`: the namespaces read so far, compacted at the end."""

    uri: str
    settings: dict
    score: ScoreConfig
    student: StudentIdentity
    opened: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, cfg: CurateConfig, student: StudentIdentity) -> ScoreCache | None:
        if not cfg.cache:
            return None
        return cls(cfg.cache, cfg.settings(SCORES), cfg.score, student)

    def about(self, columns: list[str] | None = None, tag: str = "") -> dict:
        """What every score of a namespace depends on: the scoring code's version, the
        student's identity and prompt probe, the settings, the columns it holds (the score
        columns unless said: a racing round holds its own) and `tag` (the round)."""
        return {
            **({"tag": tag} if tag else {}),
            "scoring_version": SCORING_VERSION,
            "settings": self.settings,
            "student": self.student.digest,
            "prompt_probe": self.student.prompt_probe,
            "columns": columns or result_columns(self.score),
        }

    def namespace(self, columns: list[str] | None = None, tag: str = "") -> str:
        """The directory of the namespace `about` describes. The student's path is left
        out (the same bytes elsewhere hit); its identity is in."""
        text = json.dumps(self.about(columns, tag), sort_keys=True, default=str)
        digest = hashlib.blake2b(text.encode(), digest_size=12).hexdigest()
        return join(self.uri, f"{VERSION}-{digest}")

    def located(self, columns: list[str] | None = None, tag: str = "") -> tuple[str, pa.Schema]:
        """The namespace and the schema its rows hold; nothing written."""
        columns = columns or result_columns(self.score)
        return self.namespace(columns, tag), expected_schema(self.score, columns)

    @contextmanager
    def reading(self, columns: list[str], tag: str = ""):
        """Registered as a reader of the namespace of `columns` and `tag` (declared the
        first time), so a compaction keeps what it reads: yields the registration (a lease)
        and the view its actors share, taken once registered."""
        ns, schema = self.located(columns, tag)
        if read_text(join(ns, "settings.json")) is None:
            about = {**self.about(columns, tag), "student": self.student.name}
            declare(ns, schema, {**about, "identity": self.student.record()})
        with reading(ns) as registration:
            self.opened.add(ns)
            yield registration, shared_view(view(ns, schema))

    def compact(self) -> list[dict]:
        """The night's end: each namespace read folded once it passes the bound. A failure
        is a warning: the run's outputs are written, and the next night compacts."""
        return [_compact(ns) for ns in sorted(self.opened)]


def _compact(ns: str) -> dict:
    try:
        return compact(ns)
    except Exception as err:  # noqa: BLE001
        LOG.warning(f"cache compaction of {ns} failed: {type(err).__name__}: {err}")
        return {"namespace": ns, "error": f"{type(err).__name__}: {err}"}
