"""Load complete job folders into ``<workspace>/store.duckdb``: one writer, idempotent, atomic.

- Single writer: an exclusive ``fcntl.flock`` on ``<workspace>/store.lock`` for the whole ingest.
- Idempotent: each done job's fingerprint (hash of config.json, results.json, circuit.json) is
  stored; unchanged jobs are skipped, changed ones are deleted and re-inserted by key.
- Atomic: every file is parsed before the store is opened for writing, then all writes happen in
  ONE transaction; a job whose files do not parse is reported and left out, never half-loaded.
- Readers in other processes: the store is opened read-write only for the write transaction, so
  readers (which retry while it is held, see ``results.store.connect``) wait milliseconds.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from results.jobs import (
    CIRCUIT_FILE,
    EDGES_FILE,
    JobFolder,
    UnreadableJob,
    circuit_nodes,
    job_dirs,
    job_identities,
    read_job,
)
from results.replicates import CONTROL_EDGE_RATIO, FLAG_NOT_DISTINGUISHABLE
from results.store import (
    LOCK_FILE,
    MARK_SUPERSEDED,
    SCHEMA_VERSION,
    StoreError,
    arrow_schema,
    insert,
    one_line,
    open_store,
    replace_rows,
    store_path,
    stored_schema_version,
)
from runtime.job import DONE, INVALID, LOG_FILE, METRICS_FILE, JobState

METRICS_PARQUET = "metrics.parquet"  # preferred when present: read as-is, no parsing
LOCK_TIMEOUT_S = 600.0

# Every table's columns are the store's DDL (results/store.py); these are its Arrow forms.
METRICS_SCHEMA = arrow_schema("train_metrics", without=("run_key",))  # a metrics file's columns
METRIC_ROWS_SCHEMA = METRICS_SCHEMA.append(pa.field("run_key", pa.string()))
# Columns the store sets itself after the insert: superseded_by, not_distinguishable.
RUNS_SCHEMA = arrow_schema("runs_all", without=("superseded_by",))
CIRCUITS_SCHEMA = arrow_schema("circuits_all", without=("not_distinguishable", "superseded_by"))
TRIALS_SCHEMA = arrow_schema("prune_trials")
NODES_SCHEMA = arrow_schema("circuit_nodes")
EDGES_SCHEMA = arrow_schema("circuit_edges")
GROUNDTRUTH_SCHEMA = arrow_schema("groundtruth")
JOBS_SCHEMA = arrow_schema("jobs")
INGESTED_SCHEMA = arrow_schema("ingested")


@dataclass
class IngestSummary:
    scanned: int = 0                       # job folders seen
    states: dict[str, int] = field(default_factory=dict)  # jobs per state
    loaded: list[str] = field(default_factory=list)       # keys (re)written this time
    unchanged: int = 0                     # done jobs already in the store as they are
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (folder, why)
    metrics_rows: int = 0
    seconds: float = 0.0

    def __str__(self) -> str:
        states = ", ".join(f"{n} {s}" for s, n in sorted(self.states.items())) or "no jobs"
        text = (f"ingested {len(self.loaded)} job(s), {self.unchanged} unchanged "
                f"({states}; {self.metrics_rows} metric rows) in {self.seconds:.2f}s")
        for name, why in self.skipped:
            text += f"\n  skipped {name}: {why}"
        return text


# ---------------------------------------------------------------------------------------------
# Small readers: config/results dicts → row dicts. Missing keys are NULL, never an error.


def _get(obj: Any, *path: str) -> Any:
    for part in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True)


def _timestamp(epoch: Any) -> datetime | None:
    if not isinstance(epoch, (int, float)):
        return None
    return datetime.fromtimestamp(epoch, tz=timezone.utc).replace(tzinfo=None)


# What makes two train jobs replicates of one model: everything in the config but these.
_NOT_FAMILY = frozenset({"kind", "key", "seed", "control", "inputs", "meta"})


def model_family(config: dict[str, Any]) -> str:
    """A run's family: the hash of its train config minus its seed (and control), so model
    seeds of one sweep point, and that point's random_init control, share it."""
    rest = {k: v for k, v in config.items() if k not in _NOT_FAMILY}
    return hashlib.sha256(json.dumps(rest, sort_keys=True).encode()).hexdigest()[:16]


