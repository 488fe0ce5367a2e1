"""Checks the spans scripts/test-otel.sh's receiver wrote. Counts its checks and fails when any
fails or fewer than EXPECTED_CHECKS ran.

usage: check.py SPANS_JSONL TRACE_ID PARENT_SPAN_ID GRPC_TRACE_ID GRPC_PARENT REFUSED_TRACE_ID
                STREAM_TRACE_ID STREAM_PARENT MARK2 MARK3
                METRICS_ON METRICS_OFF
  lines [0, MARK2): the traced server (HTTP publishes with and without traceparent, a refused
  one, a gRPC Publish and a PublishStream of two batches with traceparents, a WebSocket and an
  MQTT publish), after it stopped
  lines [MARK2, MARK3) and after: the server without [tracing]; must be none
  METRICS_ON / METRICS_OFF: /metrics of each server after its publishes
"""

import json
import sys

EXPECTED_CHECKS = 40
checks = 0
failures = []


def check(ok, what):
    global checks
    checks += 1
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)


def metric_values(path):
    values = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            name, _, value = line.rpartition(" ")
            try:
                values[name] = float(value)
            except ValueError:
                pass
    return values


def main():
    (path, trace_id, parent, grpc_trace, grpc_parent, refused_trace, stream_trace, stream_parent,
     mark2, mark3, metrics_on, metrics_off) = sys.argv[1:13]
    mark2, mark3 = int(mark2), int(mark3)
    with open(path, encoding="utf-8") as f:
        lines = [json.loads(line) for line in f if line.strip()]
    check(not any("bad_request" in x for x in lines), "every export was a protobuf POST to /v1/traces")
    spans = [x for x in lines[:mark2] if "name" in x]
    check(len(lines) >= mark2 and mark2 > 0, f"the traced server exported spans ({mark2} lines)")

    traced = [s for s in spans if s["trace_id"] == trace_id]
    names = sorted(s["name"] for s in traced)
    check(names == ["ack", "append", "fsync", "publish", "validate"],
          f"the traceparent's trace holds publish, validate, append, fsync, ack: {names}")
    roots = [s for s in traced if s["name"] == "publish"]
    root = roots[0] if roots else {}
    check(len(roots) == 1, "one root publish span in that trace")
    check(root.get("parent_span_id") == parent, "the root's parent is the traceparent's span id")
    check(root.get("kind") == 2, "the root is a SERVER span")
    check(root.get("flags", 0) & 0x301 == 0x301, "the root's flags say sampled, remote parent")
    attrs = root.get("attributes", {})
    check(attrs.get("edge") == "http", f"attribute edge=http: {attrs}")
    check(attrs.get("items") == 2, "attribute items=2 (a batch of two)")
    check(attrs.get("namespace") == "quotes", "attribute namespace=quotes")
    check(root.get("service_name") == "tw-otel-test", "service.name from [tracing] service_name")
    children = [s for s in traced if s["name"] != "publish"]
    check(all(s["parent_span_id"] == root.get("span_id") for s in children),
          "validate, append, fsync and ack are children of publish")
    check(len({s["span_id"] for s in traced}) == 5, "five distinct span ids")
    check(all(root.get("start", 0) <= s["start"] <= s["end"] <= root.get("end", 0) for s in children),
          "every child starts and ends within the root")
    by = {s["name"]: s for s in children}
    if len(by) == 4:
        v, a, f, k = by["validate"], by["append"], by["fsync"], by["ack"]
        check(v["end"] <= a["start"], "validate ends before the append starts")
        check(a["end"] <= f["start"], "the append ends before the fsync starts")
        check(f["end"] <= k["start"], "the fsync ends before the ack starts")
        check(a["end"] > a["start"] and f["end"] > f["start"], "append and fsync took time (real times)")
        check(a["attributes"].get("namespace") == "quotes" and f["attributes"].get("namespace") == "quotes",
              "append and fsync name their namespace")
    else:
        for what in ("validate/append", "append/fsync", "fsync/ack", "real times", "namespace attrs"):
            check(False, f"{what}: children missing")
    check(root.get("end", 0) - root.get("start", 0) < 10_000_000_000, "the root lasted under 10 s (sane clock)")

    g = [s for s in spans if s["trace_id"] == grpc_trace]
    groot = [s for s in g if s["name"] == "publish"]
    check(sorted(s["name"] for s in g) == ["ack", "append", "fsync", "publish", "validate"],
          f"the gRPC Publish's trace holds the same five spans: {sorted(s['name'] for s in g)}")
    check(len(groot) == 1 and groot[0]["parent_span_id"] == grpc_parent,
          "the gRPC root's parent is the traceparent metadata's span id")
    check(len(groot) == 1 and groot[0]["attributes"] == {"edge": "grpc", "items": 1, "namespace": "quotes"},
          f"gRPC root attributes: {groot[0]['attributes'] if groot else None}")

    r = [s for s in spans if s["trace_id"] == refused_trace]
    check(sorted(s["name"] for s in r) == ["publish", "validate"],
          f"a refused publish is traced up to its validation: {sorted(s['name'] for s in r)}")
    rroot = [s for s in r if s["name"] == "publish"]
    check(len(rroot) == 1 and rroot[0]["status_code"] == 2 and rroot[0]["attributes"].get("items") == 0,
          "its root has status ERROR and items=0")

    st = [s for s in spans if s["trace_id"] == stream_trace]
    sroots = [s for s in st if s["name"] == "publish"]
    check(sorted(s["name"] for s in st) == sorted(["ack", "append", "fsync", "publish", "validate"] * 2),
          f"a PublishStream's two batches are two publishes of five spans under its traceparent: "
          f"{sorted(s['name'] for s in st)}")
    check(len(sroots) == 2 and all(r["parent_span_id"] == stream_parent for r in sroots),
          "both batches' roots have the stream metadata's span id as parent")
    check(len(sroots) == 2 and all(r["attributes"] == {"edge": "grpc", "items": 1, "namespace": "quotes"}
                                   for r in sroots),
          f"stream batch attributes: {[r['attributes'] for r in sroots]}")
    check(all(c["parent_span_id"] in {r["span_id"] for r in sroots} for c in st if c["name"] != "publish"),
          "each batch's spans are children of its own root")

    root_edge = {s["trace_id"]: s["attributes"].get("edge") for s in spans if s["name"] == "publish"}
    for edge in ("websocket", "mqtt"):
        ids = [t for t, e in root_edge.items() if e == edge]
        es = [s for s in spans if s["trace_id"] in ids]
        eroot = [s for s in es if s["name"] == "publish"]
        check(len(ids) == 1 and sorted(s["name"] for s in es) == ["ack", "append", "fsync", "publish", "validate"],
              f"one {edge} publish is one trace of the five spans: {sorted(s['name'] for s in es)}")
        ok = (len(eroot) == 1 and eroot[0]["parent_span_id"] == ""
              and eroot[0]["attributes"] == {"edge": edge, "items": 1, "namespace": "quotes"}
              and all(eroot[0]["start"] <= s["start"] <= s["end"] <= eroot[0]["end"] for s in es))
        check(ok, f"its root has no parent, edge={edge}, items=1, and holds its children: "
                  f"{eroot[0]['attributes'] if eroot else None}")

    others = [s for s in spans if s["trace_id"] not in (trace_id, grpc_trace, refused_trace, stream_trace)
              and root_edge.get(s["trace_id"]) == "http"]
    other_roots = [s for s in others if s["name"] == "publish"]
    check(len(other_roots) == 2 and len({s["trace_id"] for s in other_roots}) == 2,
          f"the publishes without and with an invalid traceparent made a new trace each ({len(other_roots)})")
    check(len(other_roots) == 2 and all(s["parent_span_id"] == "" for s in other_roots),
          "their roots have no parent")
    check(len(others) == 10, f"those traces have five spans each ({len(others)})")

    check(mark3 == mark2 and len(lines) == mark2,
          f"nothing was sent by the server without [tracing] ({len(lines) - mark2} lines)")

    on = metric_values(metrics_on)
    check(on.get("tickwire_trace_spans_exported_total", 0) >= 20,
          f"/metrics counts exported spans: {on.get('tickwire_trace_spans_exported_total')}")
    check(on.get("tickwire_trace_spans_dropped_total") == 0, "/metrics counts no dropped span")
    off = metric_values(metrics_off)
    check(bool(off) and "tickwire_trace_spans_exported_total" not in off,
          "without [tracing], /metrics has no trace families")

    print(f"OTel: {checks} checks, {len(failures)} failed, {EXPECTED_CHECKS} expected")
    if failures or checks < EXPECTED_CHECKS:
        sys.exit(1)


if __name__ == "__main__":
    main()
