"""The self-contained HTML page: inline CSS, images as base64 PNG data URIs, no scripts, no network.

It opens by double-click from any folder (or an e-mail attachment) and prints well. Every section
has a stable ``id`` (``table-<name>``, ``plot-<name>``) so tests and links can find it.
"""

from __future__ import annotations

import base64
import html
import json

from .figures import Figure
from .tables import Table

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2125;background:#f6f7f9}
main{max-width:1100px;margin:0 auto;padding:18px 24px 48px}
h1{font-size:22px;margin:8px 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d8dce1;padding-bottom:4px}
table{border-collapse:collapse;background:#fff;margin:6px 0;font-variant-numeric:tabular-nums}
th,td{border:1px solid #d8dce1;padding:3px 9px;text-align:left;vertical-align:top}
th{background:#eef1f4}td.n{text-align:right}tr.fail td{background:#fde8e6}tr.pass td:last-child{color:#1e7b34}
.note{color:#5b6570;font-size:12.5px;margin:2px 0 10px}
.verdict{display:inline-block;padding:3px 12px;border-radius:4px;font-weight:600;color:#fff}
.ok{background:#1e7b34}.thresholds_failed,.delivery_failed{background:#c76b00}.invalid{background:#b3261e}
.warn{background:#fff4e0;border:1px solid #e0a040;padding:8px 14px;border-radius:4px}
ul.reasons{margin:6px 0}figure{margin:14px 0;background:#fff;border:1px solid #d8dce1;padding:8px}
figure img{max-width:100%;height:auto;display:block}figcaption{font-size:12.5px;color:#5b6570}
nav a{margin-right:10px}pre{background:#fff;border:1px solid #d8dce1;padding:8px;overflow:auto;font-size:12px}
tr.best td{font-weight:600;background:#e3f4e6}
.faster,.better{color:#1e7b34;font-weight:600}.slower,.worse{color:#b3261e;font-weight:600}
"""

VERDICT_TEXT = {"ok": "VALID · all thresholds passed", "thresholds_failed": "VALID · THRESHOLDS FAILED",
                "delivery_failed": "VALID · DELIVERY FAILED", "invalid": "INVALID RUN"}


def esc(value) -> str:
    """Text made safe for HTML (results hold commands and server replies)."""
    return html.escape(str(value), quote=True)


def _td(cell: str, align: str) -> str:
    return f'<td class="n">{esc(cell)}</td>' if align == "r" else f"<td>{esc(cell)}</td>"


def table_html(name: str, table: Table) -> str:
    """A ``<section id="table-NAME">`` holding the table, or its note when it has no rows."""
    parts = [f'<section id="table-{esc(name)}"><h2>{esc(table.title)}</h2>']
    if table.rows:
        kv = bool(table.columns) and table.columns[0] == ""
        align = table.align or ("l" * len(table.columns) if kv else "l" + "r" * (len(table.columns) - 1))
        if kv:  # label/value pairs: no header row
            parts.append('<table class="kv"><tbody>')
        else:
            parts.append("<table><thead><tr>" + "".join(f"<th>{esc(c)}</th>" for c in table.columns)
                         + "</tr></thead><tbody>")
        for i, row in enumerate(table.rows):
            cls = table.classes[i] if i < len(table.classes) and table.classes[i] else ""
            attr = f' class="{cls}"' if cls else ""
            cells = [_td(c, a) for c, a in zip(row, align.ljust(len(row), "l"))]
            href = table.links[i] if i < len(table.links) else ""
            if href and cells:
                cells[0] = f'<td><a href="{esc(href)}">{esc(row[0])}</a></td>'
            parts.append(f"<tr{attr}>" + "".join(cells) + "</tr>")
        parts.append("</tbody></table>")
    if table.note:
        parts.append(f'<p class="note">{esc(table.note)}</p>')
    parts.append("</section>")
    return "".join(parts)


def figure_html(fig: Figure, png: bytes) -> str:
    """A ``<figure id="plot-NAME">``: the PNG inline, links to the PNG/SVG files beside the page."""
    src = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    links = f'<a href="{esc(fig.name)}.png">PNG</a> · <a href="{esc(fig.name)}.svg">SVG</a>'
    note = f" — {esc(fig.note)}" if fig.note else ""
    return (f'<figure id="plot-{esc(fig.name)}"><img src="{src}" alt="{esc(fig.title)}">'
            f"<figcaption>{esc(fig.title)}{note} · {links}</figcaption></figure>")


def kv_html(pairs: list[tuple[str, str]]) -> str:
    """The header's label/value table (``id="overview"``)."""
    rows = "".join(f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in pairs)
    return f'<table class="kv" id="overview"><tbody>{rows}</tbody></table>'


def verdict_html(verdict: str, lines: list[str]) -> str:
    """The verdict badge, and why: invalidity reasons and failed thresholds."""
    text = VERDICT_TEXT.get(verdict, verdict.replace("_", " ").upper())
    badge = f'<p id="verdict"><span class="verdict {esc(verdict)}">{esc(text)}</span></p>'
    if not lines:
        return badge
    return badge + '<ul class="reasons">' + "".join(f"<li>{esc(line)}</li>" for line in lines) + "</ul>"


def warnings_html(warnings: list[str]) -> str:
    """The comparison's fairness warnings as a highlighted block (nothing when there are none)."""
    if not warnings:
        return ""
    items = "".join(f"<li>{esc(w)}</li>" for w in warnings)
    return (f'<section id="warnings" class="warn"><strong>Comparison may be unfair:</strong>'
            f'<ul class="reasons">{items}</ul></section>')


def links_html(files: list[str]) -> str:
    """Links to the files written beside the page."""
    items = " · ".join(f'<a href="{esc(f)}">{esc(f)}</a>' for f in files)
    return f'<section id="exports"><h2>Files</h2><p>{items}</p></section>'


def nav_html(targets: list[tuple[str, str]]) -> str:
    """In-page links to each section."""
    return "<nav>" + "".join(f'<a href="#{esc(i)}">{esc(label)}</a>' for i, label in targets) + "</nav>"


def details_json(title: str, value) -> str:
    """A collapsed block showing ``value`` as JSON."""
    return f"<details><summary>{esc(title)}</summary><pre>{esc(json.dumps(value, indent=1))}</pre></details>"


def page(title: str, body: list[str]) -> str:
    """The whole document: no external resources of any kind."""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(title)}</title><style>{STYLE}</style></head><body><main>"
            + "\n".join(body) + "</main></body></html>\n")


def run_page(result: dict, overview: list[tuple[str, str]], verdict_lines: list[str], tables: dict[str, Table],
             figs: dict[str, Figure], pngs: dict[str, bytes], files: list[str]) -> str:
    """The report of one run: header, verdict, tables and plots interleaved, files, scenario."""
    nav = [(f"table-{n}", t.title.split(" (")[0]) for n, t in tables.items()] + [(f"plot-{n}", n.replace("_", " ")) for n in figs]
    body = [f"<h1>smtpbench report: {esc(result['name'])}</h1>", kv_html(overview),
            verdict_html(result["verdict"], verdict_lines), nav_html(nav)]
    placement = {"throughput": ["throughput", "concurrency"], "latency": ["spectrum", "latency_over_time", "histogram"],
                 "phases": ["phases"], "errors": ["errors"], "health": ["health"], "relay": ["relay"]}
    shown = set()
    for name, table in tables.items():
        body.append(table_html(name, table))
        for fig_name in placement.get(name, []):
            if fig_name in figs:
                body.append(figure_html(figs[fig_name], pngs[fig_name]))
                shown.add(fig_name)
    body += [figure_html(f, pngs[n]) for n, f in figs.items() if n not in shown]
    body.append(links_html(files))
    body.append(details_json("Scenario (resolved, every default filled)", result.get("scenario", {})))
    return page(f"smtpbench · {result['name']} · {result['run_id']}", body)


def comparison_page(results: list[dict], warnings: list[str], tables: dict[str, Table], figs: dict[str, Figure],
                    pngs: dict[str, bytes], files: list[str]) -> str:
    """The comparison report: runs, fairness warnings, one verdict table per contender, overlaid plots."""
    title = f"smtpbench comparison: {results[0]['run_id']} vs " + ", ".join(r["run_id"] for r in results[1:])
    body = [f"<h1>{esc(title)}</h1>", warnings_html(warnings)]
    body += [table_html(name, table) for name, table in tables.items()]
    body += [figure_html(fig, pngs[name]) for name, fig in figs.items()]
    body.append(links_html(files))
    return page(title, body)