def _run_row(job: JobFolder, identity: str) -> dict[str, Any]:
    cfg, res, meta = job.config, job.results or {}, job.meta
    d_model = _get(cfg, "model", "d_model")
    d_mlp = _get(cfg, "model", "d_mlp")
    if d_mlp is None and isinstance(d_model, int):
        d_mlp = 4 * d_model  # ModelSpec.mlp_width
    return {
        "key": job.key, "recipe": meta.get("recipe"), "recipe_hash": meta.get("recipe_hash"),
        "sweep_point": _json(meta.get("sweep_point")),
        "n_layer": _get(cfg, "model", "n_layer"), "d_model": d_model, "d_mlp": d_mlp,
        "n_params": res.get("n_params"), "n_nonzero": res.get("n_nonzero"),
        "sparsity_target": _get(cfg, "sparsity", "target"),
        "kept_fraction": res.get("kept_fraction"),
        "anneal": _json(_get(cfg, "sparsity", "anneal")),
        "tokens": res.get("tokens"), "steps": res.get("steps"),
        "heldout_loss": res.get("heldout_loss"), "unigram_loss": res.get("unigram_heldout_loss"),
        "train_loss": res.get("train_loss"),
        "wall_time_s": res.get("wall_time_s"), "device": res.get("device"),
        "tokens_per_s": res.get("tokens_per_s"), "seed": cfg.get("seed"),
        "family": model_family(cfg),
        # random_init is in the config (it changes the job); a dense baseline is an ordinary
        # dense job that only the plan's provenance marks.
        "control": cfg.get("control", meta.get("control")),
        "git_commit": meta.get("git_commit"), "git_dirty": meta.get("git_dirty"),
        "code_version": meta.get("code_version"),
        "package_versions": _json(meta.get("package_versions")),
        "created_at": _timestamp(res.get("finished_at")), "identity": identity,
    }


_DUCKDB_TYPES = {pa.int64(): "BIGINT", pa.float64(): "DOUBLE"}
# A constant built from our own schema, not from input: the column types DuckDB parses into.
_JSONL_COLUMNS = "{" + ", ".join(
    f"{f.name}: '{_DUCKDB_TYPES[f.type]}'" for f in METRICS_SCHEMA) + "}"


def _read_jsonl(keys_by_file: dict[str, str]) -> pa.Table:
    """Every file in one multi-threaded DuckDB scan (about twice pyarrow's JSON reader), each
    row tagged with the run key of its file.

    Keys not in METRICS_SCHEMA (per-tensor sparsity, total_steps, …) are skipped; a torn or
    malformed line is an error, never silently dropped; a line without a step is not a step."""
    files = pa.table({"filename": list(keys_by_file), "run_key": list(keys_by_file.values())})
    with duckdb.connect() as scratch:  # in memory: the store is not open yet
        scratch.register("_files", files)
        return scratch.sql(
            f"SELECT m.* EXCLUDE (filename), f.run_key "
            f"FROM read_json(?, format = 'newline_delimited', columns = {_JSONL_COLUMNS}, "
            f"filename = true) m JOIN _files f USING (filename) WHERE m.step IS NOT NULL",
            params=[list(keys_by_file)],
        ).to_arrow_table()


def _read_parquet(path: Path, key: str) -> pa.Table:
    table = pq.read_table(path)
    for f in METRICS_SCHEMA:
        if f.name not in table.column_names:
            table = table.append_column(f, pa.nulls(table.num_rows, f.type))
    table = table.select(METRICS_SCHEMA.names).cast(METRICS_SCHEMA)
    table = table.filter(pc.is_valid(table["step"]))
    return table.append_column("run_key", pa.repeat(pa.scalar(key), table.num_rows))


