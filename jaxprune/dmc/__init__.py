"""Dynamic Memory Compression (arXiv 2403.09636): attention blocks that learn, per token
and KV head, to append their key/value to the cache or merge it into the last slot
(:mod:`jaxprune.dmc.retrofit`, ``objective``, ``run``, ``measure``; the model side is
:mod:`jaxprune.nn.dmc` and :mod:`jaxprune.ops.dmc`)."""
