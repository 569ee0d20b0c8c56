#!/usr/bin/env python3
"""ncu_step.py: one training step's kernels from a per-launch ncu profile.

Reads the CSV of `ncu --csv --metrics gpu__time_duration.sum ...` (one row
per launch, in launch order; lines that are not CSV rows are skipped),
takes the launches after one of the optimizer's (a kernel whose name
matches --marker, AdamW's by default) up to and including the next one,
which is one whole step, and prints the kernel count, the sum of their
times and, with --step-ms, the share of the step outside kernels; then
the kernels grouped by name, longest total first.

    ncu_step.py PROFILE.csv [--step-ms MS] [--marker REGEX] [--order]

ncu flushes the caches before each kernel unless told otherwise
(--cache-control none), so its times are if anything longer than in the
run: the time outside kernels it implies is a lower bound.
Exit 0, 1 when the profile holds no whole step, 2 on a usage error."""
import argparse
import collections
import csv
import re
import signal
import sys

UNITS = {"nsecond": 1e-3, "ns": 1e-3, "usecond": 1.0, "us": 1.0, "msecond": 1e3, "ms": 1e3,
         "second": 1e6, "s": 1e6}


def launches(path):
    """(name, microseconds) per launch, in launch order."""
    with open(path, newline="") as f:
        rows = list(csv.reader(line for line in f if line.startswith('"')))
    if not rows:
        return []
    head = rows[0]
    try:
        ki, ui, vi = head.index("Kernel Name"), head.index("Metric Unit"), head.index("Metric Value")
    except ValueError:
        raise SystemExit(f"ncu_step: {path}: not an ncu --csv per-launch profile "
                         "(no Kernel Name, Metric Unit, Metric Value columns)")
    out = []
    for r in rows[1:]:
        if len(r) <= max(ki, ui, vi):
            continue
        unit = UNITS.get(r[ui])
        if unit is None:
            raise SystemExit(f"ncu_step: {path}: unknown time unit {r[ui]!r}")
        name = re.sub(r"\(.*", "", r[ki]).replace("void ", "").strip()
        out.append((name, float(r[vi].replace(",", "")) * unit))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("profile")
    ap.add_argument("--step-ms", type=float, help="the step's measured time, for the gap")
    ap.add_argument("--marker", default="adamw", help="regex of the step's last kernel")
    ap.add_argument("--order", action="store_true", help="every launch of the step, in order")
    a = ap.parse_args()
    try:
        marker = re.compile(a.marker)
    except re.error as e:
        print(f"ncu_step: --marker: {e}", file=sys.stderr)
        return 2
    try:
        ks = launches(a.profile)
    except OSError as e:
        print(f"ncu_step: {a.profile}: {e.strerror}", file=sys.stderr)
        return 1
    at = [i for i, (n, _) in enumerate(ks) if marker.search(n)]
    if len(at) < 2:
        print(f"ncu_step: {a.profile}: {len(ks)} launches, {len(at)} matching {a.marker!r}: "
              "no whole step (profile more launches)", file=sys.stderr)
        return 1
    step = ks[at[-2] + 1:at[-1] + 1]
    total = sum(t for _, t in step) / 1e3
    line = f"kernels {len(step)}, kernel time {total:.2f} ms"
    if a.step_ms:
        line += f" of a {a.step_ms:.2f} ms step ({a.step_ms - total:.2f} ms outside kernels)"
    print(line)
    by = collections.defaultdict(lambda: [0, 0.0])
    for n, t in step:
        by[n][0] += 1
        by[n][1] += t
    for n, (c, t) in sorted(by.items(), key=lambda x: -x[1][1]):
        print(f"{t / 1e3:8.3f} ms {100 * t / 1e3 / total:5.1f}% {c:4d} x {t / c:9.1f} us  {n}")
    if a.order:
        print("\nlaunch order (us):")
        for n, t in step:
            print(f"{t:9.1f}  {n}")
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `| head` ends it quietly
    sys.exit(main())
