"""The study as an application of the library: `reproduce`, `transfer` and `demo`.

* :mod:`.runner`: the resumable runner (one folder and one result marker per run);
* :mod:`.study`: the options and set-up `reproduce` and `transfer` share, and the grid;
* :mod:`.cells`: typed table cells (the seeds of one evaluation pooled);
* :mod:`.paper`: what the paper published (Table 1, its claims);
* :mod:`.table1`: `landslide-lit reproduce` (Table 1 over seeds), written by
  :mod:`.table1_report`;
* :mod:`.transfer`: `landslide-lit transfer` (the cross-region matrix);
* :mod:`.demo`: `landslide-lit demo` (the whole study in miniature).

The library never imports this package; it imports the library (``landslide_lit.cli.run``,
evaluation, figures, data). Submodules are imported by the command that needs them.
"""

__all__ = ["cells", "demo", "paper", "runner", "study", "table1", "table1_report", "transfer"]
