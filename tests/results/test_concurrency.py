"""One process ingesting while another queries: both finish, neither sees a torn store."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

from results import synthetic
from results.ingest import ingest

WRITER = """
import sys, time
from pathlib import Path
from results import synthetic
from results.ingest import ingest
ws = Path(sys.argv[1])
deadline = time.monotonic() + 60
while not (ws / "reader-started").exists() and time.monotonic() < deadline:
    time.sleep(0.01)  # the reader's first query sees the store before any of these writes
for i in range(int(sys.argv[2])):
    train = synthetic.train_job(ws, sparsity_target=0.5, heldout_loss=3.0 + i, seed=100 + i)
    synthetic.prune_job(ws, train, "bracket_counting", 10 + i)
    ingest(ws)
(ws / "writer-done").touch()
"""

READER = """
import sys, time
from pathlib import Path
from results.query import fetch
ws = Path(sys.argv[1])
seen, queries, deadline = [], 0, time.monotonic() + 60
while time.monotonic() < deadline:
    done = (ws / "writer-done").exists()
    row = fetch(ws, "SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM circuits), "
                    "(SELECT count(*) FROM train_metrics)").to_pylist()[0]
    runs, circuits, metrics = row.values()
    # Every ingest commits a run together with its circuit and its metrics.
    assert circuits == runs and metrics == 50 * runs, row
    assert not seen or runs >= seen[-1], (seen[-1], runs)
    seen.append(runs)
    queries += 1
    (ws / "reader-started").touch()
    if done:
        break
print(queries, seen[0], seen[-1])
"""


def test_ingest_and_query_in_two_processes(tmp_path: Path) -> None:
    train = synthetic.train_job(tmp_path, sparsity_target=1.0, heldout_loss=2.0)
    synthetic.prune_job(tmp_path, train, "bracket_counting", 100)
    ingest(tmp_path)  # readers need a store to open
    rounds = 8

    def start(code: str, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), str(tmp_path),
                                 *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    reader, writer = start(READER), start(WRITER, str(rounds))
    _, w_err = writer.communicate(timeout=90)
    r_out, r_err = reader.communicate(timeout=90)
    assert writer.returncode == 0, w_err
    assert reader.returncode == 0, r_err
    queries, first, last = map(int, r_out.split())
    # The reader queried before the first write and after the last: it ran alongside them all
    # (however the two processes were scheduled, which is why this counts states, not queries).
    assert queries >= 2 and (first, last) == (1, 1 + rounds)


def test_ingest_waits_for_a_reader_to_close(workspace: Path) -> None:
    """A notebook holding the file read-only delays an ingest; it does not break it."""
    hold = ("import sys, time; from results.query import open_readonly; "
            "con = open_readonly(sys.argv[1]); print('open', flush=True); time.sleep(1.0); "
            "con.close()")
    reader = subprocess.Popen([sys.executable, "-c", hold, str(workspace)],
                              stdout=subprocess.PIPE, text=True)
    assert reader.stdout is not None and reader.stdout.readline() == "open\n"
    synthetic.train_job(workspace, sparsity_target=0.3, heldout_loss=2.1, seed=7)
    started = time.monotonic()
    summary = ingest(workspace)
    assert time.monotonic() - started > 0.3  # it really had to wait for the reader
    assert len(summary.loaded) == 1
    assert reader.wait(timeout=30) == 0
