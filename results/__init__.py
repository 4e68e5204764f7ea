"""The results store: ingest job folders into DuckDB, query it, plot it, report it.

Notebook use::

    import results
    con = results.open("xcompile-runs")        # read-only DuckDB connection
    con.sql("SELECT * FROM frontier WHERE pareto").to_arrow_table()  # or .show()
    con.close()                                # an ingest waits while a reader holds the file
"""

from results.ingest import IngestSummary, ingest
from results.query import QueryError, open_readonly, run_query
from results.store import StoreError

open = open_readonly  # `results.open(workspace)` reads naturally in a notebook

__all__ = ["IngestSummary", "QueryError", "StoreError", "ingest", "open", "open_readonly",
           "run_query"]
