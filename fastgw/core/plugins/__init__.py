"""Plugins' decisions, pure: no asyncio, no sockets, `now` passed in.

Each module takes values (a request's fields, a plugin's config, a consumer's
credentials) and returns a decision; the data plane's phase plumbing
(``fastgw.dataplane.plugins``) applies it to the exchange. Table-driven tests in
``tests/unit/test_plugin_decisions.py``.

- ``chain``: which plugin instances apply to a route, service and consumer (Kong's
  precedence), in Kong's priority order;
- ``auth``: key-auth keys, basic-auth credentials, ACL groups;
- ``ratelimit``: windows, counter keys and the RateLimit headers;
- ``iprestriction``: allow / deny over CIDRs;
- ``cors``: preflight answers and response fields;
- ``transform``: request and response transformer edits.
"""
