#!/usr/bin/env python3
"""A CRI client on gRPC's C core (Python grpcio), for krio's interoperability test.

Usage: grpcio_client.py SOCKET

Calls krio over unix:SOCKET through channels with the authorities such clients send (grpcio's
default for a unix: target, the socket path itself, and localhost), with no generated code:
requests and responses are encoded by hand in the protobuf wire format. Prints one JSON object
with what it saw; the Rust test (e2e_interop.rs) judges it.
"""

import json
import sys

import grpc


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def string_field(number, text):
    data = text.encode()
    return varint(number << 3 | 2) + varint(len(data)) + data


def read_varint(buf, i):
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


def decode_strings(buf):
    """The length-delimited fields of a message as {number: text}; skips varints."""
    out, i = {}, 0
    while i < len(buf):
        key, i = read_varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, i = read_varint(buf, i)
        elif wire == 2:
            n, i = read_varint(buf, i)
            out[number] = buf[i:i + n].decode(errors="replace")
            i += n
        else:
            raise ValueError(f"unexpected wire type {wire}")
    return out


def call(channel, method, request):
    rpc = channel.unary_unary(
        method,
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    try:
        return {"ok": True, "response": rpc(request, timeout=10)}
    except grpc.RpcError as e:
        return {"ok": False, "code": e.code().name, "details": e.details()}


def main():
    socket = sys.argv[1]
    results = {"grpcio": grpc.__version__}
    channels = {
        "default": [],
        "socket_path": [("grpc.default_authority", socket)],
        "localhost": [("grpc.default_authority", "localhost")],
    }
    for name, options in channels.items():
        with grpc.insecure_channel("unix:" + socket, options=options) as ch:
            r = call(ch, "/runtime.v1.RuntimeService/Version", string_field(1, "v1"))
            if r["ok"]:
                fields = decode_strings(r.pop("response"))
                r["runtime_name"] = fields.get(2, "")
                r["runtime_api_version"] = fields.get(4, "")
            results[f"version_{name}"] = r
            # Two calls on one channel: the second request's headers refer to the first's
            # through the HPACK dynamic table.
            r = call(ch, "/runtime.v1.RuntimeService/Status", b"")
            r.pop("response", None)
            results[f"status_{name}"] = r
    with grpc.insecure_channel(
        "unix:" + socket, options=channels["socket_path"]
    ) as ch:
        for key, method in [
            ("unknown_method", "/runtime.v1.RuntimeService/NoSuchMethod"),
            ("unknown_service", "/runtime.v1.NoSuchService/Version"),
            ("unknown_package", "/runtime.v1alpha2.RuntimeService/Version"),
        ]:
            r = call(ch, method, b"")
            r.pop("response", None)
            results[key] = r
    print(json.dumps(results))


if __name__ == "__main__":
    main()
