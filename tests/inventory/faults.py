"""A stand-in for AWS's refusals in front of moto: access denied, rejected credentials,
throttling and garbled answers, by region.

moto answers every call; AWS also says UnauthorizedOperation, AuthFailure and
RequestLimitExceeded, and a wrong endpoint_url answers something that is not EC2 at
all. This proxy on loopback answers those for chosen regions, the errors in EC2's own
XML error shape, and forwards everything else to moto unchanged, so botocore's real
error handling and retry backoff are what the tests exercise.
"""

from __future__ import annotations

import re
import threading
import urllib.error
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ERROR_XML = (
    '<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>{code}</Code>'
    "<Message>{message}</Message></Error></Errors><RequestID>gpufleet-test</RequestID></Response>"
)
SCOPE = re.compile(r"Credential=[^/]+/\d+/([a-z0-9-]+)/")


class FaultyEC2:
    def __init__(
        self,
        upstream: str,
        denied: set[str] = frozenset(),
        throttle: dict[str, int] | None = None,
        rejected: set[str] = frozenset(),
        garbled: dict[str, bytes] | None = None,
    ) -> None:
        self.upstream = upstream
        self.denied = set(denied)
        self.rejected = set(rejected)
        self.garbled = dict(garbled or {})
        self.throttle = dict(throttle or {})
        self.calls: Counter[str] = Counter()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FaultyEC2:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: object) -> None:
                return

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                scope = SCOPE.search(self.headers.get("Authorization", ""))
                region = scope.group(1) if scope else ""
                proxy.calls[region] += 1
                if region in proxy.rejected:
                    self._error(401, "AuthFailure", "AWS was not able to validate the credentials.")
                elif region in proxy.garbled:
                    self._reply(200, proxy.garbled[region], "text/html")
                elif region in proxy.denied:
                    self._error(
                        403,
                        "UnauthorizedOperation",
                        "You are not authorized to perform this operation.",
                    )
                elif proxy.throttle.get(region, 0) > 0:
                    proxy.throttle[region] -= 1
                    self._error(503, "RequestLimitExceeded", "Request limit exceeded.")
                else:
                    self._forward(body)

            def _forward(self, body: bytes) -> None:
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                request = urllib.request.Request(
                    proxy.upstream + self.path, data=body, headers=headers, method="POST"
                )
                try:
                    with urllib.request.urlopen(request) as reply:
                        status, payload, kind = reply.status, reply.read(), reply.headers
                except urllib.error.HTTPError as exc:
                    status, payload, kind = exc.code, exc.read(), exc.headers
                self._reply(status, payload, kind.get("Content-Type", "text/xml"))

            def _error(self, status: int, code: str, message: str) -> None:
                payload = ERROR_XML.format(code=code, message=message).encode()
                self._reply(status, payload, "text/xml;charset=UTF-8")

            def _reply(self, status: int, payload: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        return Handler
