"""A small OTLP/HTTP trace receiver for scripts/test-otel.sh.

Listens on 127.0.0.1 (port 0: the kernel picks; written to --port-file), accepts
POST /v1/traces with an application/x-protobuf ExportTraceServiceRequest, decodes it with
opentelemetry-proto (PyPI), and appends one JSON line per span to --out. Anything else is
answered 404/415 and logged as a line {"bad_request": ...} so the checker sees it.
"""

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

LOCK = threading.Lock()


def any_value(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--port-file", required=True)
    args = ap.parse_args()

    def write(obj):
        with LOCK, open(args.out, "a", encoding="utf-8") as f:
            f.write(json.dumps(obj) + "\n")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            ctype = self.headers.get("Content-Type", "")
            if self.path != "/v1/traces" or ctype != "application/x-protobuf":
                write({"bad_request": {"path": self.path, "content_type": ctype}})
                self.send_response(404 if self.path != "/v1/traces" else 415)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            req = ExportTraceServiceRequest()
            try:
                req.ParseFromString(body)
            except DecodeError as e:
                write({"bad_request": {"decode_error": str(e)}})
                self.send_response(400)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            for rs in req.resource_spans:
                resource = {kv.key: any_value(kv.value) for kv in rs.resource.attributes}
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        write({
                            "service_name": resource.get("service.name"),
                            "scope": ss.scope.name,
                            "trace_id": s.trace_id.hex(),
                            "span_id": s.span_id.hex(),
                            "parent_span_id": s.parent_span_id.hex(),
                            "name": s.name,
                            "kind": s.kind,
                            "start": s.start_time_unix_nano,
                            "end": s.end_time_unix_nano,
                            "flags": s.flags,
                            "status_code": s.status.code,
                            "attributes": {kv.key: any_value(kv.value) for kv in s.attributes},
                        })
            out = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *a):  # quiet
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(args.port_file + ".tmp", "w", encoding="utf-8") as f:
        f.write(str(srv.server_address[1]))
    import os

    os.replace(args.port_file + ".tmp", args.port_file)
    srv.serve_forever()


if __name__ == "__main__":
    main()
