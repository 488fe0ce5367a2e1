"""Publishes without a traceparent over the edges that have none, for scripts/test-otel.sh:
one WebSocket publish (JSON protocol) and one MQTT 3.1.1 PUBLISH at QoS 1, each waiting for its
acknowledgement. Plain sockets (the standard library only): the server is what is tested.

usage: edges_publish.py HTTP_HOST:PORT MQTT_HOST:PORT
"""

import base64
import json
import os
import socket
import struct
import sys


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed by the server")
        buf += chunk
    return buf


def ws_publish(addr):
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET /v1/ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += recv_exact(s, 1)
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        sys.exit(f"WebSocket upgrade refused: {head[:80]!r}")
    cmd = json.dumps({"op": "publish", "id": 1, "channel": "quotes.AUDUSD",
                      "data": {"bid": "0.66", "ask": "0.67"}}).encode()
    mask = os.urandom(4)
    frame = bytes([0x81, 0x80 | 126]) + struct.pack("!H", len(cmd)) + mask
    frame += bytes(b ^ mask[i % 4] for i, b in enumerate(cmd))
    s.sendall(frame)
    while True:
        b0, b1 = recv_exact(s, 2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", recv_exact(s, 2))[0]
        elif n == 127:
            n = struct.unpack("!Q", recv_exact(s, 8))[0]
        payload = recv_exact(s, n)
        if b0 & 0x0F != 1:
            continue
        reply = json.loads(payload)
        if reply.get("id") == 1:
            if reply.get("ok") is not True:
                sys.exit(f"WebSocket publish refused: {reply}")
            break
    s.close()
    print("WebSocket publish: ok")


def mqtt_publish(addr):
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=10)
    client = b"otel-test"
    var = b"\x00\x04MQTT\x04\x02\x00\x3c"  # MQTT 3.1.1, clean session, keepalive 60 s
    body = var + struct.pack("!H", len(client)) + client
    s.sendall(bytes([0x10, len(body)]) + body)
    connack = recv_exact(s, 4)
    if connack[0] != 0x20 or connack[3] != 0:
        sys.exit(f"MQTT CONNECT refused: {connack!r}")
    topic = b"quotes/NZDUSD"
    payload = b'{"bid":"0.59","ask":"0.6"}'
    body = struct.pack("!H", len(topic)) + topic + struct.pack("!H", 1) + payload
    s.sendall(bytes([0x32, len(body)]) + body)
    puback = recv_exact(s, 4)
    if puback != b"\x40\x02\x00\x01":
        sys.exit(f"MQTT PUBLISH not acknowledged: {puback!r}")
    s.sendall(b"\xe0\x00")  # DISCONNECT
    s.close()
    print("MQTT publish: ok")


def main():
    http, mqtt = sys.argv[1:3]
    ws_publish(http)
    mqtt_publish(mqtt)


if __name__ == "__main__":
    main()
