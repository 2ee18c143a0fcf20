"""Reading User=/Group=/SupplementaryGroups=/ProtectHome= from the installed unit and its
drop-ins, in systemd's order."""

from __future__ import annotations

import shutil
from pathlib import Path

from vllm_supervisor.host.unitfile import installed

UNITS = Path(__file__).resolve().parents[2] / "units"


def test_the_shipped_unit(tmp_path: Path) -> None:
    d = tmp_path / "etc/systemd/system"
    d.mkdir(parents=True)
    shutil.copy(UNITS / "vllm-supervisor@.service", d)
    unit = installed("tiny", tmp_path)
    assert unit is not None
    assert (unit.user, unit.group) == ("vllm", "vllm-admin")
    assert unit.supplementary == ("vllm", "video", "render")
    assert unit.hides_home
    assert unit.config_dir == Path("/etc/vllm-supervisor")
    assert unit.environment["HF_HOME"] == "/var/cache/vllm-supervisor/huggingface"
    assert Path("/var/cache/vllm-supervisor") in unit.managed
    assert Path("/var/lib/vllm-supervisor/tiny") in unit.managed


def test_drop_ins_override_in_order_and_an_empty_list_resets(tmp_path: Path) -> None:
    assert installed("m", tmp_path) is None
    lib = tmp_path / "usr/lib/systemd/system"
    lib.mkdir(parents=True)
    (lib / "vllm-supervisor@.service").write_text(
        "[Unit]\nUser=nobody\n[Service]\nUser=vllm\nSupplementaryGroups=a b\nProtectHome=yes\n"
    )
    tmpl = tmp_path / "etc/systemd/system/vllm-supervisor@.service.d"
    tmpl.mkdir(parents=True)
    (tmpl / "10-groups.conf").write_text("[Service]\nSupplementaryGroups=\nSupplementaryGroups=c\n")
    inst = tmp_path / "etc/systemd/system/vllm-supervisor@m.service.d"
    inst.mkdir(parents=True)
    (inst / "20-home.conf").write_text(
        "[Service]\nProtectHome=read-only\nUser=other\n"
        'Environment="VSUP_CONFIG_DIR=/srv/my etc" A=1\n'
    )
    unit = installed("m", tmp_path)
    assert unit is not None and unit.path == lib / "vllm-supervisor@.service"
    assert unit.user == "other" and unit.supplementary == ("c",)
    assert not unit.hides_home  # read-only still shows /home
    assert unit.config_dir == Path("/srv/my etc")
    assert unit.environment["A"] == "1"
    other = installed("n", tmp_path)  # the instance drop-in is m's alone
    assert other is not None and other.user == "vllm" and other.hides_home


def test_environment_file_of_the_instance(tmp_path: Path) -> None:
    d = tmp_path / "etc/systemd/system"
    d.mkdir(parents=True)
    env = tmp_path / "m.env"
    env.write_text("# HF cache elsewhere\nHF_HOME='/srv/hf'\n\nX = y\n")
    (d / "vllm-supervisor@.service").write_text(
        f"[Service]\nEnvironment=HF_HOME=/a\nEnvironmentFile=-{tmp_path}/%i.env\n"
        "EnvironmentFile=-/nonexistent/%i.env\n"
    )
    unit = installed("m", tmp_path)
    assert unit is not None and unit.environment == {"HF_HOME": "/srv/hf", "X": "y"}
