"""Request heads for tests, made the way the proxy makes them: raw bytes through llhttp
and core.http.request.RequestReader."""

from __future__ import annotations

from typing import Mapping

import httptools

from fastgw.core.http.request import HeadCollector, RequestHead, RequestLimits, RequestReader


def parse_heads(raw: bytes, limits: RequestLimits | None = None, *, opening: bool = True,
                split: int = 0) -> list[RequestHead]:
    """Every head the reader accepts in `raw`, up to an upgrade (raises what feed_data
    raises otherwise). `opening`: the reader is given the first bytes fed, as the proxy's
    client connection gives them (False: it asks llhttp for every version); `split`: fed
    as two reads, cut at that offset."""
    sink = HeadCollector()
    heads = sink.heads
    reader = RequestReader(limits or RequestLimits(), sink, lambda body: None, lambda: None)
    reader.parser = httptools.HttpRequestParser(reader)
    reads = [raw[:split], raw[split:]] if split else [raw]
    if opening:
        reader.opening = reads[0]
    try:
        for data in reads:
            reader.parser.feed_data(data)
    except httptools.HttpParserUpgrade:
        pass  # llhttp stops after an upgrade request's head
    return heads


def make_head(target: str = "/", headers: Mapping[str, str] | None = None,
              method: str = "GET", host: str = "gw.test") -> RequestHead:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return parse_heads(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))[0]
