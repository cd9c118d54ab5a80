"""The SSH runtime: what a worker process runs. Knows nothing of MCP, Django models or Celery.

Callers hand it plain dataclasses (``ConnectSpec``, ``ExecRequest``) and get plain
results back, so the same code runs in the MCP server (embedded) and in Celery workers.
"""
