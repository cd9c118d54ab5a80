"""Markdown renderings of the job tools' results (``mcp/job_tools.py``)."""

from __future__ import annotations

from django.conf import settings

from sshcontrol.mcp.job_schemas import (
    CancelResult,
    JobList,
    JobStarted,
    JobStatus,
    OutputChunk,
    ReadOutputResult,
)
from sshcontrol.mcp.render import _fence, _hygiene


def started(result: JobStarted) -> str:
    if result.state == "pending":
        return (
            f"`{result.command}` on **{result.host}** waits for an administrator's approval. "
            f"{result.next_step}"
        )
    return (
        f"Started `{result.command}` on **{result.host}** as job `{result.job_id}` "
        f"(audit #{result.audit_id}). "
        f"{result.next_step}"
    )


def _chunk(name: str, chunk: OutputChunk) -> str:
    where = f"bytes {chunk.offset}-{chunk.next_offset} of {chunk.total}"
    if chunk.skipped:
        where += f" ({chunk.skipped} bytes before were not kept)"
    if not chunk.text:
        return f"**{name}** ({where}): nothing new"
    return f"**{name}** ({where}):\n{_fence(_within_budget(chunk))}"


def _within_budget(chunk: OutputChunk) -> str:
    """A page asked larger than the output budget, shown head and tail: the whole page is in the
    structured content, and the text must not carry it a second time (README, "Output")."""
    text, budget = chunk.text, int(settings.OUTPUT_BUDGET_BYTES)
    page_bytes = chunk.next_offset - chunk.offset
    if page_bytes <= budget and len(text) <= 2 * budget:  # cleaning can write a character longer
        return text
    half = budget // 2
    head_end = text.rfind("\n", 0, half) + 1 or half
    tail_start = text.find("\n", len(text) - half) + 1 or len(text) - half
    head, tail = text[:head_end], text[tail_start:]
    # Cleaning may have changed the page's length a little: the byte count is about right.
    left = max(0, page_bytes - len(head.encode()) - len(tail.encode()))
    return (
        f"{head}[... about {left} bytes of this page are in the structured content only "
        f"(chunk.text); a page of max_bytes <= {budget} is shown whole ...]\n{tail}"
    )


def status(result: JobStatus) -> str:
    if result.state == "exited":
        outcome = f"exited with status {result.exit_status}"
    elif result.state == "running":
        outcome = "is running"
    else:
        outcome = result.state.replace("_", " ") + (f" ({result.error})" if result.error else "")
    parts = [
        f"Job `{result.job_id}` (`{result.command}` on **{result.host}**) {outcome}, "
        f"{result.duration_s:.1f} s."
    ]
    if hygiene := _hygiene(result.output_warnings, result.redactions):
        parts.append(hygiene)
    parts += [_chunk("stdout", result.stdout), _chunk("stderr", result.stderr)]
    if result.note:
        parts.append(result.note)
    parts.append(f"Audit #{result.audit_id}.")
    return "\n\n".join(parts)


def cancelled(result: CancelResult) -> str:
    return f"Job `{result.job_id}`: {result.note}"


def listing(result: JobList) -> str:
    if not result.jobs:
        return "No jobs."
    lines = ["| job | state | host | command | exit | started |", "|---|---|---|---|---|---|"]
    for j in result.jobs:
        command = j.command if len(j.command) <= 60 else j.command[:57] + "..."
        exit_status = "-" if j.exit_status is None else str(j.exit_status)
        lines.append(
            f"| {j.job_id} | {j.state} | {j.host} | `{command.replace('|', '¦')}` | {exit_status} "
            f"| {j.started_at} |"
        )
    return "\n".join(lines)


def read_output(result: ReadOutputResult) -> str:
    parts = []
    if hygiene := _hygiene(result.output_warnings, result.redactions):
        parts.append(hygiene)
    parts.append(_chunk(result.stream, result.chunk))
    if not result.chunk.complete:
        parts.append(f"Next: offset={result.chunk.next_offset}.")
    return "\n\n".join(parts)
