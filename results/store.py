"""The DuckDB results store: schema, connections, and the one error type of the store boundary.

One file, ``<workspace>/store.duckdb``. DuckDB lets one process open a file read-write *or* many
processes open it read-only, never both; so every open retries briefly while another process
holds the file (an ingest finishing, or a reader closing), and gives up with a clear
``StoreError`` after ``timeout_s``. The store is derived data: every row comes from a job folder,
so a store from an older schema is dropped and rebuilt by the next ingest.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from results.density import CIRCUIT_DENSITY_VIEW
from results.matched import MATCHED_VIEW
from results.replicates import (
    BOOTSTRAP_SEED,
    CIRCUIT_SPREAD_VIEW,
    FAMILIES_VIEW,
    bootstrap_draws,
)

STORE_FILE = "store.duckdb"
LOCK_FILE = "store.lock"
# 3: runs.kept_fraction; 4: circuit_edges; 5: seeds, controls, trials; 6: task_edges, matched;
# 7: circuit_density; 8: runs_all/circuits_all with superseded rows, runs/circuits the current ones
SCHEMA_VERSION = 8
OPEN_TIMEOUT_S = 10.0

# Tables in dependency-free order. runs_all and circuits_all keep every train and prune job ever
# ingested; the views runs and circuits (SUPERSEDED_VIEWS), which everything else reads, only
# those that no newer job of the same identity has replaced.
TABLES: dict[str, str] = {
    "runs_all": """
        key              VARCHAR PRIMARY KEY,  -- train job key
        recipe           VARCHAR,
        recipe_hash      VARCHAR,
        sweep_point      JSON,
        n_layer          INTEGER,
        d_model          INTEGER,
        d_mlp            INTEGER,
        n_params         BIGINT,
        n_nonzero        BIGINT,
        sparsity_target  DOUBLE,               -- kept fraction at the end; 1.0 is dense
        kept_fraction    DOUBLE,               -- measured: nonzero / sparse params at the end
        anneal           JSON,
        tokens           BIGINT,
        steps            BIGINT,
        heldout_loss     DOUBLE,               -- final pretraining loss, nats/token
        unigram_loss     DOUBLE,               -- held-out loss of the corpus' unigram model
        train_loss       DOUBLE,
        wall_time_s      DOUBLE,
        device           VARCHAR,
        tokens_per_s     DOUBLE,
        seed             BIGINT,               -- model seed
        family           VARCHAR,              -- hash of the train config minus seed and control
        control          VARCHAR,              -- random_init | dense_baseline; NULL: the real thing
        git_commit       VARCHAR,
        git_dirty        BOOLEAN,
        code_version     VARCHAR,
        package_versions JSON,
        created_at       TIMESTAMP,            -- UTC, when the train job finished
        identity         VARCHAR,              -- the job's config hashed without its code version
        superseded_by    VARCHAR               -- a newer run of the same identity; NULL: current
    """,
    "train_metrics": """
        run_key       VARCHAR NOT NULL,
        step          BIGINT NOT NULL,
        tokens        BIGINT,
        loss          DOUBLE,
        heldout_loss  DOUBLE,                  -- only on evaluation steps
        lr            DOUBLE,
        kept_fraction DOUBLE,
        grad_norm     DOUBLE,
        tokens_per_s  DOUBLE
    """,
    "circuits_all": """
        key              VARCHAR PRIMARY KEY,  -- prune job key
        run_key          VARCHAR NOT NULL,     -- the train job it pruned
        task             VARCHAR NOT NULL,
        loss_threshold   DOUBLE,
        ablation         VARCHAR,
        k_coef           DOUBLE,
        achieved_loss    DOUBLE,
        full_model_loss  DOUBLE,
        n_nodes          BIGINT,
        nodes_by_kind    JSON,
        n_edges          BIGINT,
        edges_by_type    JSON,
        sufficiency_loss DOUBLE,
        necessity_loss   DOUBLE,
        found            BOOLEAN,
        reason           VARCHAR,
        prune_seed       BIGINT,               -- mask init and pair sampling
        control          VARCHAR,              -- shuffled_task | random_init; NULL: the real thing
        not_distinguishable BOOLEAN,           -- a control did as well (results/replicates.py)
        random_circuit_loss DOUBLE,            -- test pairs: random node sets of the same size
        kl_to_full       DOUBLE,               -- test pairs: KL(full model ‖ circuit), nats
        calibrate        BOOLEAN,              -- the protocol: logit calibration before judging
        freeze_norms     BOOLEAN,              --   RMSNorm scales held at the full model's
        silent_zero      BOOLEAN,              --   never-firing nodes ablated to zero
        calibration_scale DOUBLE,              -- the fitted logit scale of the circuit
        tied_nodes       BIGINT,               -- switched-on nodes whose τ tied another's
        n_trials         INTEGER,              -- pruning settings searched (prune_trials)
        n_test_pairs     INTEGER,              -- pairs sufficiency/necessity were measured on
        created_at       TIMESTAMP,            -- UTC, when the prune job finished
        identity         VARCHAR,              -- as in runs_all
        superseded_by    VARCHAR               -- a newer circuit of the same identity
    """,
    # Every trial of every prune job's hyperparameter search (runtime/pruning/prune.py).
    "prune_trials": """
        prune_key   VARCHAR NOT NULL,
        trial       INTEGER NOT NULL,          -- 0: the recipe's own settings
        k_coef      DOUBLE,
        lr          DOUBLE,
        temperature DOUBLE,
        steps_run   INTEGER,                   -- mask steps before the trial settled
        nodes_on    INTEGER,                   -- τ > 0 at the end of optimisation
        tied_nodes  INTEGER,
        prefix_k    INTEGER,                   -- smallest passing prefix of the ranking
        n_nodes     INTEGER,                   -- after greedy dropping; NULL: did not pass
        n_edges     BIGINT,
        loss        DOUBLE,                    -- held-out (choosing) pairs, calibrated
        evaluations INTEGER                    -- candidate circuits evaluated
    """,
    # One row per groundtruth job: a prune configuration on a planted circuit of known nodes
    # (runtime/jobs/groundtruth.py), to compare pruning settings by node precision and recall.
    "groundtruth": """
        key              VARCHAR PRIMARY KEY,  -- groundtruth job key
        recipe           VARCHAR,
        sweep_point      JSON,                 -- the point's swept values ({} without a sweep)
        setting          VARCHAR,              -- the point's label, e.g. prune.calibrate=True
        shape            VARCHAR NOT NULL,     -- mlp_path | attention_copy | composition
        prune_seed       BIGINT,
        k_coef           DOUBLE,               -- the prune configuration ...
        lr               DOUBLE,
        temperature      DOUBLE,
        steps            INTEGER,
        trials           INTEGER,              --   prune.search.trials
        calibrate        BOOLEAN,
        freeze_norms     BOOLEAN,
        silent_zero      BOOLEAN,
        ablation         VARCHAR,
        threshold        DOUBLE,               --   the loss threshold pruned at
        found            BOOLEAN,
        reason           VARCHAR,              -- why not found
        node_precision   DOUBLE,               -- planted share of the found nodes; NULL: not found
        node_recall      DOUBLE,               -- found share of the planted nodes
        n_nodes          BIGINT,
        planted_nodes    BIGINT,
        n_edges          BIGINT,
        planted_edges    BIGINT,
        missed_nodes     JSON,                 -- planted nodes left out, as "site[index]"
        extra_nodes      JSON,                 -- found nodes not planted
        edges_by_type    JSON,
        full_model_loss  DOUBLE,
        achieved_loss    DOUBLE,               -- held-out (choosing) pairs, calibrated
        sufficiency_loss DOUBLE,               -- test pairs: the circuit alone
        necessity_loss   DOUBLE,               -- test pairs: only the circuit ablated
        prune_time_s     DOUBLE
    """,
    "circuit_nodes": """
        prune_key VARCHAR NOT NULL,
        site      VARCHAR NOT NULL,            -- e.g. l0.mlp_neuron, final_in
        "index"   INTEGER NOT NULL,            -- channel / neuron index within the site
        kind      VARCHAR NOT NULL,            -- the site without its layer: mlp_neuron, q, ...
        layer     INTEGER                      -- NULL for final_in
    """,
    # One row per counted edge (runtime/pruning/circuit.py): a nonzero weight between two kept
    # nodes; the edge is the entry param[dst_index, src_index].
    "circuit_edges": """
        prune_key VARCHAR NOT NULL,
        src_site  VARCHAR NOT NULL,
        src_index INTEGER NOT NULL,
        dst_site  VARCHAR NOT NULL,
        dst_index INTEGER NOT NULL,
        edge_type VARCHAR NOT NULL,            -- attn_in->q, ..., mlp_neuron->mlp_out
        param     VARCHAR NOT NULL,            -- e.g. blocks.0.mlp.fc.weight
        weight    DOUBLE NOT NULL
    """,
    "jobs": """
        key            VARCHAR PRIMARY KEY,
        kind           VARCHAR NOT NULL,
        name           VARCHAR NOT NULL,       -- folder name, <kind>-<key12>
        state          VARCHAR NOT NULL,       -- done | failed | pending | invalid
        started_at     TIMESTAMP,
        finished_at    TIMESTAMP,
        wall_time_s    DOUBLE,
        host           VARCHAR,
        backend        VARCHAR,
        backend_job_id VARCHAR,
        log_path       VARCHAR,
        error          VARCHAR
    """,
    # Bookkeeping for idempotent ingest: what each job folder looked like when last ingested.
    "ingested": """
        key         VARCHAR PRIMARY KEY,
        kind        VARCHAR NOT NULL,
        fingerprint VARCHAR NOT NULL
    """,
    # Uniform draws of the families view's bootstrap (results/replicates.py), made on creation.
    "bootstrap_draws": """
        b INTEGER NOT NULL,                    -- resample
        i INTEGER NOT NULL,                    -- position in the resample
        u DOUBLE NOT NULL                      -- in [0, 1): picks seed number floor(u · n)
    """,
    "store_meta": """
        name  VARCHAR PRIMARY KEY,
        value VARCHAR
    """,
}

# One row per (run, threshold, ablation, task): the run's circuit size for the task, as the
# frontier and the matched comparison read it. Controls' circuits are not the run's. Per task and
# pruning seed the smallest circuit counts (a k_coef sweep: the circuit is by definition the
# smallest one reaching the threshold); over pruning seeds (replicates, not a search) the median.
# A circuit flagged not_distinguishable from its control has no n_edges here (found stays true).
# The protocol is what makes circuit sizes comparable: the threshold, the ablation as judged
# (``JUDGED_ABLATION``) and the set of tasks the run was pruned on, found or not.
TASK_EDGES_VIEW = """
CREATE OR REPLACE VIEW task_edges AS
WITH per_seed AS (
    SELECT run_key, loss_threshold, ablation, task, prune_seed,
           bool_or(found) AS found,
           -- the model itself reaches the threshold (held-out pairs, uncalibrated)
           bool_or(full_model_loss <= loss_threshold) AS model_solves,
           min(n_edges) FILTER (found AND n_edges IS NOT NULL
                                AND NOT coalesce(not_distinguishable, false)) AS n_edges
    FROM circuits
    WHERE control IS NULL
    GROUP BY ALL
), per_task AS (
    SELECT run_key, loss_threshold, ablation, task,
           bool_or(found) AS found, bool_or(model_solves) AS model_solves,
           median(n_edges) AS n_edges, count(*) AS n_prune_seeds
    FROM per_seed
    GROUP BY ALL
), with_tasks AS (
    SELECT *, list_sort(list(task) OVER (PARTITION BY run_key, loss_threshold, ablation)) AS tasks
    FROM per_task
)
SELECT *, ablation || '@' || loss_threshold || ':' || array_to_string(tasks, ',') AS protocol
FROM with_tasks
"""

# One frontier row per (run, protocol). A run whose circuit was not found for a task stays beside
# its peers with that task missing, instead of moving silently into a smaller task set of its own;
# it has no mean (undefined over the protocol's tasks) and is never Pareto. Circuits flagged
# not_distinguishable are left out of the mean and counted.


def pareto_windows(edges: str) -> str:
    """The two window minima the Pareto flag reads, per protocol; written once for the frontier
    view and the one-task plot (results/plots.py).

    Pareto, among complete rows: no other row of the protocol has loss <= and edges <= with one
    strictly lower. With rows ordered by loss, that is "no row with strictly lower loss has edges
    <= mine" (m_lt) and "no row with loss <= mine has strictly fewer edges" (m_le), two window
    minima (min ignores the NULLs of incomplete rows): O(n log n), not O(n²).
    """
    return f"""min({edges}) OVER (PARTITION BY protocol ORDER BY heldout_loss
            RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW EXCLUDE GROUP) AS m_lt,
        min({edges}) OVER (PARTITION BY protocol ORDER BY heldout_loss
            RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS m_le"""


def pareto_flag(edges: str) -> str:
    """The ``pareto`` column, from ``pareto_windows(edges)``'s m_lt and m_le."""
    return f"""{edges} IS NOT NULL
           AND NOT (coalesce(m_lt <= {edges}, false) OR m_le < {edges}) AS pareto"""


FRONTIER_VIEW = """
CREATE OR REPLACE VIEW frontier AS
WITH per_run AS (
    SELECT run_key, loss_threshold, ablation, protocol, any_value(tasks) AS tasks,
           count(*) AS n_tasks,
           list_sort(list(task) FILTER (NOT found)) AS missing_tasks,
           count(*) FILTER (NOT found) AS n_not_found,
           count(*) FILTER (found AND n_edges IS NULL) AS n_not_distinguishable,
           CASE WHEN count(*) FILTER (NOT found) = 0 THEN sum(n_edges) END AS total_edges,
           -- ln(0) is -inf and exp(-inf) is 0: a zero-edge circuit makes the mean 0, as it should
           CASE WHEN count(*) FILTER (NOT found) = 0 THEN exp(avg(ln(n_edges::DOUBLE))) END
               AS geomean_edges
    FROM task_edges
    GROUP BY run_key, loss_threshold, ablation, protocol
), points AS (
    SELECT r.key AS run_key, r.recipe, r.sweep_point, r.sparsity_target,
           r.sparsity_target >= 1.0 AS dense,
           r.n_params, r.n_nonzero, r.n_layer, r.d_model, r.tokens,
           r.heldout_loss, p.geomean_edges, p.total_edges,
           p.loss_threshold, p.ablation, p.tasks, p.n_tasks, p.n_not_found, p.missing_tasks,
           p.n_not_distinguishable, r.family, r.seed, r.control, p.protocol
    FROM per_run p
    JOIN runs r ON r.key = p.run_key
    WHERE r.heldout_loss IS NOT NULL
), ranked AS (
    SELECT *, """ + pareto_windows("geomean_edges") + """
    FROM points
)
SELECT * EXCLUDE (m_lt, m_le), """ + pareto_flag("geomean_edges") + """
FROM ranked
"""

# What a circuit's ``ablation`` says in the ``circuits`` view: the fill (mean | zero) and every
# judging option that changes what reaching the threshold means, where it is not the default
# (calibrated, live norms, mean-filled silent nodes): ``mean``, ``mean+frozen_norms``,
# ``zero+uncalibrated``. Every view groups and joins circuits by it, so circuits judged
# differently are different protocols, never minimised together like a k_coef sweep's.
# (``circuits_all`` keeps the bare fill; NULL options, from jobs older than the option, add
# nothing.)
JUDGED_ABLATION = """ablation
    || CASE WHEN calibrate = false THEN '+uncalibrated' ELSE '' END
    || CASE WHEN freeze_norms THEN '+frozen_norms' ELSE '' END
    || CASE WHEN silent_zero THEN '+silent_zero' ELSE '' END"""

# A job re-run by newer code (the same config and inputs, another code version: a new key) does
# not add a second model or circuit: the newest of an identity is the current row, the older
# ones stay in the *_all tables with superseded_by naming it. Set at every ingest.
SUPERSEDED_VIEWS = tuple(f"""
CREATE OR REPLACE VIEW {name} AS
SELECT * EXCLUDE (identity, superseded_by){replace} FROM {name}_all WHERE superseded_by IS NULL
""" for name, replace in (("runs", ""), ("circuits", f" REPLACE ({JUDGED_ABLATION} AS ablation)")))
MARK_SUPERSEDED = tuple(f"""
UPDATE {name}_all AS t SET superseded_by = CASE WHEN s.newest = t.key THEN NULL ELSE s.newest END
FROM (SELECT key, first(key ORDER BY created_at DESC NULLS LAST, key DESC)
                OVER (PARTITION BY coalesce(identity, key)) AS newest
      FROM {name}_all) AS s
WHERE s.key = t.key
""" for name in ("runs", "circuits"))

# Created in this order (each reads the ones before it); dropped in the reverse one.
VIEWS = (*SUPERSEDED_VIEWS, TASK_EDGES_VIEW, FRONTIER_VIEW, MATCHED_VIEW, CIRCUIT_SPREAD_VIEW,
         FAMILIES_VIEW, CIRCUIT_DENSITY_VIEW)
VIEW_NAMES = ("circuit_density", "families", "circuit_spread", "matched", "frontier", "task_edges",
              "circuits", "runs")


class StoreError(Exception):
    """Anything that goes wrong at the store boundary, with a one-line message."""


def store_path(workspace: Path) -> Path:
    return Path(workspace) / STORE_FILE


def one_line(error: BaseException) -> str:
    """DuckDB messages carry a caret diagram over several lines; keep the first line."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _is_lock_conflict(error: duckdb.Error) -> bool:
    # Another process holds the file: DuckDB reports an IO error about the file lock.
    return isinstance(error, duckdb.IOException) and "lock" in str(error).lower()


def connect(
    path: Path,
    *,
    read_only: bool,
    config: dict[str, Any] | None = None,
    timeout_s: float = OPEN_TIMEOUT_S,
) -> duckdb.DuckDBPyConnection:
    """Open the store, retrying while another process holds it; create the schema if writable."""
    path = Path(path)
    if read_only and not path.is_file():
        raise StoreError(f"no results store at {path}: run an ingest first")
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    delay = 0.01
    while True:
        try:
            con = duckdb.connect(str(path), read_only=read_only, config=config or {})
            break
        except duckdb.Error as error:
            if not _is_lock_conflict(error) or time.monotonic() > deadline:
                raise StoreError(f"cannot open {path}: {one_line(error)}") from error
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
    if not read_only:
        try:
            ensure_schema(con)
        except BaseException:
            con.close()
            raise
    return con


@contextmanager
def open_store(path: Path, *, read_only: bool) -> Iterator[duckdb.DuckDBPyConnection]:
    con = connect(path, read_only=read_only)
    try:
        yield con
    except duckdb.Error as error:
        raise StoreError(f"{path}: {one_line(error)}") from error
    finally:
        con.close()


# How ingest builds a table's rows in Arrow before DuckDB inserts them; JSON columns arrive as
# text. The DDL above is the one definition of every column; ``arrow_schema`` reads it.
_ARROW_TYPES = {
    "VARCHAR": pa.string(), "JSON": pa.string(), "BOOLEAN": pa.bool_(), "INTEGER": pa.int32(),
    "BIGINT": pa.int64(), "DOUBLE": pa.float64(), "TIMESTAMP": pa.timestamp("us"),
}
_COLUMN = re.compile(r'"?(\w+)"?\s+([A-Z]+)')  # name TYPE [NOT NULL | PRIMARY KEY],


def arrow_schema(table: str, without: tuple[str, ...] = ()) -> pa.Schema:
    """The Arrow schema of ``table``'s columns, in DDL order, less ``without`` (columns the store
    fills itself, e.g. a flag set by an UPDATE after the insert)."""
    fields = []
    for line in TABLES[table].splitlines():
        text = line.split("--")[0].strip()
        if not text:
            continue
        column = _COLUMN.match(text)
        if column is None or column[2] not in _ARROW_TYPES:  # a DDL edit this does not know
            raise ValueError(f"store table {table}: no Arrow type for column line {text!r}")
        if column[1] not in without:
            fields.append((column[1], _ARROW_TYPES[column[2]]))
    return pa.schema(fields)


def stored_schema_version(con: duckdb.DuckDBPyConnection) -> str | None:
    """The schema version the file was written with; None for a new (or pre-versioning) file."""
    tables = con.execute("SELECT table_name FROM duckdb_tables()").fetchall()
    if ("store_meta",) not in tables:
        return None
    # fetchall, not fetchone: DuckDB 2 keeps a half-read result open on the connection.
    rows = con.execute("SELECT value FROM store_meta WHERE name = 'schema_version'").fetchall()
    return rows[0][0] if rows else None


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create the tables and the view; rebuild them if the file holds another schema version."""
    try:
        version = stored_schema_version(con)
        if version is not None and version != str(SCHEMA_VERSION):
            # Derived data: drop it all, whatever that version named its tables and views (a
            # name may be a table in one version and a view in the next); the next ingest
            # re-reads every job folder. Names come from the file's catalog, quoted.
            for (name,) in con.execute("SELECT view_name FROM duckdb_views() "
                                       "WHERE NOT internal AND schema_name = 'main'").fetchall():
                con.execute(f'DROP VIEW IF EXISTS "{name}"')
            for (name,) in con.execute("SELECT table_name FROM duckdb_tables() "
                                       "WHERE schema_name = 'main'").fetchall():
                con.execute(f'DROP TABLE IF EXISTS "{name}"')
        for table, columns in TABLES.items():
            con.execute(f"CREATE TABLE IF NOT EXISTS {table} ({columns})")
        if not con.execute("SELECT count(*) FROM bootstrap_draws").fetchall()[0][0]:
            insert(con, "bootstrap_draws", bootstrap_draws(BOOTSTRAP_SEED))
            con.execute("INSERT OR REPLACE INTO store_meta VALUES ('bootstrap_seed', ?)",
                        [str(BOOTSTRAP_SEED)])
        for view in VIEWS:
            con.execute(view)
        con.execute(
            "INSERT OR REPLACE INTO store_meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)]
        )
    except duckdb.Error as error:
        raise StoreError(f"cannot create the store schema: {one_line(error)}") from error


def replace_rows(
    con: duckdb.DuckDBPyConnection,
    table: str,
    key_column: str,
    keys: pa.Table,
    rows: pa.Table | None,
) -> None:
    """Delete every row of ``table`` whose ``key_column`` is in ``keys.key``, then bulk-insert.

    Both sides are Arrow tables registered with DuckDB, so a million rows go in one statement.
    (Registrations are replaced by the next one and dropped with the connection; unregistering
    inside a failed transaction would raise and hide the real error.)
    """
    con.register("_keys", keys)
    con.execute(f"DELETE FROM {table} WHERE {key_column} IN (SELECT key FROM _keys)")
    insert(con, table, rows)


def insert(con: duckdb.DuckDBPyConnection, table: str, rows: pa.Table | None) -> None:
    if rows is None or rows.num_rows == 0:
        return
    con.register("_rows", rows)
    con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _rows")
