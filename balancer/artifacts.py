"""Prefect 2/3's artifacts: what a task or a flow shows of its work, kept with its run.

    from balancer.artifacts import create_markdown_artifact, create_table_artifact

    create_markdown_artifact("# Report\\n12 rows loaded", key="daily-report")
    create_table_artifact([{"region": "eu", "rows": 7}, {"region": "us", "rows": 5}])
    create_link_artifact("https://example.com/report.pdf", link_text="the PDF")
    progress = create_progress_artifact(0.0); update_progress_artifact(progress, 50.0)

Made in a task (on its worker) or in a @flow function's body, an artifact belongs to that
flow run and task run: ``balancer flow ID`` lists them, the dashboard's flow page shows
them (markdown rendered from text nodes, dashboard/static/markdown.js; a link is
followed only if it is http or https),
``balancer artifact ls`` shows the latest of each key and ``inspect`` one in full. Made
elsewhere, it belongs to no run (then give it a key, to find it again).

An artifact lives ``BALANCER_RESULT_TTL`` from when it is made, as a run's records do.
Keys are Prefect's: lowercase letters, digits and dashes. Data are kept as JSON carries
them (a value JSON has no form for, bytes say, as its repr), up to 256 KiB packed. Like a
run's records, artifacts are not signed.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import redis

from balancer import building, runcontext
from balancer.common import codec, partitions
from balancer.common.codec import CodecError
from balancer.common.keys import Keys
from balancer.common.models import new_id
from balancer.common.replies import as_bytes_dict, as_bytes_list, as_opt_bytes

KINDS = ("markdown", "table", "link", "progress")
KEY = re.compile(r"[a-z0-9-]{1,200}")
DATA_LIMIT = 256 * 1024  # bytes of an artifact packed
PER_RUN_LIMIT = 1000  # artifacts a run lists (more are kept, under their keys only)


class ArtifactError(ValueError):
    """An artifact that cannot be made: a bad key, kind of data, or too much of it."""


@dataclass(frozen=True)
class Artifact:
    """One artifact as kept. ``data``: markdown text; a table as {"columns": [...],
    "rows": [[...]]}; a link as {"link": url, "text": ...}; a progress as a percentage."""

    id: str
    kind: str
    data: Any
    key: str | None = None
    description: str | None = None
    flow_run_id: str | None = None
    task_run_id: str | None = None
    created_ms: int = 0

    def encode(self) -> bytes:
        return codec.pack([self.id, self.kind, self.data, self.key, self.description,
                           self.flow_run_id, self.task_run_id, self.created_ms])

    @classmethod
    def decode(cls, raw: bytes) -> Artifact:
        """Raise ArtifactError when ``raw`` is not one (written by someone else)."""
        try:
            (id_, kind, data, key, description, flow_run_id, task_run_id,
             created_ms) = codec.unpack(raw)
            data = _jsonable(data)
            if not _shaped(kind, data):
                raise ValueError(f"{kind!r} data of the wrong shape")
            return cls(str(id_), kind, data, _opt(key), _opt(description), _opt(flow_run_id),
                       _opt(task_run_id), int(created_ms))
        except (CodecError, TypeError, ValueError) as exc:
            raise ArtifactError(f"not an artifact: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def get(cls, key: str, *, client: redis.Redis | None = None,
            redis_url: str | None = None, namespace: str | None = None) -> Artifact | None:
        """The latest artifact made under ``key`` (Prefect's ``Artifact.get``), or None
        (none made, or it expired)."""
        from balancer.client import here, talking

        _check_key(key)
        conn, settings = here(client, redis_url, namespace)
        keys = Keys(settings.namespace)
        with talking(conn):
            found = as_opt_bytes(conn.hget(keys.artifacts, key))
            return None if found is None else read(conn, keys, found.decode())


def _jsonable(data: Any) -> Any:
    """``data`` as JSON carries it (bytes and other values as their repr, keys as
    strings), so that every reader (the dashboard, ``--json``) can show it."""
    try:
        return json.loads(json.dumps(data, default=repr, skipkeys=True))
    except (TypeError, ValueError, RecursionError):
        return repr(data)


def _shaped(kind: Any, data: Any) -> bool:
    """Whether ``data`` is what an artifact of ``kind`` holds (one read from Redis may
    have been written by anyone)."""
    if kind == "markdown":
        return isinstance(data, str)
    if kind == "table":
        return (isinstance(data, dict) and isinstance(data.get("columns"), list)
                and isinstance(data.get("rows"), list)
                and all(isinstance(r, list) for r in data["rows"]))
    if kind == "link":
        return (isinstance(data, dict) and isinstance(data.get("link"), str)
                and isinstance(data.get("text"), str))
    return kind == "progress" and isinstance(data, (int, float)) and not isinstance(data, bool)


def _opt(value: Any) -> str | None:
    return None if value is None else str(value)


def _check_key(key: Any) -> None:
    if key is not None and (not isinstance(key, str) or not KEY.fullmatch(key)):
        raise ArtifactError(f"an artifact key is 1 to 200 lowercase letters, digits or dashes,"
                            f" got {key!r}")


# -- making them ---------------------------------------------------------------------------


def create_markdown_artifact(markdown: str, key: str | None = None,
                             description: str | None = None) -> str:
    """An artifact of markdown text (shown as text); its id."""
    if not isinstance(markdown, str):
        raise ArtifactError(f"markdown must be a string, got {type(markdown).__name__}")
    return _create("markdown", markdown, key, description)


def create_table_artifact(table: Any, key: str | None = None,
                          description: str | None = None) -> str:
    """An artifact of a table: a list of dicts (one per row), a dict of lists (one per
    column) or a list of lists (rows, no header); its id."""
    return _create("table", _table(table), key, description)


def create_link_artifact(link: str, link_text: str | None = None, key: str | None = None,
                         description: str | None = None) -> str:
    """An artifact of a link (``link_text`` shown for it); its id."""
    if not isinstance(link, str) or not link:
        raise ArtifactError(f"link must be a non-empty string, got {link!r}")
    return _create("link", {"link": link, "text": link_text or link}, key, description)


def create_progress_artifact(progress: float, key: str | None = None,
                             description: str | None = None) -> str:
    """An artifact of a progress, in percent (0 to 100); its id, for
    ``update_progress_artifact``."""
    return _create("progress", _percent(progress), key, description)


def update_progress_artifact(artifact_id: str, progress: float,
                             description: str | None = None) -> str:
    """Set the progress of the progress artifact ``artifact_id``; its id."""
    from balancer.client import here, talking

    value = _percent(progress)
    conn, settings = here()
    keys = _keys_of(Keys(settings.namespace), artifact_id)
    with talking(conn):
        found = read(conn, keys, artifact_id)
        if found is None or found.kind != "progress":
            raise ArtifactError(f"no progress artifact {artifact_id} (it expired, or is of"
                                " another kind)")
        changed = Artifact(**{**asdict(found), "data": value,
                              "description": description or found.description})
        conn.set(keys.artifact(artifact_id), changed.encode(), xx=True, keepttl=True)
    return artifact_id


def _percent(progress: Any) -> float:
    if (isinstance(progress, bool) or not isinstance(progress, (int, float))
            or not math.isfinite(progress) or not 0 <= progress <= 100):
        raise ArtifactError(f"progress is a percentage from 0 to 100, got {progress!r}")
    return float(progress)


def _table(table: Any) -> dict[str, Any]:
    """A table as {"columns": [...], "rows": [[...]]}."""
    if isinstance(table, Mapping):
        columns = [str(c) for c in table]
        cols = [list(v) for v in table.values()]
        height = max((len(c) for c in cols), default=0)
        rows = [[c[i] if i < len(c) else None for c in cols] for i in range(height)]
        return {"columns": columns, "rows": rows}
    if isinstance(table, Sequence) and not isinstance(table, (str, bytes)):
        items = list(table)
        if all(isinstance(r, Mapping) for r in items):
            columns = list(dict.fromkeys(str(k) for r in items for k in r))
            return {"columns": columns,
                    "rows": [[r.get(c) for c in columns] for r in items]}
        if all(isinstance(r, Sequence) and not isinstance(r, (str, bytes)) for r in items):
            return {"columns": [], "rows": [list(r) for r in items]}
    raise ArtifactError("a table is a list of dicts, a dict of lists or a list of lists, got"
                        f" {type(table).__name__}")


def _create(kind: str, data: Any, key: str | None, description: str | None) -> str:
    from balancer.client import here, talking
    from balancer.submit import redis_now_ms

    _check_key(key)
    if description is not None and not isinstance(description, str):
        raise ArtifactError(f"description must be a string, got {description!r}")
    data = _jsonable(data)
    flow_run_id, task_run_id = _run()
    conn, settings = here()  # in a task, its worker's cluster; in a flow, its run's
    base = Keys(settings.namespace)
    keys = partitions.flow_keys(base, flow_run_id) if flow_run_id else base
    artifact_id = partitions.flow_id_in(new_id(), keys.partition)  # found from its id
    ttl_ms = int(settings.result_ttl * 1000)
    with talking(conn):
        artifact = Artifact(artifact_id, kind, data, key, description, flow_run_id,
                            task_run_id, redis_now_ms(conn, base, settings))
        blob = artifact.encode()  # JSON's values: msgpack carries them
        if len(blob) > DATA_LIMIT:
            raise ArtifactError(f"the artifact packs to {len(blob)} bytes, over the limit of"
                                f" {DATA_LIMIT}")
        pipe = conn.pipeline(transaction=False)
        pipe.set(keys.artifact(artifact_id), blob, px=ttl_ms)
        if flow_run_id:
            listed = keys.flow_artifacts(flow_run_id)
            pipe.rpush(listed, artifact_id)
            pipe.ltrim(listed, 0, PER_RUN_LIMIT - 1)
            pipe.pexpire(listed, ttl_ms)
        pipe.execute()
        if key is not None:  # partition 0's: a separate call on a Redis Cluster
            conn.hset(base.artifacts, key, artifact_id)
    return artifact_id


def _run() -> tuple[str | None, str | None]:
    """The flow run and task run the calling code runs in (None, None: neither)."""
    facts = runcontext.current()
    if facts is not None:
        return facts.flow_run_id, facts.task_run_id
    run = building.current_run()
    return (run.id, None) if run is not None else (None, None)


# -- reading them --------------------------------------------------------------------------


def _keys_of(base: Keys, artifact_id: str) -> Keys:
    """The keys of the partition an artifact lives in (its id names it, as a flow's)."""
    return partitions.flow_keys(base, artifact_id)


def read(client: redis.Redis, base: Keys, artifact_id: str) -> Artifact | None:
    """The artifact ``artifact_id``, or None (expired, or not one)."""
    raw = as_opt_bytes(client.get(_keys_of(base, artifact_id).artifact(artifact_id)))
    if raw is None:
        return None
    try:
        return Artifact.decode(raw)
    except ArtifactError:
        return None


def of_run(client: redis.Redis, keys: Keys, flow_id: str) -> list[Artifact]:
    """The artifacts made in the run ``flow_id`` (``keys``: its partition's), in the order
    made; those expired or not artifacts left out."""
    ids = [i.decode(errors="replace") for i in as_bytes_list(client.lrange(
        keys.flow_artifacts(flow_id), 0, -1))]
    if not ids:
        return []
    pipe = client.pipeline(transaction=False)
    for artifact_id in ids:
        pipe.get(keys.artifact(artifact_id))
    out = []
    for raw in pipe.execute():
        if isinstance(raw, bytes):
            try:
                out.append(Artifact.decode(raw))
            except ArtifactError:
                continue
    return out


def latest(client: redis.Redis, keys: Keys) -> list[Artifact]:
    """The latest artifact of each key, by key (those expired left out)."""
    found = as_bytes_dict(client.hgetall(keys.artifacts))
    out = []
    for _, artifact_id in sorted(found.items()):
        artifact = read(client, keys, artifact_id.decode(errors="replace"))
        if artifact is not None:
            out.append(artifact)
    return out


def summary(artifact: Artifact) -> str:
    """One line for a terminal."""
    if artifact.kind == "markdown":
        first = next((ln for ln in str(artifact.data).splitlines() if ln.strip()), "")
        shown = first[:80]
    elif artifact.kind == "table":
        shown = f"{len(artifact.data.get('rows', []))} rows"
    elif artifact.kind == "link":
        shown = str(artifact.data.get("link", ""))
    else:
        shown = f"{artifact.data:.0f}%"
    named = f" {artifact.key}" if artifact.key else ""
    said = f" ({artifact.description})" if artifact.description else ""
    return f"{artifact.kind}{named}: {shown}{said}"


__all__ = ["Artifact", "ArtifactError", "create_link_artifact", "create_markdown_artifact",
           "create_progress_artifact", "create_table_artifact", "update_progress_artifact"]
