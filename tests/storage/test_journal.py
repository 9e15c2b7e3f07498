"""The append-only journal: lines by byte offset, damaged lines skipped, segments owned through flock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from galerne.storage.journal import SEGMENT_SUFFIX, Journal


def test_records_come_back_by_offset(tmp_path: Path) -> None:
    segment = Journal(tmp_path).create_segment()
    when = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    first = segment.append({"n": 1, "created_at": when})
    second = segment.append({"n": 2, "text": "é\n"})
    assert first[0] == 0 and first[1] == second[0] and second[1] == segment.size == os.path.getsize(segment.path)
    records, offset = segment.read(0, segment.size, max_records=10)
    assert records == [{"n": 1, "created_at": when.isoformat()}, {"n": 2, "text": "é\n"}]
    assert offset == segment.size
    assert segment.read(first[1], segment.size, max_records=10) == ([{"n": 2, "text": "é\n"}], segment.size)


def test_read_stops_at_max_records_and_goes_on_from_its_offset(tmp_path: Path) -> None:
    segment = Journal(tmp_path).create_segment()
    for n in range(7):
        segment.append({"n": n})
    seen: list[int] = []
    offset = 0
    while offset < segment.size:
        records, offset = segment.read(offset, segment.size, max_records=3)
        assert 0 < len(records) <= 3
        seen += [record["n"] for record in records]
    assert seen == list(range(7))


def test_a_torn_last_line_is_left_unread_and_a_damaged_line_is_skipped(tmp_path: Path) -> None:
    segment = Journal(tmp_path).create_segment()
    segment.append({"n": 1})
    with segment.path.open("ab") as raw:
        raw.write(b'{"n": oops}\n[1, 2]\n')
    segment.size = os.path.getsize(segment.path)
    segment.append({"n": 2})
    complete = segment.size
    with segment.path.open("ab") as raw:
        raw.write(b'{"n": 3, "mo')  # the writer was killed mid-line
    size = os.path.getsize(segment.path)
    records, offset = segment.read(0, size, max_records=100)
    assert records == [{"n": 1}, {"n": 2}]
    assert offset == complete


def test_a_line_longer_than_one_read_is_read_whole(tmp_path: Path) -> None:
    segment = Journal(tmp_path).create_segment()
    segment.append({"big": "x" * (3 << 20)})
    segment.append({"n": 1})
    records, offset = segment.read(0, segment.size, max_records=10)
    assert len(records[0]["big"]) == 3 << 20 and records[1] == {"n": 1} and offset == segment.size


def test_a_live_segment_is_never_adopted_a_closed_one_is(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    live = journal.create_segment()
    live.append({"n": 1})
    left = journal.create_segment()
    left.append({"n": 2})
    left.close()  # as when its process died: the file stays, the lock goes
    removed = journal.create_segment()
    removed.remove()
    orphans = Journal(tmp_path).adopt_orphans()
    assert [orphan.id for orphan in orphans] == [left.id]
    assert orphans[0].read(0, orphans[0].size, 10)[0] == [{"n": 2}]
    assert Journal(tmp_path).adopt_orphans() == []  # held by the first adopter now
    orphans[0].remove()
    assert sorted(path.name for path in tmp_path.iterdir()) == [f"{live.id}{SEGMENT_SUFFIX}"]


def test_a_segment_is_adopted_only_once_its_process_is_dead(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from galerne.storage.journal import Journal
        segment = Journal(Path({str(tmp_path)!r})).create_segment()
        segment.append({{"n": 1}})
        print(segment.id, flush=True)
        time.sleep(60)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        segment_id = child.stdout.readline().strip()
        assert segment_id
        assert Journal(tmp_path).adopt_orphans() == []
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    orphans = Journal(tmp_path).adopt_orphans()
    assert [orphan.id for orphan in orphans] == [segment_id]
    assert orphans[0].read(0, orphans[0].size, 10) == ([{"n": 1}], orphans[0].size)


def test_a_file_left_half_created_is_cleared(tmp_path: Path) -> None:
    (tmp_path / "0123.creating").write_bytes(b"")
    assert Journal(tmp_path).adopt_orphans() == []
    assert list(tmp_path.iterdir()) == []


def test_files_are_private(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal")
    segment = journal.create_segment()
    assert journal.directory.stat().st_mode & 0o777 == 0o700
    assert segment.path.stat().st_mode & 0o777 == 0o600


def test_an_unencodable_record_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    segment = Journal(tmp_path).create_segment()
    with pytest.raises(TypeError):
        segment.append({"value": object()})
    assert segment.size == 0 == os.path.getsize(segment.path)
    segment.append({"n": 1})
    assert json.loads(segment.path.read_bytes()) == {"n": 1}
