#!/usr/bin/env python3
"""Check a bench's output (stdin): every figure line is one JSON object with a
string `figure`, a finite number `value` and a string `unit`, and every figure
named on the command line is there. Lines that are not JSON objects (cargo's
progress, a bench's notes) are skipped; a line that starts with `{` must parse.
Exit 1 with one line per problem."""
import json
import math
import sys

want = set(sys.argv[1:])
seen = set()
bad = []
for n, line in enumerate(sys.stdin, 1):
    line = line.strip()
    if not line.startswith("{"):
        continue
    try:
        o = json.loads(line)
    except json.JSONDecodeError as e:
        bad.append(f"line {n}: not JSON ({e}): {line[:120]}")
        continue
    f, v, u = o.get("figure"), o.get("value"), o.get("unit")
    if not isinstance(f, str) or not isinstance(u, str):
        bad.append(f"line {n}: `figure` and `unit` must be strings: {line[:120]}")
    elif not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
        bad.append(f"line {n}: `value` must be a finite number: {line[:120]}")
    else:
        seen.add(f)
for f in sorted(want - seen):
    bad.append(f"figure {f} missing")
if not seen:
    bad.append("no figure lines at all")
for b in bad:
    print(b)
sys.exit(1 if bad else 0)