def read_metrics(jobs: list[JobFolder]) -> tuple[pa.Table, dict[str, str]]:
    """The metrics of train ``jobs`` as one Arrow table, and the jobs whose metrics are broken.

    ``metrics.parquet`` is preferred when a job wrote it; else ``metrics.jsonl``; else none."""
    tables, failures = [], {}
    jsonl: dict[str, str] = {}
    for job in jobs:
        if (job.path / METRICS_PARQUET).is_file():
            path = job.path / METRICS_PARQUET
            try:
                tables.append(_read_parquet(path, job.key))
            except (OSError, pa.ArrowException) as error:
                failures[job.key] = f"unreadable {METRICS_PARQUET}: {error}"
        elif (job.path / METRICS_FILE).is_file():
            jsonl[str(job.path / METRICS_FILE)] = job.key
    if jsonl:
        try:
            tables.append(_read_jsonl(jsonl))
        except duckdb.Error:
            # Some file is broken: read them one by one to leave out only its job.
            for jsonl_path, key in jsonl.items():
                try:
                    tables.append(_read_jsonl({jsonl_path: key}))
                except duckdb.Error as error:
                    failures[key] = f"unreadable {METRICS_FILE}: {one_line(error)}"
    if not tables:
        return METRIC_ROWS_SCHEMA.empty_table(), failures
    return pa.concat_tables([t.cast(METRIC_ROWS_SCHEMA) for t in tables]), failures


def _circuit_row(job: JobFolder, run_key: str, identity: str) -> dict[str, Any]:
    cfg, res = job.config, job.results or {}
    return {
        "key": job.key, "run_key": run_key,
        "task": res.get("task") or cfg.get("task"),
        "loss_threshold": res.get("loss_threshold", _get(cfg, "prune", "loss_threshold")),
        "ablation": res.get("ablation", _get(cfg, "prune", "ablation")),
        "k_coef": res.get("k_coef", _get(cfg, "prune", "k_coef")),
        "achieved_loss": res.get("achieved_loss"), "full_model_loss": res.get("full_model_loss"),
        "n_nodes": res.get("n_nodes"), "nodes_by_kind": _json(res.get("nodes_by_kind")),
        "n_edges": res.get("n_edges"), "edges_by_type": _json(res.get("edges_by_type")),
        "sufficiency_loss": res.get("sufficiency_loss"),
        "necessity_loss": res.get("necessity_loss"),
        "found": res.get("found"), "reason": res.get("reason"),
        "prune_seed": cfg.get("seed"), "control": cfg.get("control"),
        **{name: res.get(name) for name in (
            "random_circuit_loss", "kl_to_full", "calibrate", "freeze_norms", "silent_zero",
            "calibration_scale", "tied_nodes", "n_trials", "n_test_pairs")},
        "created_at": _timestamp(res.get("finished_at")), "identity": identity,
    }


def _trial_rows(job: JobFolder) -> list[dict[str, Any]]:
    trials = (job.results or {}).get("trials") or []
    return [{"prune_key": job.key, **{name: trial.get(name) for name in TRIALS_SCHEMA.names[1:]}}
            for trial in trials]


def _circuit_nodes(job: JobFolder) -> list[dict[str, Any]]:
    raw = job.raw.get(CIRCUIT_FILE)
    return [] if raw is None else [{"prune_key": job.key, **node} for node in circuit_nodes(raw)]


def _circuit_edges(job: JobFolder) -> pa.Table:
    """The job's ``circuit_edges.parquet`` tagged with its key; none for older prune jobs."""
    raw = job.raw.get(EDGES_FILE)
    if raw is None:
        return EDGES_SCHEMA.empty_table()
    try:
        table = pq.read_table(pa.BufferReader(raw))
        table = table.append_column("prune_key", pa.repeat(pa.scalar(job.key), table.num_rows))
        return table.select(EDGES_SCHEMA.names).cast(EDGES_SCHEMA)
    except (pa.ArrowException, KeyError) as error:
        raise ValueError(f"unreadable {EDGES_FILE}: {error}") from error


