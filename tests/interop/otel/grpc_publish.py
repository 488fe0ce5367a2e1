"""One gRPC Publish with a W3C traceparent in its metadata, then a PublishStream with another
in its metadata carrying two batches (each sent after the previous one's answer), for
scripts/test-otel.sh.

usage: grpc_publish.py HOST:PORT TRACEPARENT STREAM_TRACEPARENT
Generates the client from proto/tickwire/v1/tickwire.proto with grpcio-tools' protoc.
"""

import os
import sys
import tempfile

import grpc
from grpc_tools import protoc

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))


def main():
    target, traceparent, stream_traceparent = sys.argv[1:4]
    out = tempfile.mkdtemp()
    rc = protoc.main(["grpc_tools.protoc", f"-I{os.path.join(ROOT, 'proto')}",
                      f"--python_out={out}", f"--grpc_python_out={out}",
                      "tickwire/v1/tickwire.proto"])
    if rc != 0:
        sys.exit(f"protoc failed ({rc})")
    for d in ("tickwire", "tickwire/v1"):
        open(os.path.join(out, d, "__init__.py"), "a").close()
    sys.path.insert(0, out)
    from tickwire.v1 import tickwire_pb2 as pb, tickwire_pb2_grpc as pbg

    stub = pbg.TickwireStub(grpc.insecure_channel(target))
    r = stub.Publish(pb.PublishRequest(items=[pb.PublishItem(
        channel="quotes.EURUSD", payload=pb.Payload(json=b'{"bid":"1.5","ask":"1.6"}'))]),
        metadata=[("traceparent", traceparent)], timeout=10)
    if len(r.results) != 1 or r.results[0].HasField("error"):
        sys.exit(f"gRPC publish failed: {r}")
    print("gRPC publish: ok")

    import queue
    requests = queue.Queue()

    def batches():
        while True:
            r = requests.get()
            if r is None:
                return
            yield r

    answers = stub.PublishStream(batches(), metadata=[("traceparent", stream_traceparent)],
                                 timeout=10)
    for i, sym in enumerate(["USDCAD", "USDSEK"]):
        requests.put(pb.PublishRequest(id=i + 1, items=[pb.PublishItem(
            channel=f"quotes.{sym}", payload=pb.Payload(json=b'{"bid":"1.3","ask":"1.4"}'))]))
        a = next(answers)
        if a.id != i + 1 or len(a.results) != 1 or a.results[0].HasField("error"):
            sys.exit(f"gRPC stream batch {i + 1} failed: {a}")
    requests.put(None)
    print("gRPC publish stream: ok")


if __name__ == "__main__":
    main()
