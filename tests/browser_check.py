"""Real-browser check of the built book: every figure on each chapter page loaded, no error cells,
and every record the page links for download is in the built site.

usage: python tests/browser_check.py book/_build/html chapter2:5 chapter3:10 chapter4 ...
(PAGE:N also asserts that the page holds at least N figures)

Headless Chromium loads a copy of each page with a small script appended that, once the page
has loaded, records every <img>'s naturalWidth and counts the error outputs (tracebacks) into
a DOM element; Chromium's --dump-dom prints the DOM, and this script reads the verdict back.
"""
import html
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

PROBE = """
<script>
window.addEventListener("load", function () {
  var imgs = Array.from(document.querySelectorAll("main img, article img, .bd-article img"));
  var out = {
    images: imgs.map(function (i) { return [i.getAttribute("src"), i.complete, i.naturalWidth]; }),
    errors: document.querySelectorAll(".output.traceback, .output.error, div.cell_output .traceback").length,
    mathjax: typeof window.MathJax,
    records: Array.from(document.querySelectorAll("a[href^='records/']")).map(function (a) { return a.href; })
  };
  var pre = document.createElement("pre");
  pre.id = "agreebook-probe";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>
"""

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--virtual-time-budget=15000",
         "--run-all-compositor-stages-before-draw", "--dump-dom"]


def browser():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    sys.exit("browser check: no chromium on PATH (Debian: apt-get install chromium)")


def check(html_dir, spec, exe):
    page, _, least = spec.partition(":")
    src = Path(html_dir) / f"{page}.html"
    if not src.exists():
        return [f"{page}: {src} was not built"]
    # the probe copy sits beside the page so every relative link resolves the same way
    with tempfile.NamedTemporaryFile("w", suffix=".html", dir=src.parent, delete=False) as f:
        f.write(src.read_text().replace("</body>", PROBE + "</body>"))
        probe = Path(f.name)
    try:
        dom = subprocess.run([exe, *FLAGS, probe.as_uri()], capture_output=True, text=True, timeout=120).stdout
    finally:
        probe.unlink()
    m = re.search(r'<pre id="agreebook-probe"[^>]*>(.*?)</pre>', dom, re.S)
    if not m:
        return [f"{page}: the page did not finish loading in the browser"]
    res = json.loads(html.unescape(m.group(1)))
    problems = [f"{page}: figure {s} did not load" for s, done, w in res["images"] if not (done and w > 0)]
    if len(res["images"]) < int(least or 0):
        problems.append(f"{page}: {len(res['images'])} figures, at least {least} expected")
    if res["errors"]:
        problems.append(f"{page}: {res['errors']} error output cell(s)")
    # the links as the browser resolved them; the site serves book/records (html_extra_path)
    missing = [u for u in res["records"] if not Path(unquote(urlparse(u).path)).is_file()]
    problems += [f"{page}: record link {u} leads nowhere" for u in missing]
    if page.startswith("chapter") and not res["records"]:
        problems.append(f"{page}: links no record")
    if res["mathjax"] == "undefined":
        problems.append(f"{page}: MathJax did not load")
    print(f"{page}: {len(res['images'])} figures loaded, {res['errors']} error cells, MathJax {res['mathjax']}, "
          f"{len(res['records']) - len(missing)} of {len(res['records'])} record links resolve")
    return problems


def main():
    html_dir, pages = sys.argv[1], sys.argv[2:]
    exe = browser()
    problems = [p for page in pages for p in check(html_dir, page, exe)]
    for p in problems:
        print("FAIL", p)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