def _groundtruth_row(job: JobFolder) -> dict[str, Any]:
    cfg, res = job.config, job.results or {}
    prune = cfg.get("prune") or {}
    labels = job.meta.get("labels") or []  # "<sweep point>/<shape>[/prune_seed=…]"
    return {
        "key": job.key, "recipe": job.meta.get("recipe"),
        "sweep_point": _json(job.meta.get("sweep_point", {})),
        "setting": labels[0].split("/")[0] if labels else None,
        "shape": res.get("shape") or cfg.get("shape"), "prune_seed": cfg.get("seed"),
        **{name: prune.get(name) for name in (
            "k_coef", "lr", "temperature", "steps", "calibrate", "freeze_norms", "silent_zero",
            "ablation")},
        "trials": _get(prune, "search", "trials"),
        "threshold": res.get("loss_threshold", prune.get("loss_threshold")),
        **{name: res.get(name) for name in (
            "found", "reason", "node_precision", "node_recall", "n_nodes", "planted_nodes",
            "n_edges", "planted_edges", "full_model_loss", "achieved_loss", "sufficiency_loss",
            "necessity_loss", "prune_time_s")},
        **{name: _json(res.get(name)) for name in ("missed_nodes", "extra_nodes", "edges_by_type")},
    }


def _job_row(job: JobFolder) -> dict[str, Any]:
    info = job.results or job.failed or {}
    # The local executor's failed.json stamps the failure as "time".
    started, finished = info.get("started_at"), info.get("finished_at", info.get("time"))
    wall = info.get("wall_time_s")
    if wall is None and isinstance(started, (int, float)) and isinstance(finished, (int, float)):
        wall = finished - started
    log = job.path / LOG_FILE
    backend_job_id = info.get("backend_job_id")
    return {
        "key": job.key, "kind": job.kind, "name": job.name, "state": job.state,
        "started_at": _timestamp(started), "finished_at": _timestamp(finished),
        "wall_time_s": wall, "host": info.get("host"), "backend": info.get("backend"),
        "backend_job_id": None if backend_job_id is None else str(backend_job_id),
        "log_path": str(log) if log.is_file() else None, "error": job.error,
    }


# ---------------------------------------------------------------------------------------------
# The batch: everything one ingest writes, built in memory before the store is opened.


@dataclass
class _Batch:
    runs: list[dict[str, Any]] = field(default_factory=list)
    circuits: list[dict[str, Any]] = field(default_factory=list)
    nodes: list[dict[str, Any]] = field(default_factory=list)
    trials: list[dict[str, Any]] = field(default_factory=list)
    edges: list[pa.Table] = field(default_factory=list)
    groundtruth: list[dict[str, Any]] = field(default_factory=list)
    ingested: list[dict[str, Any]] = field(default_factory=list)

    def add(self, job: JobFolder, train_keys: dict[str, str], identity: str) -> None:
        """Build all rows of one done job, then add them; an error leaves the batch as it was."""
        if job.kind == "train":
            self.runs.append(_run_row(job, identity))
        elif job.kind == "prune":
            train_dir = Path(str(_get(job.config, "inputs", "train") or "")).name
            if train_dir not in train_keys:
                raise ValueError(f"its train job {train_dir or '(none)'} is not in the workspace")
            circuit = _circuit_row(job, train_keys[train_dir], identity)
            nodes = _circuit_nodes(job)
            edges, trials = _circuit_edges(job), _trial_rows(job)
            self.circuits.append(circuit)
            self.nodes.extend(nodes)
            self.trials.extend(trials)
            self.edges.append(edges)
        elif job.kind == "groundtruth":
            self.groundtruth.append(_groundtruth_row(job))
        self.ingested.append({"key": job.key, "kind": job.kind, "fingerprint": job.fingerprint()})

    def drop(self, keys: set[str]) -> None:
        self.runs = [r for r in self.runs if r["key"] not in keys]
        self.ingested = [r for r in self.ingested if r["key"] not in keys]

    def keys(self) -> pa.Table:
        return pa.table({"key": pa.array([r["key"] for r in self.ingested], pa.string())})


