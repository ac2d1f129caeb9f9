"""Backends for orchestration frameworks, each behind its extra:
:mod:`eventkernel.integrations.langgraph` (``pip install eventkernel[langgraph]``)."""
