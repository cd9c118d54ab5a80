"""``mcp_serve``'s side of a distributed transfer: its own file (or an upload's inline bytes) streamed.

The local path is opened here, below this process's ``SSHCONTROL_LOCAL_ROOT`` and through
the same fence as on the embedded default (``sshcontrol/localfiles.py``); the worker gets
only a stream id (``sshcontrol/filestream.py``). While the task runs on the worker, a
thread of this process pumps the file into the stream (upload) or writes the stream into
the destination's temporary file (download), which is renamed into place only when the
stream's end checked out and the worker reported success with the same SHA-256.
"""

from __future__ import annotations

import contextlib
import io
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import BinaryIO

from sshcontrol import filestream, localfiles
from sshcontrol.taskspec import DispatchError, Downloaded, DownloadSpec, Failure, Uploaded, UploadSpec

# How long the relay thread may take to finish once the worker has answered (it only has the
# last frames in flight left to handle).
_FINISH_SECONDS = 30.0


class _Relay:
    """One thread moving a stream's bytes; its failure, if any, as a DispatchError."""

    def __init__(self, name: str, body: Callable[[threading.Event], None]) -> None:
        self.cancel = threading.Event()
        self.error: DispatchError | None = None
        self._body = body
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        try:
            self._body(self.cancel)
        except DispatchError as exc:
            self.error = exc
        except localfiles.LocalPathError as exc:
            self.error = DispatchError(Failure.LOCAL_PATH, str(exc))
        except filestream.StreamBroken as exc:
            self.error = DispatchError(Failure.TRANSFER_STREAM, str(exc))
        except OSError as exc:
            self.error = DispatchError(Failure.LOCAL_PATH, f"local file: {exc.strerror or exc}")
        except Exception as exc:  # the broker's client failed: the stream is what broke
            self.error = DispatchError(Failure.TRANSFER_STREAM, f"the transfer stream broke: {exc}")

    def stop(self) -> None:
        self.cancel.set()
        self.thread.join(_FINISH_SECONDS)

    def finished(self) -> DispatchError | None:
        self.thread.join(_FINISH_SECONDS)
        if self.thread.is_alive():
            self.cancel.set()
            self.thread.join(5)
            return DispatchError(Failure.TRANSFER_STREAM, "the transfer stream did not finish")
        return self.error


@contextlib.contextmanager
def _source(spec: UploadSpec) -> Iterator[BinaryIO]:
    if spec.local_path is not None:
        with localfiles.open_source(spec.local_path) as source:
            yield source
    else:
        yield io.BytesIO(spec.content or b"")


def upload(spec: UploadSpec, run: Callable[[UploadSpec], Uploaded]) -> Uploaded:
    """Run ``run`` (the task on the holder) with ``spec``'s bytes streamed to it from here."""
    stream_id = filestream.new_stream_id()
    sent: list[str] = []
    try:
        with _source(spec) as source:

            def pump(cancel: threading.Event) -> None:
                end = filestream.Sender(stream_id, cancel)
                try:
                    while chunk := source.read(filestream.CHUNK):
                        end.write(chunk)
                    sent.append(end.finish()[1])
                except (OSError, filestream.StreamBroken) as exc:
                    if not cancel.is_set():
                        end.abort(f"the caller's side stopped the transfer: {exc}")
                    raise
                finally:
                    end.close()

            relay = _Relay(f"upload {stream_id}", pump)
            relay.thread.start()
            try:
                done = run(replace(spec, content=None, local_path=None, stream=stream_id))
            except DispatchError as exc:
                relay.stop()
                raise _more_telling(relay.error, exc) from None
            except BaseException:
                relay.stop()  # before the file it reads is closed under it
                raise
            failed = relay.finished()
            if failed is not None:
                raise failed
            if sent != [done.sha256]:
                raise DispatchError(
                    Failure.TRANSFER_STREAM, "the uploaded bytes do not match the SHA-256 read here"
                )
            return done
    except localfiles.LocalPathError as exc:
        raise DispatchError(Failure.LOCAL_PATH, str(exc)) from None
    finally:
        filestream.delete(stream_id)


def download(spec: DownloadSpec, run: Callable[[DownloadSpec], Downloaded]) -> Downloaded:
    """Run ``run`` (the task on the holder), writing what it streams into the local file ``spec`` names."""
    if spec.local_path is None:
        raise ValueError("an inline download is one page in the task's reply, not a stream")
    stream_id = filestream.new_stream_id()
    received: list[str] = []
    try:
        with localfiles.Destination(spec.local_path, spec.overwrite) as dest:

            def drain(cancel: threading.Event) -> None:
                end = filestream.Receiver(stream_id, cancel)
                try:
                    with dest.writer() as out:
                        # Written before the next read reuses the frame's block.
                        while chunk := end.read_view(filestream.CHUNK):
                            out.write(chunk)
                    received.append(end.sha256)
                except (OSError, filestream.StreamBroken) as exc:
                    if not cancel.is_set():
                        end.abort(f"the caller's side stopped the transfer: {_message(exc)}")
                    raise
                finally:
                    end.close()

            relay = _Relay(f"download {stream_id}", drain)
            relay.thread.start()
            try:
                done = run(replace(spec, local_path=None, stream=stream_id))
            except DispatchError as exc:
                relay.stop()
                raise _more_telling(relay.error, exc) from None
            except BaseException:
                relay.stop()  # before the directory it writes in is closed under it
                raise
            failed = relay.finished()
            if failed is not None:
                raise failed
            if received != [done.sha256]:
                raise DispatchError(
                    Failure.TRANSFER_STREAM, "the downloaded bytes do not match the SHA-256 the worker read"
                )
            return done
    except localfiles.LocalPathError as exc:
        raise DispatchError(Failure.LOCAL_PATH, str(exc)) from None
    finally:
        filestream.delete(stream_id)


def _message(exc: BaseException) -> str:
    if isinstance(exc, DispatchError):
        return exc.message
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def _more_telling(relay: DispatchError | None, task: DispatchError) -> DispatchError:
    """The relay's own failure when it explains the task's (a local file), else the task's."""
    if relay is None or task.kind.outcome_unknown:
        return task
    if task.kind is Failure.TRANSFER_STREAM or relay.kind is not Failure.TRANSFER_STREAM:
        return relay
    return task