@contextlib.contextmanager
def exclusive_lock(path: Path, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold an exclusive flock on ``path``; released when the process dies, so never stale."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise StoreError(
                        f"another ingest holds {path} (waited {timeout_s:.0f}s)"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _ingested_fingerprints(store: Path) -> dict[str, str]:
    if not store.is_file():
        return {}
    with open_store(store, read_only=True) as con:
        if stored_schema_version(con) != str(SCHEMA_VERSION):
            return {}  # the write will rebuild this store: everything is new to it
        return dict(con.execute("SELECT key, fingerprint FROM ingested").fetchall())


def ingest(workspace: Path, *, lock_timeout_s: float = LOCK_TIMEOUT_S) -> IngestSummary:
    """Load every complete job folder of ``workspace`` into its store; see the module docstring."""
    started = time.monotonic()
    workspace = Path(workspace)
    summary = IngestSummary()
    with exclusive_lock(workspace / LOCK_FILE, lock_timeout_s):
        jobs, batch, metrics = _collect(workspace, summary)
        with open_store(store_path(workspace), read_only=False) as con:
            con.execute("BEGIN TRANSACTION")
            try:
                _write(con, jobs, batch, metrics)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
    summary.seconds = time.monotonic() - started
    return summary


def _collect(workspace: Path, summary: IngestSummary) -> tuple[list[JobFolder], _Batch, pa.Table]:
    """Read every folder and parse what is new, all before the store is opened for writing."""
    jobs: list[JobFolder] = []
    for path in job_dirs(workspace):
        try:
            jobs.append(read_job(path))
        except UnreadableJob as error:
            summary.skipped.append((path.name, str(error)))
    summary.scanned = len(jobs) + len(summary.skipped)
    train_keys = {j.name: j.key for j in jobs if j.kind == "train"}
    identities = job_identities(jobs)

    known = _ingested_fingerprints(store_path(workspace))
    batch = _Batch()
    for job in jobs:
        if job.state == INVALID:
            summary.skipped.append((job.name, job.error or INVALID))
        if job.state != DONE:
            continue
        if known.get(job.key) == job.fingerprint():
            summary.unchanged += 1
            continue
        try:
            batch.add(job, train_keys, identities[job.name])
        except (OSError, ValueError, KeyError, TypeError) as error:
            _reject(job, f"cannot ingest: {error}", summary)
    added = {row["key"] for row in batch.runs}
    metrics, failures = read_metrics([j for j in jobs if j.key in added])
    for job in jobs:
        if job.key in failures:
            _reject(job, failures[job.key], summary)
    batch.drop(set(failures))
    summary.states = dict(Counter(job.state for job in jobs))
    summary.metrics_rows = metrics.num_rows
    summary.loaded = [row["key"] for row in batch.ingested]
    return jobs, batch, metrics


def _write(con: duckdb.DuckDBPyConnection, jobs: list[JobFolder], batch: _Batch,
           metrics: pa.Table) -> None:
    """Replace the rows of every new or changed key; the caller holds the transaction."""
    keys = batch.keys()
    replace_rows(con, "runs_all", "key", keys, _table(batch.runs, RUNS_SCHEMA))
    replace_rows(con, "train_metrics", "run_key", keys, metrics)
    replace_rows(con, "circuits_all", "key", keys, _table(batch.circuits, CIRCUITS_SCHEMA))
    replace_rows(con, "circuit_nodes", "prune_key", keys, _table(batch.nodes, NODES_SCHEMA))
    replace_rows(con, "prune_trials", "prune_key", keys, _table(batch.trials, TRIALS_SCHEMA))
    replace_rows(con, "circuit_edges", "prune_key", keys,
                 pa.concat_tables([EDGES_SCHEMA.empty_table(), *batch.edges]))
    replace_rows(con, "groundtruth", "key", keys, _table(batch.groundtruth, GROUNDTRUTH_SCHEMA))
    replace_rows(con, "ingested", "key", keys, _table(batch.ingested, INGESTED_SCHEMA))
    for statement in MARK_SUPERSEDED:  # before the flags: controls are judged among current rows
        con.execute(statement)
    con.execute(FLAG_NOT_DISTINGUISHABLE, [CONTROL_EDGE_RATIO])
    # jobs mirrors the folders as they are now: replaced whole, it is small.
    con.execute("DELETE FROM jobs")
    insert(con, "jobs", _table([_job_row(job) for job in jobs], JOBS_SCHEMA))


def _reject(job: JobFolder, why: str, summary: IngestSummary) -> None:
    job.status = JobState(INVALID, error=why)
    summary.skipped.append((job.name, why))


def _table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=schema)
