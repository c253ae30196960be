"""The sweep report page: what was swept, the sustainable point, the steps table and the plots.

Self-contained like a run report (``html.page``: inline CSS, PNGs as data URIs, no scripts);
each step's name links to that step's own report in ``stepNN/`` beside the page.
"""

from __future__ import annotations

from . import html
from .figures import Figure
from .tables import Table


def badge(summary: dict, text: str) -> str:
    """Green when a step was sustainable, red when none was."""
    cls = "ok" if summary.get("sustainable") else "invalid"
    return f'<p id="verdict"><span class="verdict {cls}">{html.esc(text.upper())}</span></p>'


def sweep_page(summary: dict, overview: list[tuple[str, str]], headline: str, steps: Table,
               figs: dict[str, Figure], pngs: dict[str, bytes], files: list[str]) -> str:
    """The whole sweep report."""
    nav = [("table-steps", "steps")] + [(f"plot-{n}", n.removeprefix("sweep_")) for n in figs]
    body = [f"<h1>smtpbench sweep: {html.esc(summary['name'])}</h1>", html.kv_html(overview),
            badge(summary, headline), html.nav_html(nav), html.table_html("steps", steps)]
    body += [html.figure_html(fig, pngs[name]) for name, fig in figs.items()]
    body.append(html.links_html(files))
    body.append(html.details_json("sweep.json", summary))
    return html.page(f"smtpbench · sweep {summary['name']} · {summary.get('sweep_id') or ''}", body)
