"""An external sort in bounded memory: what lets a bulk job's plan hold ten million images in the
memory of a hundred thousand (service.jobs.plan). Torch-free.

    runs = SortedRuns(folder, "name", limit=100_000)
    for record in records:            # tuples, ordered (and told apart) by their first 2 fields
        runs.add(record)
    for record in runs.sorted():      # every record, in order
        ...

At most ``limit`` records (and one more) are held at once: each time the buffer is full it is
sorted and written to a run file under ``folder`` in pickled blocks of ``BLOCK`` records.
``sorted()`` reads the runs back a block at a time. Runs that follow one another (input that was
sorted, or sorted within long stretches, as the Open Images CSVs and S3 listings are) are
chained, each read once, no comparisons; only overlapping runs go through a k-way merge, at most
``limit // (2 * BLOCK)`` of them at once (more are merged into longer runs first, a pass over the
records each time), so that the merge too holds at most half a buffer's records. Input that fits
the buffer never touches the disk.
"""

from __future__ import annotations

import heapq
import itertools
import os
import pickle
from collections.abc import Iterable, Iterator
from typing import IO, Any

BLOCK = 1024  # records per pickled block: what each run holds in memory while merged
MAX_FAN_IN = 256  # runs merged at once (open files)
KEY = 2  # the leading fields that order records (and tell any two apart): kept per run


class SortedRuns:
    """Records added in any order, read back sorted (see the module's docstring)."""

    def __init__(self, folder: str, name: str, *, limit: int) -> None:
        self.folder = folder
        self.name = name
        self.limit = max(1, limit)
        self.buffer: list[Any] = []
        self.runs: list[tuple[str, Any, Any]] = []  # (path, first record, last record)

    def add(self, record: Any) -> None:
        self.buffer.append(record)
        if len(self.buffer) > self.limit:
            self._spill()

    def extend(self, records: Iterable[Any]) -> None:
        """``add`` each record (a buffer's worth at a time)."""
        records = iter(records)
        while True:
            room = self.limit + 1 - len(self.buffer)
            self.buffer.extend(itertools.islice(records, room))
            if len(self.buffer) <= self.limit:
                return  # the records ran out before the buffer filled
            self._spill()

    def _spill(self) -> None:
        if not self.buffer:
            return
        self.buffer.sort()
        path = os.path.join(self.folder, f"{self.name}-{len(self.runs):05d}.run")
        with open(path, "wb") as fh:
            for start in range(0, len(self.buffer), BLOCK):
                pickle.dump(self.buffer[start : start + BLOCK], fh, pickle.HIGHEST_PROTOCOL)
        self.runs.append((path, self.buffer[0][:KEY], self.buffer[-1][:KEY]))
        self.buffer = []

    def sorted(self) -> Iterator[Any]:
        """Every record added, in order (once: the buffer and the run files are consumed)."""
        if not self.runs:
            self.buffer.sort()
            records, self.buffer = self.buffer, []
            return iter(records)
        self._spill()
        runs, self.runs = self.runs, []
        groups: list[list[str]] = []  # runs that follow one another, chained
        last = None
        for path, first, final in sorted(runs, key=lambda run: run[1]):
            if groups and last is not None and not first < last:
                groups[-1].append(path)
            else:
                groups.append([path])
            last = final if last is None or last < final else last
        fan_in = min(MAX_FAN_IN, max(2, self.limit // (2 * BLOCK)))  # half a buffer's records
        passes = 0
        while len(groups) > fan_in:  # a merge of every run would hold a block of each
            batches = [groups[i : i + fan_in] for i in range(0, len(groups), fan_in)]
            groups = [[self._write(_merge(batch), f"pass{passes}-{n}")] for n, batch in
                      enumerate(batches)]  # fmt: skip
            passes += 1
        return _merge(groups)

    def _write(self, records: Iterator[Any], tag: str) -> str:
        """A run of ``records`` (already in order), a block at a time; its path."""
        path = os.path.join(self.folder, f"{self.name}-{tag}.run")
        with open(path, "wb") as fh:
            while block := list(itertools.islice(records, BLOCK)):
                pickle.dump(block, fh, pickle.HIGHEST_PROTOCOL)
        return path


def _merge(groups: list[list[str]]) -> Iterator[Any]:
    """The records of runs in order: each group's runs one after another (they follow one
    another), the groups merged."""
    streams = [itertools.chain.from_iterable(map(_read_run, group)) for group in groups]
    return streams[0] if len(streams) == 1 else heapq.merge(*streams)


def _read_run(path: str) -> Iterator[Any]:
    """A run file's records, a block at a time; the file is removed once read."""
    with open(path, "rb") as fh:
        yield from _blocks(fh)
    os.unlink(path)


def _blocks(fh: IO[bytes]) -> Iterator[Any]:
    while True:
        try:
            block = pickle.load(fh)
        except EOFError:
            return
        yield from block
