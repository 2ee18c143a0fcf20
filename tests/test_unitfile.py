"""Reading User=/Group=/SupplementaryGroups=/ProtectHome= from the installed unit and its
drop-ins, in systemd's order."""

from __future__ import annotations

import shutil
from pathlib import Path

from vllm_supervisor.unitfile import installed

UNITS = Path(__file__).resolve().parent.parent / "units"


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


def test_drop_ins_override_in_order_and_an_empty_list_resets(tmp_path: Path) -> None:
    assert installed("m", tmp_path) is None
    lib = tmp_path / "usr/lib/systemd/system"
    lib.mkdir(parents=True)
    (lib / "vllm-supervisor@.service").write_text(
        "[Unit]\nUser=nobody\n[Service]\nUser=vllm\nSupplementaryGroups=a b\n"
        "ProtectHome=yes\n")
    tmpl = tmp_path / "etc/systemd/system/vllm-supervisor@.service.d"
    tmpl.mkdir(parents=True)
    (tmpl / "10-groups.conf").write_text("[Service]\nSupplementaryGroups=\n"
                                         "SupplementaryGroups=c\n")
    inst = tmp_path / "etc/systemd/system/vllm-supervisor@m.service.d"
    inst.mkdir(parents=True)
    (inst / "20-home.conf").write_text("[Service]\nProtectHome=read-only\nUser=other\n"
                                       "Environment=\"VSUP_CONFIG_DIR=/srv/my etc\" A=1\n")
    unit = installed("m", tmp_path)
    assert unit is not None and unit.path == lib / "vllm-supervisor@.service"
    assert unit.user == "other" and unit.supplementary == ("c",)
    assert not unit.hides_home  # read-only still shows /home
    assert unit.config_dir == Path("/srv/my etc")
    other = installed("n", tmp_path)  # the instance drop-in is m's alone
    assert other is not None and other.user == "vllm" and other.hides_home
