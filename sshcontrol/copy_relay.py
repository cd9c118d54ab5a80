"""``ssh_copy`` between sessions held by two different workers: worker to worker through the broker.

The source's worker runs a download whose bytes go to a stream (``filestream.SendingSink``),
the destination's worker an upload that reads the same stream (``filestream.receiving``):
the two tasks the single-host transfers already have, paired on one stream id. The bytes go
from one worker to the other through the broker with the stream's credit window (memory on
either end and in the broker bounded by the window, whatever the file's size), and never
through ``mcp_serve``, which only sends the two tasks and waits for their answers.

- The upload writes a temporary file and renames it into place only once the stream's end
  frame carried the size and SHA-256 it received: a broken stream, a source that fails
  midway or a stalled one leaves no file at the destination.
- The upload is sent only once the download has put its first frame on the stream: a
  receiver never holds a worker thread while its sender waits in a queue behind it (with
  many copies at once, each worker's threads taken by tasks waiting for the other worker's
  queued ones would stall until the stall timeout).
- A source that fails before its first byte (a missing file) fails the copy with the
  source's error (the destination's, "stream broken", says less), and leaves nothing there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from django.db import close_old_connections

from sshcontrol import filestream
from sshcontrol.taskspec import (
    Copied,
    CopySpec,
    DispatchError,
    Downloaded,
    DownloadSpec,
    Failure,
    Uploaded,
    UploadSpec,
)

log = logging.getLogger(__name__)


# The source's task is waited for on a thread of this pool, never on a thread made per copy:
# with the rpc:// result backend (RabbitMQ) a thread's replies come to a queue named after its
# thread ident, and a new thread that got a dead one's ident shared that queue with the dead
# thread's consumer, which took the reply (seen: the second copy waited forever). Pool threads live on.
_SOURCES = ThreadPoolExecutor(max_workers=256, thread_name_prefix="copy-source")


class _Source:
    """The download on the source's worker, waited for on a pool thread of this process."""

    def __init__(self, download: Callable[[DownloadSpec], Downloaded], spec: DownloadSpec) -> None:
        self.error: DispatchError | None = None
        self.future: Future[Downloaded | None] = _SOURCES.submit(self._run, download, spec)

    def _run(self, download: Callable[[DownloadSpec], Downloaded], spec: DownloadSpec) -> Downloaded | None:
        close_old_connections()  # the session's holder is read from the database: not on a dropped link
        try:
            return download(spec)
        except DispatchError as exc:
            self.error = exc
        except Exception:
            log.exception("the source side of a copy failed unexpectedly")
            self.error = DispatchError(Failure.INTERNAL_ERROR, "internal error; see the server log")
        return None

    def finished(self) -> bool:
        return self.future.done()

    def result(self) -> Downloaded:
        done = self.future.result()  # bounded: the dispatcher's wait, and the stream's stall timeout
        if self.error is not None:
            raise self.error
        assert done is not None
        return done


def across(
    download: Callable[[DownloadSpec], Downloaded],
    upload: Callable[[UploadSpec], Uploaded],
    spec: CopySpec,
) -> Copied:
    """Copy ``spec``: ``download`` on the source's holder streams into ``upload`` on the destination's."""
    stream_id = filestream.new_stream_id()
    try:
        source = _Source(download, DownloadSpec(spec.source_path, stream=stream_id))
        if not filestream.wait_for_sender(stream_id, source.finished):
            source.result()  # it failed before sending anything: its error is the copy's
            raise DispatchError(Failure.TRANSFER_STREAM, "the source finished without sending its file")
        if source.finished() and source.error is not None:
            raise source.error  # it failed at once (a missing file): the upload is not even sent
        try:
            sent = upload(
                UploadSpec(spec.dest_path, mode=spec.mode, overwrite=spec.overwrite, stream=stream_id)
            )
        except DispatchError as exc:
            filestream.abort_sender(stream_id, f"the destination stopped the copy: {exc.message}")
            source.future.result()
            # The source's own failure explains a broken stream better than the stream does.
            if exc.kind is Failure.TRANSFER_STREAM and source.error is not None:
                raise source.error from None
            raise
        got = source.result()
        if (got.size, got.sha256) != (sent.size, sent.sha256):
            raise DispatchError(
                Failure.TRANSFER_STREAM,
                f"the destination wrote {sent.size} bytes with SHA-256 {sent.sha256}, the source sent "
                f"{got.size} with {got.sha256}",
            )
        return Copied(
            spec.source_path, sent.remote_path, sent.size, sent.sha256, got.reconnected or sent.reconnected
        )
    finally:
        filestream.delete(stream_id)
