#!/usr/bin/env python3
"""Reads vpngw's Prometheus endpoint with Prometheus's own text-format
parser (prometheus-client) and prints every sample as JSON:
{"families": N, "samples": {"name{label=value,...}": value}} (labels
sorted). A response the parser refuses, or a family without samples of
its declared type, is an error (exit 1).

  check_metrics.py http://127.0.0.1:9477/metrics
"""
import json
import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def main():
    with urllib.request.urlopen(sys.argv[1], timeout=10) as r:
        ctype = r.headers.get("Content-Type", "")
        text = r.read().decode()
    if not ctype.startswith("text/plain"):
        sys.exit(f"Content-Type {ctype!r} is not the text format")
    samples, families = {}, 0
    for fam in text_string_to_metric_families(text):
        families += 1
        if fam.type == "unknown":
            sys.exit(f"{fam.name}: samples without a TYPE line")
        for s in fam.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            samples[f"{s.name}{{{labels}}}"] = s.value
    print(json.dumps({"families": families, "samples": samples}))


if __name__ == "__main__":
    main()
