"""Replaces one marker block of BENCHMARKS.md with new content, for scripts/bench.sh.

Usage: python3 scripts/bench_block.py DOC MARKER HEADING CONTENT_FILE

Everything between `<!-- MARKER:begin -->` and `<!-- MARKER:end -->` in DOC becomes the
content of CONTENT_FILE. When the markers are missing, the block is appended under a new
`## HEADING` section (and DOC is created when it does not exist).
"""

import sys

path, marker, heading, content_file = sys.argv[1:5]
content = open(content_file, encoding="utf-8").read()
begin, end = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
block = begin + "\n" + content.rstrip("\n") + "\n" + end
try:
    doc = open(path, encoding="utf-8").read()
except FileNotFoundError:
    doc = "# Benchmarks\n\nRun `scripts/bench.sh` to reproduce.\n\n"
if begin in doc and end in doc:
    head, rest = doc.split(begin, 1)
    doc = head + block + rest.split(end, 1)[1]
else:
    doc = doc.rstrip("\n") + f"\n\n## {heading}\n\n" + block + "\n"
open(path, "w", encoding="utf-8").write(doc)
