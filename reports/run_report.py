"""`report run ID`: one run's carbon summary, its loss / throughput / power over time, a PNG."""

from __future__ import annotations

from orchestrator.store import Store
from reports.carbon import Overrides, methodology, run_row
from reports.plots import check_plot_path, write_run_plot
from reports.query import Filters, power_series, select_runs, step_series


def run_report(store: Store, run_id: str, *, plot: str | None = None,
               overrides: Overrides = Overrides(), points: int = 200) -> dict:
    ov = overrides.checked()
    if plot is not None:
        check_plot_path(plot)
    store.get_run(run_id)  # BadInput naming the id when there is no such run
    d = select_runs(store, Filters(run_ids=(run_id,)))[0]
    row = run_row(store, d, ov)
    from orchestrator.eval.records import scores_of
    from reports.eval import by_task

    series = {"steps": step_series(store, run_id, points), "power": power_series(store, run_id, points),
              "eval_tasks": by_task(scores_of(store, run_id))}
    written = write_run_plot(plot, row, series) if plot is not None else None
    return {"run": row, "series": series, "plot": written, "methodology": methodology(ov, [row], False)}
