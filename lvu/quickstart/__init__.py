"""``lvu quickstart METHOD``: a whole method on synthetic videos, on a CPU, in minutes.

Each method is one entry of :data:`lvu.quickstart.registry.QUICKSTARTS`. Video-LLM methods on the host-LM layer
share one pipeline (:mod:`lvu.quickstart.host_lm`: synthetic videos, a tiny host, the method's recipe stages chained
with ``init.from``, answers, an export); their entry names the stages. The shared steps (progress lines, quiet
Lightning, loss curves, the summary table) are in :mod:`lvu.quickstart.common`.
"""
