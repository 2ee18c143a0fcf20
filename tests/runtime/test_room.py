"""runtime/room.py: a candidate fits when what the serving engine holds (plus 10%) is free."""

from __future__ import annotations

from pathlib import Path

from vllm_supervisor.runtime.room import GiB, cpu_room, gpu_room, group_rss


def test_cpu_room() -> None:
    assert cpu_room(2 * GiB, 10 * GiB).fits
    got = cpu_room(2 * GiB, 2 * GiB)
    assert not got.fits and "2.2 GiB" in got.detail and "2.0 GiB available" in got.detail
    assert cpu_room(GiB, None).fits  # unreadable: the start itself will say


def test_gpu_room_names_each_short_gpu() -> None:
    assert gpu_room({0: 10 * GiB}, {0: 20 * GiB}).fits
    got = gpu_room({0: 70 * GiB, 1: 70 * GiB}, {0: 8 * GiB, 1: 90 * GiB})
    assert not got.fits and "GPU 0" in got.detail and "GPU 1" not in got.detail


def test_group_rss_reads_statm(tmp_path: Path) -> None:
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "statm").write_text("100 10 0 0 0 0 0\n")
    (tmp_path / "8").mkdir()  # gone or unreadable: skipped
    assert group_rss([7, 8, 9], tmp_path) == 10 * 4096
