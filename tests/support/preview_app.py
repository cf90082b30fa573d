"""A small web app that preview tests and the preview benchmark run inside sandboxes.

Standard library only, because the default snapshot has python3 but no web frameworks.

    python3 preview_app.py HOST PORT

Routes:
    GET /           an HTML page whose script opens a WebSocket to /ws and shows the echo
    GET /hello      text naming the port, for simple checks
    GET /headers    the request's method, target and headers as JSON
    GET /cors       text with the app's own `Access-Control-Allow-Origin: *`
    OPTIONS /cors   the app's own preflight answer
    GET /sse        five server-sent events, 300 ms apart
    GET /ws         a WebSocket echo: text and binary frames come back, pings get pongs, and
                    the text "close:CODE" makes the app close with that code
Anything else returns 404, OPTIONS included, as many servers do.
"""

import asyncio
import base64
import hashlib
import json
import struct
import sys

WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>preview app</title></head>
<body><h1 id="title">preview app on port {port}</h1><p id="echo">waiting</p>
<script>
const scheme = location.protocol === "https:" ? "wss:" : "ws:";
const socket = new WebSocket(scheme + "//" + location.host + "/ws");
socket.onopen = () => socket.send("hello over websocket");
socket.onmessage = (event) => {{ document.getElementById("echo").textContent = "echo: " + event.data; }};
socket.onerror = () => {{ document.getElementById("echo").textContent = "websocket error"; }};
</script></body></html>
"""


async def read_request(reader):
    """Returns (method, target, headers, body), or None at the end of the connection."""
    line = await reader.readline()
    if not line:
        return None
    method, target, _version = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
    headers = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = b""
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    return method, target, headers, body


def response(status, body, content_type="text/plain", extra=()):
    head = [f"HTTP/1.1 {status}", f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
    head.extend(extra)
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def server_sent_events(writer):
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    for index in range(5):
        event = f"data: event {index}\n\n".encode()
        writer.write(b"%x\r\n%s\r\n" % (len(event), event))
        await writer.drain()
        await asyncio.sleep(0.3)
    writer.write(b"0\r\n\r\n")
    await writer.drain()


async def read_frame(reader):
    """Returns (opcode, payload) of one client frame; fragmented messages are not supported."""
    first, second = await reader.readexactly(2)
    opcode = first & 0x0F
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", await reader.readexactly(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", await reader.readexactly(8))
    mask = await reader.readexactly(4) if second & 0x80 else b"\0\0\0\0"
    data = await reader.readexactly(length)
    return opcode, bytes(byte ^ mask[index % 4] for index, byte in enumerate(data))


def frame(opcode, payload):
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, length)
    elif length < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 127, length)
    return header + payload


async def websocket_echo(reader, writer, headers):
    accept = base64.b64encode(
        hashlib.sha1((headers["sec-websocket-key"] + WEBSOCKET_GUID).encode()).digest()
    ).decode()
    writer.write(
        (
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept}\r\n\r\n"
        ).encode()
    )
    await writer.drain()
    while True:
        opcode, payload = await read_frame(reader)
        if opcode == 0x8:
            writer.write(frame(0x8, payload[:2]))
            await writer.drain()
            return
        if opcode == 0x9:
            writer.write(frame(0xA, payload))
        elif opcode == 0x1 and payload.startswith(b"close:"):
            code = int(payload[6:])
            writer.write(frame(0x8, struct.pack("!H", code) + b"closed by the app"))
            await writer.drain()
            # Wait for the client's close frame, as RFC 6455 requires.
            await read_frame(reader)
            return
        elif opcode in (0x1, 0x2):
            writer.write(frame(opcode, payload))
        await writer.drain()


async def handle(reader, writer, port):
    try:
        while True:
            request = await read_request(reader)
            if request is None:
                return
            method, target, headers, _body = request
            path = target.split("?", 1)[0]
            if path == "/ws" and headers.get("upgrade", "").lower() == "websocket":
                await websocket_echo(reader, writer, headers)
                return
            if method == "GET" and path == "/sse":
                await server_sent_events(writer)
                return
            if method == "GET" and path == "/":
                writer.write(response("200 OK", PAGE.format(port=port).encode(), "text/html; charset=utf-8"))
            elif method == "GET" and path == "/hello":
                writer.write(response("200 OK", f"hello from port {port}\n".encode()))
            elif method == "GET" and path == "/headers":
                body = json.dumps({"method": method, "target": target, "headers": headers}).encode()
                writer.write(response("200 OK", body, "application/json"))
            elif method == "GET" and path == "/cors":
                writer.write(response("200 OK", b"cors\n", extra=["Access-Control-Allow-Origin: *"]))
            elif method == "OPTIONS" and path == "/cors":
                writer.write(
                    response(
                        "204 No Content",
                        b"",
                        extra=[
                            "Access-Control-Allow-Origin: *",
                            "Access-Control-Allow-Methods: GET",
                            "Access-Control-Allow-Headers: x-app-header",
                        ],
                    )
                )
            else:
                writer.write(response("404 Not Found", b"not found\n"))
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def main(host, port):
    server = await asyncio.start_server(lambda r, w: handle(r, w, port), host, port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
