"""Plugins on the data plane: the phase plumbing and the plugins that do I/O or keep state.

- ``phases``: PluginCall, PluginChain, PhasePlugin and the access / header_filter phases
  as the exchange runs them;
- ``registry``: the chains of a snapshot's routes, built once per config;
- ``auth``, ``traffic``, ``headers``: the plugins (decisions in ``fastgw.core.plugins``);
- ``counters``: the node's shared rate-limit counters.
"""
