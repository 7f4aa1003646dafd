"""Column statistics of CSV files: rows, and count, sum, mean, min and max of numeric columns."""

import csv
import json
import os
import sys

__version__ = "0.1.0"


def summarise(path):
    """Statistics of the CSV file at `path` (first row: the column names)."""
    digits = int(os.environ.get("CSVSTATS_PRECISION", "2"))
    columns = {}
    rows = 0
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            rows += 1
            for name, value in row.items():
                try:
                    x = float(value)
                except (TypeError, ValueError):
                    continue
                columns.setdefault(name, []).append(x)
    out = {"rows": rows}
    for name, xs in columns.items():
        out[name] = {
            "count": len(xs),
            "sum": round(sum(xs), digits),
            "mean": round(sum(xs) / len(xs), digits),
            "min": min(xs),
            "max": max(xs),
        }
    return out


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: csvstats FILE.csv")
    print(json.dumps(summarise(sys.argv[1]), indent=2))
