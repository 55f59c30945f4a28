"""The review queue as static HTML: OUT/index.html (page 1), OUT/page-2.html, ..., with PNG
thumbnails in OUT/thumbs/. Relative links only, no scripts and no external assets, so the pages
open from file:// and can be copied anywhere with their thumbs/ folder.

    pages = write_pages(out, queue, list(pairs(queue, rows[:top], cols[:top])), per_page=50,
                        read=lambda image: storage.read_bytes(uris[image]))

Each entry (a table row ``tr.pair`` whose ``data-*`` attributes repeat review.csv's values, and
the image's machine labels and change): rank, thumbnail and ImageID, the label's display name
and id, suspected wrong (listed) or missing (unlisted), the issue score, the verdict (the
decision /clean makes, with its reason), the image's machine labels (display name, id,
confidence) and the change the decision proposes for the image ("remove X; add Y", or
"no change"). Every value is HTML-escaped. Torch-free.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Callable, Sequence
from html import escape
from pathlib import Path

from PIL import Image

from ...model.preprocess import open_image
from .queue import Pair, Queue

THUMBS = "thumbs"
THUMB_PIXELS = 112  # a thumbnail's longer side; small images are enlarged by a whole factor
NAV_WINDOW = 4  # page links shown either side of the current page
STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; width: 100%; }
th, td { border-bottom: 1px solid #ddd; padding: 6px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
img { image-rendering: pixelated; border: 1px solid #ccc; display: block; }
code { font-size: 12px; color: #555; }
.wrong .kind { color: #b00020; } .missing .kind { color: #0a5; }
.verdict { font-weight: bold; } .issue { font-variant-numeric: tabular-nums; }
nav { margin: 1em 0; } nav a, nav span { margin-right: 0.4em; } nav .current { font-weight: bold; }
.note { color: #555; }
"""
LEGEND = (
    "Verdict: the decision POST /clean makes for the pair (kept or removed for a listed label, "
    "added or none for an unlisted one). Proposed change: what those verdicts change in the "
    "image's machine labels."
)


def page_name(page: int) -> str:
    """The file of page ``page`` (1-based): index.html, then page-2.html, page-3.html, ..."""
    return "index.html" if page == 1 else f"page-{page}.html"


def thumb_name(image: str) -> str:
    """A file name for ``image``'s thumbnail: the ImageID when it is plain, else a hash."""
    if re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,100}", image):
        return f"{image}.png"
    return f"id-{hashlib.sha256(image.encode()).hexdigest()[:24]}.png"


def thumbnail(data: bytes, size: int = THUMB_PIXELS) -> bytes:
    """Encoded image -> a PNG whose longer side is at most ``size`` (a smaller image is enlarged
    by the largest whole factor that fits, so that 28x28 pixels stay sharp and visible)."""
    image = open_image(data)
    image.load()
    image = image.convert("RGB" if image.mode not in ("L", "RGB") else image.mode)
    longest = max(image.size)
    if longest > size:
        image.thumbnail((size, size))
    elif longest * 2 <= size:
        factor = size // longest
        image = image.resize((image.width * factor, image.height * factor), Image.NEAREST)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def write_pages(
    out: Path,
    queue: Queue,
    entries: Sequence[Pair],
    *,
    per_page: int = 50,
    read: Callable[[str], bytes],
    title: str = "labelclean review queue",
    notes: Sequence[str] = (),
) -> int:
    """Write the pages of ``entries`` (already ranked) and their thumbnails under ``out``;
    returns the number of pages (at least one, which says so when the queue is empty). Page
    files of an earlier, longer run are removed. ``read(image_id)`` gives an image's bytes;
    an image it cannot give (or that cannot be decoded) is shown without a thumbnail."""
    per_page = max(1, per_page)
    total = max(1, -(-len(entries) // per_page))
    thumbs = _write_thumbnails(out / THUMBS, {p.image for p in entries}, read)
    for page in range(1, total + 1):
        chunk = entries[(page - 1) * per_page : page * per_page]
        body = _page(queue, chunk, page, total, len(entries), title, notes, thumbs)
        (out / page_name(page)).write_text(body, encoding="utf-8")
    for stale in out.glob("page-*.html"):
        number = stale.stem.removeprefix("page-")
        if number.isdigit() and int(number) > total:
            stale.unlink()
    return total


def _write_thumbnails(
    folder: Path, images: set[str], read: Callable[[str], bytes]
) -> dict[str, str]:
    """image -> relative link of its thumbnail, for those that could be made."""
    folder.mkdir(parents=True, exist_ok=True)
    links = {}
    for image in sorted(images):
        name = thumb_name(image)
        try:
            (folder / name).write_bytes(thumbnail(read(image)))
        except (OSError, ValueError):  # unreadable now, or not decodable: no thumbnail
            continue
        links[image] = f"{THUMBS}/{name}"
    return links


def _page(
    queue: Queue, entries: Sequence[Pair], page: int, total: int, count: int, title: str,
    notes: Sequence[str], thumbs: dict[str, str],
) -> str:  # fmt: skip
    first = entries[0].rank if entries else 0
    last = entries[-1].rank if entries else 0
    nav = _nav(page, total)
    head = (
        f"<p>Pairs {first}&ndash;{last} of the top {count}, highest issue score first "
        f"(page {page} of {total}).</p>"
        if entries
        else "<p>No (image, label) pairs in the queue.</p>"
    )
    rows = "\n".join(_row(queue, p, thumbs) for p in entries)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{escape(title)} &ndash; page {page} of {total}</title>
<style>{STYLE}</style>
</head>
<body>
<h1>{escape(title)}</h1>
{head}
{"".join(f'<p class="note">{escape(n)}</p>' for n in (*notes, LEGEND))}
{nav}
<table>
<thead><tr><th>#</th><th>image</th><th>label</th><th>issue score</th><th>verdict</th>
<th>machine labels</th><th>proposed change</th></tr></thead>
<tbody>
{rows}
</tbody>
</table>
{nav}
</body>
</html>
"""


def _row(queue: Queue, p: Pair, thumbs: dict[str, str]) -> str:
    link = thumbs.get(p.image)
    picture = (
        f'<img src="{escape(link)}" alt="image {escape(p.image)}">' if link else "(no thumbnail)"
    )
    confidence = f", machine confidence {p.confidence:g}" if p.listed else ""
    names = [c.name for c in queue.classes]
    listed = queue.listed(p.row)
    machine = [
        f"{escape(names[k])} <code>{escape(queue.classes[k].id)}</code> "
        f"{float(queue.noisy[p.row, k]):.4g}"
        for k in listed
    ]
    change = queue.change_text(p.row, names)
    verdict = escape(p.verdict)
    if p.reason:
        verdict += f"<br><small>{escape(p.reason)}</small>"
    attrs = {
        "data-rank": p.rank, "data-image": p.image, "data-label": p.label,
        "data-listed": "yes" if p.listed else "no", "data-issue": p.issue,
        "data-verdict": p.verdict, "data-machine-labels": ", ".join(names[k] for k in listed),
        "data-change": change,
    }  # fmt: skip
    data = " ".join(f'{k}="{escape(str(v))}"' for k, v in attrs.items())
    kind = "wrong" if p.listed else "missing"
    return (
        f'<tr class="pair {kind}" id="rank-{p.rank}" {data}>'
        f'<td class="rank">{p.rank}</td>'
        f'<td class="image">{picture}<code class="image-id">{escape(p.image)}</code></td>'
        f'<td class="label"><span class="name">{escape(p.name)}</span> '
        f'<code class="label-id">{escape(p.label)}</code>'
        f'<div class="kind">{p.kind}{escape(confidence)}</div></td>'
        f'<td class="issue">{p.issue:.4f}</td>'
        f'<td class="verdict">{verdict}</td>'
        f'<td class="machine">{"<br>".join(machine) or "none"}</td>'
        f'<td class="change">{escape(change)}</td></tr>'
    )


def _nav(page: int, total: int) -> str:
    if total == 1:
        return ""
    links = []

    def link(n: int, text: str) -> str:
        return f'<a href="{page_name(n)}">{text}</a>'

    back = "&laquo; previous"
    links.append(link(page - 1, back) if page > 1 else f"<span>{back}</span>")
    window = range(max(1, page - NAV_WINDOW), min(total, page + NAV_WINDOW) + 1)
    shown = sorted({1, total, *window})
    previous = 0
    for n in shown:
        if n > previous + 1:
            links.append("<span>&hellip;</span>")
        links.append(f'<span class="current">{n}</span>' if n == page else link(n, str(n)))
        previous = n
    forward = "next &raquo;"
    links.append(link(page + 1, forward) if page < total else f"<span>{forward}</span>")
    return f'<nav class="pages">{" ".join(links)}</nav>'
